"""The network's input space: from an RGB picture to the array x of shape (3, H, W) that VGG19 sees, and back.

The network never sees a picture, only an array x in the *input space of its weights*. That space is
described by a small dict, the input convention (see handnst.weights):

    {"channel_order": "BGR" or "RGB", "scale": 255.0 or 1.0, "mean": [3 floats], "std": [3] or None}

and one pixel p (RGB, 0..255) becomes

    x = ((p / 255 * scale)[channel order] - mean) / (std or 1)          (preprocess)
    p = clip(round((x * (std or 1) + mean)[back to RGB] / scale * 255))  (deprocess)

The Keras/Caffe VGG19 (our default) wants BGR in 0..255 minus the ImageNet mean; torchvision wants
RGB in 0..1, minus a mean and divided by a standard deviation. Getting this wrong does not crash: it
silently gives washed-out, colour-shifted results. So everything goes through these two functions.
Arrays coming back from the GPU are copied to the host explicitly with handnst.backend.to_host.
"""

import math

import numpy as np
from PIL import Image

from handnst.backend import to_host
from handnst.errors import InputError
from handnst.image.io import load_image, resize_longer


# Input conventions used if handnst.weights is not importable (they must equal the ones there).
_LOCAL_CONVENTIONS = {
    "keras": {"channel_order": "BGR", "scale": 255.0,
              "mean": [103.939, 116.779, 123.68], "std": None},
    "torchvision": {"channel_order": "RGB", "scale": 1.0,
                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
}
_CONVENTION_ALIASES = {"caffe": "keras", "torch": "torchvision", "pytorch": "torchvision"}


# ------------------------------------------------------------------------------------ conventions

def _named_convention(name):
    """"keras" or "torchvision": the constant from handnst.weights if it is there, else our own copy."""
    try:
        from handnst import weights
    except ImportError:
        weights = None
    names = {"keras": ("KERAS_CONVENTION",), "torchvision": ("TORCH_CONVENTION", "TORCHVISION_CONVENTION")}
    for attribute in names[name]:
        if isinstance(getattr(weights, attribute, None), dict):
            return dict(getattr(weights, attribute))
    return dict(_LOCAL_CONVENTIONS[name])


def default_convention():
    """The input convention of the default weights (Keras/Caffe VGG19: BGR, 0..255, mean subtracted)."""
    return _named_convention("keras")


def resolve_convention(convention=None):
    """A validated convention dict from None (default), a dict, a name, or an object with `.convention`.

    Names: "keras"/"caffe" and "torchvision"/"torch". Anything malformed is an InputError, because a
    wrong convention would not crash later, it would just give wrong colours.
    """
    if convention is None:
        return default_convention()
    if isinstance(convention, str):
        name = _CONVENTION_ALIASES.get(convention.lower(), convention.lower())
        if name not in _LOCAL_CONVENTIONS:
            raise InputError(f"unknown input convention {convention!r}: use 'keras' (Caffe VGG19, BGR 0..255) "
                             "or 'torchvision' (RGB 0..1 with mean/std)")
        return _named_convention(name)
    if not isinstance(convention, dict) and isinstance(getattr(convention, "convention", None), dict):
        convention = convention.convention  # e.g. the network, which knows the space of its weights
    if not isinstance(convention, dict):
        raise InputError(f"an input convention must be a dict like {_LOCAL_CONVENTIONS['keras']}, "
                         f"not {type(convention).__name__}")
    try:
        order = str(convention["channel_order"]).upper()
        scale = float(convention["scale"])
        mean = [float(m) for m in convention["mean"]]
        std = convention.get("std")
        std = None if std is None else [float(s) for s in std]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"malformed input convention {convention!r} ({type(exc).__name__}: {exc}); it needs "
                         "channel_order, scale, mean (3 numbers) and std (3 numbers or None)") from None
    problems = []
    if order not in ("RGB", "BGR"):
        problems.append(f"channel_order must be 'RGB' or 'BGR', not {order!r}")
    if not (math.isfinite(scale) and scale > 0):
        problems.append(f"scale must be a positive number, not {scale}")
    if len(mean) != 3 or not all(math.isfinite(m) for m in mean):
        problems.append("mean must be 3 finite numbers")
    if std is not None and (len(std) != 3 or not all(math.isfinite(s) and s > 0 for s in std)):
        problems.append("std must be None or 3 positive numbers")
    if problems:
        raise InputError(f"malformed input convention {convention!r}: " + "; ".join(problems))
    return {"channel_order": order, "scale": scale, "mean": mean, "std": std}


def _channel_index(order):
    """Indices that pick the network's channel order out of an RGB array: RGB -> [0,1,2], BGR -> [2,1,0]."""
    return np.array([0, 1, 2] if order == "RGB" else [2, 1, 0])


def _affine(conv):
    """(scale, mean, std) as float64 arrays, so that x = (rgb01[order] * scale - mean) / std."""
    mean = np.asarray(conv["mean"], dtype=np.float64)
    std = np.ones(3) if conv["std"] is None else np.asarray(conv["std"], dtype=np.float64)
    return conv["scale"], mean, std


def pixel_bounds(convention=None):
    """(lo, hi): the network-space values of pixel 0 and pixel 255, per channel in the network's order.

    Shapes (3,) and (3,). They are the box bounds of L-BFGS-B: every x inside [lo, hi] is a valid
    image, so the optimizer never needs clipping afterwards. The values are rounded to float32 exactly
    as preprocess rounds its output (and returned as float64 for SciPy), so preprocess of a black or
    white image lies *exactly* on the bounds, never a rounding error outside them.
    """
    conv = resolve_convention(convention)
    scale, mean, std = _affine(conv)
    lo = (0.0 * scale - mean) / std
    hi = (1.0 * scale - mean) / std
    return lo.astype(np.float32).astype(np.float64), hi.astype(np.float32).astype(np.float64)


# ------------------------------------------------------------------------- the network's input space

def preprocess(path_or_image, size=None, convention=None):
    """Image (path, PIL image or array) -> float32 array (3, H, W) in the network's input space.

        x[c] = (rgb01[order[c]] * scale - mean[c]) / std[c]

    where rgb01 is the RGB image in 0..1 (after load_image and resize_longer(size)), and order, scale,
    mean and std come from the convention (default: the Keras/Caffe VGG19 weights).
    """
    conv = resolve_convention(convention)
    img = resize_longer(load_image(path_or_image), size)
    rgb01 = np.asarray(img, dtype=np.float64) / 255.0                     # (H, W, 3)
    scale, mean, std = _affine(conv)
    x = (rgb01[:, :, _channel_index(conv["channel_order"])] * scale - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)  # (3, H, W)


def deprocess(x, convention=None):
    """Network array (3, H, W) (or (1, 3, H, W)), NumPy or CuPy -> PIL RGB image; inverse of preprocess.

        rgb01[order[c]] = (x[c] * std[c] + mean[c]) / scale,  pixel = clip(round(255 * rgb01), 0, 255)

    Non-finite values (a diverged run) become 0 instead of undefined bytes.
    """
    conv = resolve_convention(convention)
    x = np.asarray(to_host(x), dtype=np.float64)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise InputError(f"deprocess expects an array of shape (3, H, W), not {x.shape}")
    scale, mean, std = _affine(conv)
    net_order = x.transpose(1, 2, 0) * std + mean                           # (H, W, 3), network order
    rgb = np.empty_like(net_order)
    rgb[:, :, _channel_index(conv["channel_order"])] = net_order            # back to RGB
    pixels = np.nan_to_num(rgb / scale * 255.0, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def _full_bounds(bounds, shape):
    """(lo, hi) float64 host arrays of x's shape (+-inf where unbounded), or (None, None).

    They are read-only broadcast views of what was given (one value per channel, usually), not
    arrays of their own: a run keeps them to the end, and two float64 copies of the image's size
    would be 12 MB at 512x512."""
    if bounds is None:
        return None, None
    try:
        lo_in, hi_in = bounds
    except (TypeError, ValueError):
        raise InputError("bounds must be a pair (lo, hi) of arrays broadcastable to the image shape") from None
    full = []
    for side, value, fill in (("lower", lo_in, -np.inf), ("upper", hi_in, np.inf)):
        if value is None:
            full.append(np.broadcast_to(np.float64(fill), shape))
            continue
        host = np.asarray(to_host(value) if hasattr(value, "shape") else value, dtype=np.float64)
        try:
            full.append(np.broadcast_to(host, shape))
        except ValueError:
            raise InputError(f"the {side} bound of shape {host.shape} cannot be broadcast to the image "
                             f"shape {tuple(shape)}; give one value per channel, shape (3, 1, 1)") from None
        if np.isnan(full[-1]).any():
            raise InputError(f"the {side} bound contains NaN; bounds must be numbers or +-inf")
    lo, hi = full
    if (lo > hi).any():
        raise InputError("a lower bound is above its upper bound; bounds must satisfy lo <= hi")
    return lo, hi
