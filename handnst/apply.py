"""Applying a trained transformation network: one forward pass per photograph.

    pictures = handnst.apply("handnst/data/models/swirls-w16.h5", ["photo.jpg"])   # [PIL image]
    net = load_model("model.h5")                     # checked: a model, complete, finite
    y = stylize_array(net, x)                        # (3, H, W) -> (3, H, W), any H and W >= 8

The network halves the picture twice and doubles it twice, so it takes sides that are multiples of
4. Any other size is reflection-padded on the right and at the bottom to the next multiple of 4
(what the network's own convolutions do at every border) and cropped back afterwards.

Everything a user can get wrong is checked before the first picture is written: the model (a VGG19
weights file, any other HDF5 or non-HDF5 file, a model with a missing, misshapen or non-finite
parameter: one InputError each), every photograph (decoded in full once), and the memory the
largest one needs at the chosen size.
"""

import os
import sys
import time
import types

import numpy as np
from PIL import Image

from handnst import image as _image
from handnst.backend import canonical_backend, get_xp, synchronize, to_device, to_host
from handnst.errors import InputError

MIN_SIDE = 8                     # smallest side the network can take (its 9x9 borders, after 2 halvings)
MEMORY_FRACTION = 0.85
HOST_BASELINE_BYTES = 150 * 2 ** 20
# Bytes of working memory per input pixel and per unit of width of the network during one forward
# pass: /usr/bin/time -v on `handnst apply` measured 23 (widths 16 and 32, 1024x768 and 2048x1536,
# above a baseline of about 150 MB); the estimate keeps a margin of 30%.
BYTES_PER_PIXEL_PER_WIDTH = 30


# ------------------------------------------------------------------------------------------ model

def load_model(path, *, backend="numpy", dtype="float32"):
    """A transformation network from a file written by `handnst train` (or net.save), checked.

    InputError (one line) for: a missing or unreadable path, a file that is not HDF5, a VGG19
    weights file, a training checkpoint, any other HDF5 file, a model with a missing parameter, one
    of the wrong shape, or one holding NaN or infinity (see networks.transform.read_model_file).
    """
    from handnst.networks.transform import load_transform_net
    shown = repr(os.fspath(path))
    if os.path.isfile(path) and not os.access(path, os.R_OK):
        raise InputError(f"the model {shown} is not readable (permission denied)")
    if os.path.isfile(path) and _format_of(path) == "handnst-train-checkpoint":
        raise InputError(f"{shown} is a training checkpoint, not a model; continue training from it with "
                         "`handnst train ... --resume`, or give the model file the run wrote")
    return load_transform_net(path, backend=backend, dtype=dtype)


def _format_of(path):
    """The `format` attribute of an HDF5 file, or None."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format")
    except OSError:
        return None
    return fmt.decode() if isinstance(fmt, bytes) else fmt


def shipped_model_path(name="swirls-w16.h5"):
    """The path of a model that ships with handnst (handnst/data/models)."""
    return os.path.join(_image.DATA_DIR, "models", name)


def model_convention(net):
    """The input space the network was trained in (its VGG19's), from the model file; Keras/Caffe by default."""
    from handnst.image import resolve_convention
    conv = getattr(net, "attrs", {}).get("input_convention")
    try:
        return resolve_convention(conv if isinstance(conv, dict) else None)
    except InputError:
        raise InputError("the model's input_convention attribute is malformed; the model file is damaged") from None


# ----------------------------------------------------------------------------------------- arrays

def padded_shape(H, W):
    """(H, W) rounded up to multiples of 4."""
    return H + (-H) % 4, W + (-W) % 4


def reflect_pad(x, H4, W4):
    """x (3, H, W) reflection-padded at the bottom and right to (3, H4, W4): pad < 4 < H, W."""
    xp = get_xp("cupy") if type(x).__module__.startswith("cupy") else np
    _, H, W = x.shape
    if (H4, W4) == (H, W):
        return x
    return xp.pad(x, ((0, 0), (0, H4 - H), (0, W4 - W)), mode="reflect")


def stylize_array(net, x):
    """The network's picture of one image x (3, H, W) in the VGG input space: pad, forward, crop."""
    _, H, W = x.shape
    if min(H, W) < MIN_SIDE:
        raise InputError(f"the photo is {W}x{H} pixels; the network needs at least {MIN_SIDE} pixels a side")
    H4, W4 = padded_shape(H, W)
    y = net.forward(reflect_pad(x, H4, W4)[None], cache=False)
    return y[0, :, :H, :W]


# ----------------------------------------------------------------------------------------- memory

def estimate_memory(width, H, W):
    """Bytes one forward pass of a width-`width` network on an H x W photo needs (with a margin)."""
    H4, W4 = padded_shape(H, W)
    return int(BYTES_PER_PIXEL_PER_WIDTH * width * H4 * W4 + HOST_BASELINE_BYTES)


def _largest_fitting(width, H, W, budget):
    longer = max(H, W)
    lo, hi = MIN_SIDE, longer

    def shape(s):
        return max(1, round(H * s / longer)), max(1, round(W * s / longer))

    if estimate_memory(width, *shape(lo)) > budget:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate_memory(width, *shape(mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def check_memory(width, H, W, backend="numpy", available=None, what="the photo"):
    from handnst.memory import available_memory
    free = available if available is not None else available_memory(backend)
    need = estimate_memory(width, H, W)
    if free is None or need <= MEMORY_FRACTION * free:
        return need
    fits = _largest_fitting(width, H, W, MEMORY_FRACTION * free)
    hint = f"use --size {fits} or smaller" if fits else "free some memory"
    raise InputError(f"{what} at {W}x{H} pixels needs about {need / 2 ** 20:.0f} MB but only "
                     f"{free / 2 ** 20:.0f} MB is available; {hint}")


# ------------------------------------------------------------------------------------------ apply

def _target_size(img, size):
    if size is None:
        return img.size
    ratio = size / max(img.size)
    return max(1, round(img.size[0] * ratio)), max(1, round(img.size[1] * ratio))


def apply(model, images, *, size=None, device="cpu", preserve_color=False, memory_check=True, on_picture=None,
          log=None, timings=None):
    """Stylize photographs with a trained network. Returns the pictures (PIL RGB), one per photo.

    model:   a model path (checked with load_model) or a TransformNet
    images:  one photo or a list (paths, PIL images, arrays)
    size:    longer side of each output in pixels; None keeps each photo's own size
    preserve_color: keep the photo's colours (the network's luminance with the photo's chrominance)
    on_picture(index, picture): called as each picture is ready (the command saves it there), so
             that a long list never holds every picture in memory; then the list returned is empty
    timings: a dict to fill with seconds per photo and the load time
    """
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIDE):
        raise InputError(f"--size must be a whole number of pixels >= {MIN_SIDE}, not {size!r}")
    backend = canonical_backend(device)
    get_xp(backend)
    single = not isinstance(images, (list, tuple))
    images = [images] if single else list(images)
    if not images:
        raise InputError("give at least one photo")
    t0 = time.perf_counter()
    net = load_model(model, backend=backend) if isinstance(model, (str, os.PathLike)) else model
    # Every photo is decoded once before anything runs: a bad one stops the command before the first
    # picture is written. Only the sizes are kept.
    sizes = []
    for obj in images:
        shown = repr(os.fspath(obj)) if isinstance(obj, (str, os.PathLike)) else f"<{type(obj).__name__}>"
        try:
            img = _image.load_image(obj)
        except InputError as exc:
            raise InputError(f"photo {shown}: {exc}") from None
        w, h = _target_size(img, size)
        if min(w, h) < MIN_SIDE:
            raise InputError(f"photo {shown} would be {w}x{h} pixels; the network needs at least {MIN_SIDE} "
                             "pixels a side (use a larger --size)")
        if memory_check:
            check_memory(net.width, h, w, backend, what=f"photo {shown}")
        sizes.append((w, h))
    if timings is not None:
        timings["load_seconds"] = time.perf_counter() - t0
        timings["seconds"] = []
    if log is not None:
        log(f"applying a width-{net.width} network to {len(images)} photo{'s' if len(images) > 1 else ''} "
            f"on the {'gpu' if backend == 'cupy' else 'cpu'}")
    convention = model_convention(net)
    pictures = []
    for index, (obj, (w, h)) in enumerate(zip(images, sizes)):
        photo = _image.load_image(obj)
        if photo.size != (w, h):
            photo = photo.resize((w, h), Image.Resampling.LANCZOS)
        t = time.perf_counter()
        x = to_device(_image.preprocess(photo, None, convention), backend, dtype=net.dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            y = stylize_array(net, x)
        synchronize(net.xp)
        picture = _image.deprocess(to_host(y), convention)
        if timings is not None:
            timings["seconds"].append(time.perf_counter() - t)
        if preserve_color:
            picture = _image.restore_chrominance(picture, photo)
        if on_picture is not None:
            on_picture(index, picture)
        else:
            pictures.append(picture)
    return pictures[0] if single and pictures else pictures


# `handnst.apply(...)` is this module's apply(). Importing a submodule makes it an attribute of the
# package (handnst.apply is then this module, not the function the lazy table in handnst/__init__.py
# hands out), so the module itself forwards calls to apply(): both spellings work in any import order.
class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return apply(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
