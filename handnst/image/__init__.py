"""Pictures: files in and out, the network's input space, colour, drawing, resizing, initial images.

| module         | what is in it                                                                   |
|----------------|---------------------------------------------------------------------------------|
| `io.py`        | load_image (any file people have, or one clear error), atomic save_image and     |
|                | save_gif, check_output_path, resize_longer, the bundled sample images           |
| `vgg_space.py` | input conventions, preprocess / deprocess to and from VGG's input space, pixel  |
|                | bounds                                                                          |
| `color.py`     | YIQ, luminance-only transfer and restoring the content's chrominance            |
| `color_match.py` | the style's colours mapped to the content's mean and covariance (chol/pca/sym) |
| `masks.py`     | region masks for spatial control: greyscale or colour-keyed files, resized      |
| `draw.py`      | the labelled grid of the paper's Figure 3, the procedural style picture         |
| `resize.py`    | bilinear resizing of arrays                                                     |
| `initial.py`   | the picture an optimization starts from                                         |

Everything is re-exported here: `handnst.image.preprocess`, `handnst.image.sample_path`, ...
"""

from handnst.image.io import (  # noqa: F401
    load_image,
    resize_longer,
    check_output_path,
    save_image,
    save_gif,
    sample_names,
    sample_path,
    MAX_PIXELS,
    SAMPLES,
    DATA_DIR,
)
from handnst.image.vgg_space import (  # noqa: F401
    default_convention,
    resolve_convention,
    pixel_bounds,
    preprocess,
    deprocess,
)
from handnst.image.color import (  # noqa: F401
    rgb_to_yiq,
    yiq_to_rgb,
    luminance_image,
    match_luminance,
    restore_chrominance,
    RGB_TO_YIQ,
    YIQ_TO_RGB,
)
from handnst.image.color_match import (  # noqa: F401
    match_color,
    match_color_image,
    color_transform,
    mean_and_covariance,
)
from handnst.image.masks import (  # noqa: F401
    load_mask,
    resize_mask,
    mask_from_image,
)
from handnst.image.draw import (  # noqa: F401
    make_grid,
    make_style_image,
)
from handnst.image.resize import (  # noqa: F401
    resize_bilinear,
)
from handnst.image.initial import (  # noqa: F401
    initial_image,
    INIT_KINDS,
)
