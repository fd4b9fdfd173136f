"""The picture an optimization starts from: the content, white noise, the content plus noise, the
style, or a file."""

import numpy as np

from handnst.backend import array_module, to_host
from handnst.errors import InputError
from handnst.image.resize import resize_bilinear
from handnst.image.vgg_space import _full_bounds

INIT_KINDS = ("content", "noise", "content+noise", "style", "file")


def _channel_box(content_host, bounds):
    """Per-channel (lo, hi) of shape (C, 1, 1): the bounds where finite, else the content's own range."""
    c = content_host.shape[0]
    cmin = content_host.reshape(c, -1).min(axis=1).reshape(c, 1, 1)
    cmax = content_host.reshape(c, -1).max(axis=1).reshape(c, 1, 1)
    if bounds is None:
        return cmin, cmax
    lo, hi = _full_bounds(bounds, content_host.shape)
    # One value per channel (bounds are per channel in practice; take the widest if they are not).
    lo = lo.reshape(c, -1).min(axis=1).reshape(c, 1, 1)
    hi = hi.reshape(c, -1).max(axis=1).reshape(c, 1, 1)
    return np.where(np.isfinite(lo), lo, cmin), np.where(np.isfinite(hi), hi, cmax)


def initial_image(kind, content, style, *, seed=0, bounds=None, file_array=None):
    """The image the optimization starts from, on content's backend with content's dtype and shape.

    kind:
      "content"        a copy of the content image (the default; fastest to a good picture)
      "noise"          white noise as in the paper: every value drawn independently and uniformly over
                       the pixel box, per channel [lo_c, hi_c] from `bounds` (or the content's own
                       range where a bound is missing or infinite)
      "content+noise"  content plus Gaussian noise of standard deviation 0.1 x the channel's box width,
                       clipped to the box
      "style"          the (first) style image resized bilinearly to the content's H x W (see
                       `resize_bilinear`)
      "file", or any other string when `file_array` is given: `file_array`, an image already
                       preprocessed to the content's shape (the CLI's --init FILE)
    Random numbers come from numpy.random.default_rng(seed) on the host and are then copied to the
    backend, so the CPU and the GPU start from the same image.
    """
    xp = array_module(content)
    dtype = np.dtype(content.dtype)
    if kind == "content":
        return content.copy()
    if kind == "style":
        style_host = to_host(style)
        if style_host.ndim != 3 or style_host.shape[0] != content.shape[0]:
            raise InputError(f"the style image has shape {style_host.shape}; expected "
                             f"({content.shape[0]}, H, W) like the content")
        resized = resize_bilinear(style_host, content.shape[1], content.shape[2])
        return xp.asarray(resized.astype(dtype))
    if kind in ("noise", "content+noise"):
        content_host = to_host(content).astype(np.float64)
        lo, hi = _channel_box(content_host, bounds)
        rng = np.random.default_rng(seed)
        if kind == "noise":
            image = lo + (hi - lo) * rng.random(content_host.shape)
        else:
            noise = rng.standard_normal(content_host.shape) * (0.1 * (hi - lo))
            image = np.clip(content_host + noise, lo, hi)
        return xp.asarray(image.astype(dtype))
    if file_array is not None and (kind == "file" or kind not in INIT_KINDS):
        if tuple(file_array.shape) != tuple(content.shape):
            raise InputError(f"the init image has shape {tuple(file_array.shape)} but the content has "
                             f"{tuple(content.shape)}; resize it to the content's size")
        return xp.asarray(to_host(file_array).astype(dtype))
    if kind == "file":
        raise InputError("init 'file' needs an image: give the path of an image file with --init PATH")
    raise InputError(f"unknown init {kind!r}: use content, noise, content+noise, style, or the path of an "
                     "image file")
