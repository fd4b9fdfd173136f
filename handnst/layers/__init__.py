"""The layers of the networks, each as a forward pass and a hand-written backward pass.

The textbook layers of VGG19 work on one image `x` of shape (C, H, W), in the style of CS231n's `layers.py`:

    out, cache = conv_forward(x, w, b, stride=1, pad=1)
    dx = conv_backward(dout, cache)              # what stylization needs
    dw, db = conv_weight_backward(dout, cache)   # what training needs (derived in the lessons)

The layers of the feed-forward transformation network (`handnst.networks.transform`) work on a
batch (N, C, H, W) in the same style: `out, cache = *_forward(x, ...)`, `*_backward(dout, cache)`.

Every textbook layer comes twice: `*_naive` with explicit loops, to read next to the math, and a
vectorized version to run. The tests compare the two with each other and with finite differences.

| module       | what is in it                                                                     |
|--------------|-----------------------------------------------------------------------------------|
| `conv.py`    | convolution: naive loops, im2col / col2im, input and weight gradients             |
| `relu.py`    | ReLU                                                                              |
| `pooling.py` | 2x2 average and max pooling                                                       |
| `padded.py`  | the layout VGG19 runs in: padded, channels last, flattened; 3x3 convolution as    |
|              | nine matrix products on row slices, ReLU masks, pooling and border fills there    |
| `winograd.py`| the same 3x3 convolution with Winograd F(2, 3) along the rows                     |
| `reflection_pad.py` | reflection padding of a batch (N, C, H, W) and its adjoint                 |
| `conv_batch.py` | convolution of a batch, any kernel and stride, input/weight/bias gradients     |
|              | (im2col on the batch: one matrix product per pass and chunk)                      |
| `instance_norm.py` | instance normalization with its full backward pass (derived in the docstring)|
|              | and, for applying a trained net, in place in the padded layout                    |
| `upsample.py`| nearest-neighbour 2x upsampling and its adjoint (sum over 2x2 blocks)             |
| `winograd2d.py`| ... and with Winograd F(2x2, 3x3), along the rows and the columns               |
| `winograd4x4.py`| ... and with Winograd F(4x4, 3x3): bigger tiles, transforms as matrix products |
| `upsample_conv.py`| 2x upsampling + reflection pad + 3x3 convolution as four 2x2 convolutions of  |
|              | the small map, one per output phase (16 products per 2x2 block instead of 36);    |
|              | for applying, the same in the padded layout                                       |

Everything is re-exported here, so `from handnst import layers as L; L.conv_forward(...)` works.
"""

from handnst.layers.conv import (  # noqa: F401
    conv_output_size,
    conv_forward_naive,
    conv_backward_naive,
    conv_weight_backward_naive,
    im2col,
    col2im,
    conv_forward,
    conv_backward,
    conv_weight_backward,
)
from handnst.layers.relu import (  # noqa: F401
    relu_forward_naive,
    relu_backward_naive,
    relu_forward,
    relu_backward,
)
from handnst.layers.pooling import (  # noqa: F401
    avg_pool_forward_naive,
    avg_pool_backward_naive,
    avg_pool_forward,
    avg_pool_backward,
    max_pool_forward_naive,
    max_pool_backward_naive,
    max_pool_forward,
    max_pool_backward,
)
from handnst.layers.padded import (  # noqa: F401
    padded_length,
    padded_grid,
    to_padded,
    from_padded,
    from_padded_into,
    conv_taps,
    conv3x3_forward,
    conv3x3_backward,
    zero_border,
    fill_border,
    fill_grid_border,
    fill_grid_border_backward,
    interior,
    relu_mask_backward,
    pool_forward_padded,
    pool_backward_padded,
    pool_relu_backward_from_mask,
    pool_relu_backward_in_place,
    conv_in_place_by_bands,
)
from handnst.layers.winograd import (  # noqa: F401
    winograd_f23,
    winograd_taps,
    winograd_scratch_shapes,
    winograd_taps_transposed,
    conv3x3_winograd_forward,
    conv3x3_winograd_backward,
    conv3x3_winograd_weight_gradient,
    WINOGRAD_BT,
    WINOGRAD_G,
    WINOGRAD_AT,
)
from handnst.layers.reflection_pad import (  # noqa: F401
    reflect_index,
    reflection_pad_forward_naive,
    reflection_pad_backward_naive,
    reflection_pad_forward,
    reflection_pad_backward,
    reflect_border,
)
from handnst.layers.conv_batch import (  # noqa: F401
    conv_batch_output_size,
    conv_batch_chunks,
    conv_batch_method,
    conv_batch_forward_naive,
    conv_batch_backward_naive,
    im2col_batch,
    col2im_batch,
    conv_batch_forward,
    conv_batch_backward,
)
from handnst.layers.instance_norm import (  # noqa: F401
    instance_norm_forward_naive,
    instance_norm_backward_naive,
    instance_norm_forward,
    instance_norm_backward,
    instance_norm_padded_forward,
)
from handnst.layers.upsample import (  # noqa: F401
    upsample2x_forward_naive,
    upsample2x_backward_naive,
    upsample2x_forward,
    upsample2x_backward,
)
from handnst.layers.winograd2d import (  # noqa: F401
    winograd2d_taps,
    winograd2d_scratch_shapes,
    conv3x3_winograd2d_forward,
    conv3x3_winograd2d_backward,
)
from handnst.layers.winograd4x4 import (  # noqa: F401
    WINOGRAD4_BT,
    WINOGRAD4_G,
    WINOGRAD4_AT,
    winograd_f43,
    winograd4x4_taps,
    winograd4x4_scratch_shapes,
    conv3x3_winograd4x4_forward,
    conv3x3_winograd4x4_backward,
)
from handnst.layers.upsample_conv import (  # noqa: F401
    PHASE_SUMS,
    upsample_conv_forward_naive,
    upsample_conv_backward_naive,
    edge_pad_forward,
    edge_pad_backward,
    phase_filters,
    upsample_conv_forward,
    upsample_conv_backward,
    phase_taps,
    upsample_conv_padded_forward,
    upsample_conv_stacked_forward,
    upsample_conv_stacked_backward,
)
from handnst.layers.stacked import (  # noqa: F401
    stacked_size,
    image_grids,
    image_pixels,
    image_rows,
    empty_stacked,
    to_stacked,
    from_stacked,
    zero_rings,
    fill_rings,
    fill_rings_backward,
    conv3x3_weight_gradient,
    instance_norm_stacked_forward,
    instance_norm_stacked_backward,
)
