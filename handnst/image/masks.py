"""Region masks for spatial control, from files: greyscale weights or one colour of a label map.

    load_mask("sky.png", (512, 384))            # grey levels 0..255 -> weights 0..1, resized
    load_mask("labels.png#3366ff", (512, 384))  # 1 where labels.png is that colour, else 0

A greyscale (or any RGB) file gives each pixel the weight luminance / 255, so black is outside the
region, white inside and greys blend two regions softly. A `#RRGGBB` after the path picks one
colour of a colour-keyed label map, the way segmentation tools save them: pixels within
COLOR_TOLERANCE of that colour (in every channel, to survive JPEG) get weight 1, others 0.

A mask of another size than its picture is resized to it: Pillow's bilinear filter on the weights
(box-filtered when shrinking), which keeps soft borders soft and hard ones at most a pixel wide.
"""

import re

import numpy as np
from PIL import Image

from handnst.errors import InputError
from handnst.image.io import load_image

COLOR_TOLERANCE = 24       # of 255, per channel: a JPEG-saved label map drifts by about 10
_KEY = re.compile(r"^(?P<path>.+)#(?P<hex>[0-9a-fA-F]{6})$")


def split_color_key(spec):
    """'labels.png#3366ff' -> ('labels.png', (0x33, 0x66, 0xff)); a plain path -> (path, None)."""
    spec = str(spec)
    m = _KEY.match(spec)
    if m is None:
        return spec, None
    h = m.group("hex")
    return m.group("path"), tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))


def mask_from_image(img, color=None):
    """PIL image (or anything load_image takes) -> (H, W) float64 weights in 0..1."""
    rgb = np.asarray(load_image(img), dtype=np.float64)
    if color is None:
        return (rgb @ np.array([0.299, 0.587, 0.114])) / 255.0
    return (np.abs(rgb - np.array(color, dtype=np.float64)).max(axis=2) <= COLOR_TOLERANCE).astype(np.float64)


def resize_mask(mask, size_wh):
    """(H, W) weights -> (height, width) = size_wh[::-1], bilinear (a box filter first when shrinking)."""
    mask = np.asarray(mask, dtype=np.float64)
    if mask.shape == (size_wh[1], size_wh[0]):
        return mask
    img = Image.fromarray(mask.astype(np.float32), mode="F")
    return np.clip(np.asarray(img.resize(tuple(size_wh), Image.Resampling.BILINEAR, reducing_gap=2.0),
                              dtype=np.float64), 0.0, 1.0)


def load_mask(spec, size_wh=None, what="mask"):
    """A mask file ('path' or 'path#RRGGBB') as (H, W) weights, resized to size_wh = (width, height)."""
    path, color = split_color_key(spec)
    try:
        mask = mask_from_image(path, color)
    except InputError as exc:
        raise InputError(f"{what}: {exc}") from None
    if color is not None and not mask.any():
        raise InputError(f"{what}: no pixel of {path} has the colour #{''.join(f'{c:02x}' for c in color)}")
    return mask if size_wh is None else resize_mask(mask, size_wh)


__all__ = ["COLOR_TOLERANCE", "split_color_key", "mask_from_image", "resize_mask", "load_mask"]
