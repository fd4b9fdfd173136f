"""Images in and out: from any file a person has to the network's input space, and back.

The network never sees a picture, only an array x of shape (3, H, W) in the *input space of its
weights*. That space is described by a small dict, the input convention (see handnst.weights):

    {"channel_order": "BGR" or "RGB", "scale": 255.0 or 1.0, "mean": [3 floats], "std": [3] or None}

and one pixel p (RGB, 0..255) becomes

    x = ((p / 255 * scale)[channel order] - mean) / (std or 1)          (preprocess)
    p = clip(round((x * (std or 1) + mean)[back to RGB] / scale * 255))  (deprocess)

The Keras/Caffe VGG19 (our default) wants BGR in 0..255 minus the ImageNet mean; torchvision wants
RGB in 0..1, minus a mean and divided by a standard deviation. Getting this wrong does not crash: it
silently gives washed-out, colour-shifted results. So everything goes through these two functions.

Everything here runs on the host (Pillow + NumPy). Arrays coming back from the GPU are copied to the
host explicitly with handnst.backend.to_host.

What else lives here, because it is all about pixels:

* load_image: any file people actually have (phone photos with EXIF rotation, palette GIFs,
  transparent PNGs, CMYK JPEGs from print workflows, 16-bit scans) becomes one upright RGB image, and
  everything that is *not* a usable image (missing, empty, truncated, a decompression bomb) becomes a
  one-sentence InputError instead of a traceback.
* save_image / save_gif: atomic writes (temporary file in the same directory, then os.replace), so a
  crash or Ctrl-C never leaves half an image behind and never destroys the previous file.
* colour preservation (Gatys, Bethge, Hertzmann & Shechtman 2016, "Preserving colour in neural
  artistic style transfer"): run the transfer on luminance only and put the content's chrominance back.
* make_grid for the paper's Figure 3, make_style_image for the bundled style picture, and the paths
  of the bundled sample images.
"""

import functools
import io
import math
import os
import random
import stat
import tempfile
import warnings

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from handnst.backend import to_host
from handnst.errors import InputError, RunError
from handnst.fileio import atomic_path

# A guard of our own against decompression bombs: a tiny file can declare an enormous image
# (e.g. 50000 x 50000 pixels of one colour compress to a few kilobytes, but decode to 7.5 GB).
# Style transfer works on images of a few hundred pixels a side, so anything above 100 megapixels is
# refused from the header alone, before a single pixel is decoded. Pillow has its own guard
# (Image.MAX_IMAGE_PIXELS), which we leave alone for the rest of the program and catch as well.
MAX_PIXELS = 100_000_000

# Input conventions used if handnst.weights is not importable (they must equal the ones there).
_LOCAL_CONVENTIONS = {
    "keras": {"channel_order": "BGR", "scale": 255.0,
              "mean": [103.939, 116.779, 123.68], "std": None},
    "torchvision": {"channel_order": "RGB", "scale": 1.0,
                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
}
_CONVENTION_ALIASES = {"caffe": "keras", "torch": "torchvision", "pytorch": "torchvision"}

# The images that ship in handnst/data (see handnst/data/README.md for where they come from).
SAMPLES = {
    "content": "chelsea.jpg",
    "chelsea": "chelsea.jpg",
    "coffee": "coffee.jpg",
    "style": "swirls.jpg",
    "swirls": "swirls.jpg",
}
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


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


# ------------------------------------------------------------------------------------------- loading

def _describe(path):
    return repr(os.fspath(path))


def _check_readable_file(path):
    """Refuse, with a clear sentence, every path that cannot be an image file (before Pillow sees it)."""
    shown = _describe(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"image {shown} does not exist; check the path") from None
    except PermissionError:
        raise InputError(f"image {shown} cannot be accessed (permission denied); check its permissions") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"image {shown} cannot be accessed ({exc}); check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"image {shown} is a directory, not an image file; give the path of a file inside it")
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or a device would make the reader block or read forever.
        raise InputError(f"image {shown} is not a regular file; give the path of an image file")
    if st.st_size == 0:
        raise InputError(f"image {shown} is an empty file (0 bytes); it may be an interrupted download or copy")
    if not os.access(path, os.R_OK):
        raise InputError(f"image {shown} is not readable (permission denied); check its permissions")


def _refuse_if_too_large(width, height, what):
    if width * height > MAX_PIXELS:
        raise InputError(
            f"{what} declares {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), more than the "
            f"{MAX_PIXELS / 1e6:.0f}-megapixel limit, which protects against decompression bombs; "
            "shrink it with an image editor first")


def _to_rgb(img):
    """Any Pillow mode -> 8-bit RGB, compositing transparency onto white.

    * alpha (RGBA, LA, PA, P with a transparent colour, premultiplied La/RGBa): composited onto white,
      because a transparent background is meant to show what is behind it, and paper is white
      (converting straight to RGB would expose whatever colour the hidden pixels happen to store,
      often black);
    * 16-bit integer modes (I;16, I;16B, I;16L): 0..65535 is scaled to 0..255 (divide by 257), not
      truncated, which would saturate almost every pixel;
    * 32-bit integer "I" is read as 16-bit data (what 16-bit PNG and TIFF grayscale decode to);
    * float "F": 0..1 if all values lie there, otherwise 0..255;
    * everything else (1, L, P, CMYK, YCbCr, ...): Pillow's own conversion.
    """
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(img, dtype=np.float64)
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        if mode == "F":
            full_scale = 1.0 if values.size and values.min() >= 0.0 and values.max() <= 1.0 else 255.0
        else:
            full_scale = 65535.0
        gray = np.clip(np.rint(values / full_scale * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode in ("P", "L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return img.copy()
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise InputError(f"images in Pillow mode {mode!r} cannot be converted to RGB ({exc}); "
                         "save it as an ordinary RGB PNG or JPEG first") from None


def _upright(img):
    """Apply the EXIF orientation tag (phone photos are stored sideways plus a tag saying how to turn them).

    A broken EXIF block is not a reason to refuse the picture: then the pixels are used as stored.
    """
    try:
        turned = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF data: Pillow raises several different types here
        return img
    return img if turned is None else turned


def _from_array(array):
    """A PIL image from a host array: uint8 (H, W) / (H, W, 3) / (H, W, 4), or floats in 0..1."""
    array = to_host(array)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise InputError(f"an image array must have shape (H, W), (H, W, 3) or (H, W, 4), not {array.shape}; "
                         "for network arrays of shape (3, H, W) use deprocess")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise InputError(f"an image array must be uint8 (0..255) or float (0..1), not {array.dtype}")
        array = np.clip(np.rint(np.nan_to_num(array.astype(np.float64)) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def load_image(path_or_image):
    """Open any image a person is likely to have and return it upright, in RGB, fully decoded.

    Accepts a path (str or os.PathLike), a PIL image, or a host/device array (see _from_array).
    The first frame of an animation is used. Every problem with the file becomes an InputError
    whose message says what was wrong.
    """
    if isinstance(path_or_image, Image.Image):
        img = path_or_image
        _refuse_if_too_large(img.width, img.height, "the image")
        try:
            img.load()  # an image from Image.open is still lazy: decode it here, where errors are clear
        except Exception as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"the image is truncated or corrupted ({detail}); re-download or re-export it") from None
        return _to_rgb(_upright(img))
    if not isinstance(path_or_image, (str, bytes, os.PathLike)):
        if hasattr(path_or_image, "shape") and hasattr(path_or_image, "dtype"):
            return _to_rgb(_from_array(path_or_image))
        raise InputError(f"expected an image path or a PIL image, not {type(path_or_image).__name__}")
    path = path_or_image
    _check_readable_file(path)
    shown = _describe(path)
    with warnings.catch_warnings():
        # Pillow warns (and above twice its limit, raises) about huge images; our own guard decides.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            opened = Image.open(path)  # reads the header only: nothing is decoded yet
        except Image.DecompressionBombError as exc:
            raise InputError(f"image {shown} is too large to decode safely ({exc}); "
                             "it may be a decompression bomb, or shrink it first") from None
        except Image.UnidentifiedImageError:
            raise InputError(f"{shown} is not an image file Pillow can read (or it is badly corrupted); "
                             "use PNG, JPEG, WebP, GIF, BMP or TIFF") from None
        except PermissionError:
            raise InputError(f"image {shown} is not readable (permission denied); check its permissions") from None
        except Exception as exc:  # a header so broken that the format plugin itself fails
            raise InputError(f"image {shown} could not be read ({type(exc).__name__}: {exc}); "
                             "the file is probably corrupted") from None
        with opened:
            _refuse_if_too_large(opened.width, opened.height, f"image {shown}")
            try:
                opened.seek(0)  # the first frame of an animated GIF/PNG/WebP
                # Decode everything now: a truncated or corrupted file fails *here*, with a clear
                # message, instead of minutes later or (worse) silently with grey bands.
                opened.load()
            except Exception as exc:  # OSError, SyntaxError, zlib errors, ...: all mean "broken file"
                detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise InputError(f"image {shown} is truncated or corrupted ({detail}); "
                                 "re-download or re-export it") from None
            return _to_rgb(_upright(opened))


def resize_longer(img, size):
    """Resize so that the longer side is `size` pixels (LANCZOS), keeping the aspect ratio.

    size None leaves the image unchanged. The shorter side is rounded and never drops below 1 pixel.
    """
    if size is None:
        return img
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise InputError(f"image size must be a whole number of pixels, not {size!r}")
    size = int(size)
    if size <= 0:
        raise InputError(f"image size must be a positive number of pixels, not {size}")
    width, height = img.size
    if max(width, height) == size:
        return img
    ratio = size / max(width, height)
    new_size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    _refuse_if_too_large(new_size[0], new_size[1], f"resizing to --size {size}")
    return img.resize(new_size, Image.Resampling.LANCZOS)


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


# ------------------------------------------------------------------------------------------- saving

@functools.lru_cache(maxsize=1)
def _writable_extensions():
    """{".png": "PNG", ...}: every extension whose Pillow format can really write an RGB image here.

    Image.SAVE lists formats with a save function, but some only save 1-bit images (XBM, MSP) and some
    are stubs that need an external handler (HDF5, GRIB, BUFR), so each is tried on a 2x2 image.
    """
    tiny = Image.new("RGB", (2, 2), (200, 100, 50))
    writable = {}
    for ext, fmt in Image.registered_extensions().items():
        if fmt not in Image.SAVE:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. deprecation notices of old formats
                tiny.save(io.BytesIO(), format=fmt)
        except Exception:
            continue
        writable[ext.lower()] = fmt
    return writable


def _format_for(path):
    ext = os.path.splitext(os.fspath(path))[1].lower()
    writable = _writable_extensions()
    if ext in writable:
        return writable[ext]
    common = [e for e in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif") if e in writable]
    others = sorted(set(writable) - set(common))
    shown = os.fspath(path)
    what = "has no extension" if not ext else f"has extension {ext!r}, which Pillow cannot write here"
    raise InputError(f"output {shown!r} {what}; use one of {', '.join(common)} "
                     f"(also possible: {', '.join(others)})")


def check_output_path(path):
    """Validate an output path before a long run; return its Pillow format name (e.g. "PNG").

    Checks that the path is not a directory, that its parent is an existing, writable directory (by
    really creating and removing a temporary file there, which also catches read-only file systems
    and root-owned folders), and that the extension is one Pillow can write.
    """
    if path is None or not os.fspath(path):
        raise InputError("the output path is empty; give a file name such as out.png")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise InputError(f"output {path!r} is a directory; give a file name such as {os.path.join(path, 'out.png')!r}")
    fmt = _format_for(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(parent):
        raise InputError(f"the folder of output {path!r} does not exist ({parent}); create it first")
    if not os.path.isdir(parent):
        raise InputError(f"the parent of output {path!r} is not a directory ({parent}); choose another path")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".handnst-probe-")
    except OSError as exc:
        raise InputError(f"cannot write output {path!r}: the folder {parent} is not writable "
                         f"({exc.strerror or exc}); choose another folder") from None
    os.close(fd)
    os.unlink(probe)
    return fmt


def _atomic_write(path, write):
    """Call write(file_object) on a temporary file next to `path`, then rename it onto `path`
    (see handnst.fileio.atomic_path). A failure to write becomes one clear RunError."""
    path = os.fspath(path)
    try:
        with atomic_path(path, suffix=".tmp") as tmp:
            with open(tmp, "wb") as f:
                write(f)
    except (OSError, ValueError) as exc:
        raise RunError(f"could not write {path!r} ({type(exc).__name__}: {exc}); "
                       "nothing was written there") from exc
    return path


def save_image(img, path):
    """Write an image atomically; the format comes from the extension. Returns the path.

    JPEG gets RGB (it has no alpha) and quality 95; GIF is quantized to a palette by Pillow.
    """
    fmt = check_output_path(path)
    img = load_image(img) if not isinstance(img, Image.Image) else img
    options = {}
    if fmt == "JPEG":
        img = img.convert("RGB") if img.mode != "RGB" else img
        options = {"quality": 95}
    elif fmt == "WEBP":
        options = {"quality": 95}
    return _atomic_write(path, lambda f: img.save(f, format=fmt, **options))


def save_gif(frames, path, duration_ms=100):
    """Write an animated GIF of `frames` (PIL images or arrays) atomically, looping forever.

    Frames of different sizes are resized to the size of the first one.
    """
    if os.path.splitext(os.fspath(path))[1].lower() != ".gif":
        raise InputError(f"an animation must be saved with the .gif extension, not {os.fspath(path)!r}")
    if isinstance(duration_ms, bool) or not isinstance(duration_ms, (int, float, np.number)) \
            or not (math.isfinite(duration_ms) and duration_ms > 0):
        raise InputError(f"the frame duration must be a positive number of milliseconds, not {duration_ms!r}")
    frames = [f if isinstance(f, Image.Image) and f.mode == "RGB" else load_image(f) for f in frames]
    if not frames:
        raise InputError("an animated GIF needs at least one frame")
    check_output_path(path)
    first = frames[0]
    rest = [f if f.size == first.size else f.resize(first.size, Image.Resampling.LANCZOS) for f in frames[1:]]
    return _atomic_write(path, lambda f: first.save(
        f, format="GIF", save_all=True, append_images=rest, duration=int(round(duration_ms)), loop=0))


# -------------------------------------------------------------------------------- colour preservation
#
# Gatys et al. (2016) keep the content's colours by transferring style on the *luminance* channel only.
# In the YIQ colour space (NTSC) Y is the luminance and I, Q carry the colour. The recipe:
#   1. content luminance:   luminance_image(content)
#   2. style luminance, matched to the content's statistics:  L_s' = sigma_c / sigma_s (L_s - mu_s) + mu_c
#      (match_luminance), so that a dark painting does not darken the photograph;
#   3. stylize 1. with 2. (a grey image replicated into 3 channels, as the network wants RGB);
#   4. combine the result's Y with the content's I and Q (restore_chrominance).

# Rows: Y, I, Q as combinations of R, G, B (the FCC NTSC definition).
RGB_TO_YIQ = np.array([
    [0.299, 0.587, 0.114],
    [0.595716, -0.274453, -0.321263],
    [0.211456, -0.522591, 0.311135],
])
# The exact inverse, not the rounded textbook matrix, so that the round trip is exact to float precision.
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)


def rgb_to_yiq(arr):
    """Float array (..., 3) of RGB in 0..1 -> (..., 3) of Y (0..1), I (about +-0.6), Q (about +-0.52)."""
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape[-1:] != (3,):
        raise InputError(f"rgb_to_yiq expects an array whose last axis has 3 channels, not shape {arr.shape}")
    return arr @ RGB_TO_YIQ.T


def yiq_to_rgb(arr):
    """Inverse of rgb_to_yiq: float (..., 3) YIQ -> RGB (not clipped; values may leave 0..1)."""
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape[-1:] != (3,):
        raise InputError(f"yiq_to_rgb expects an array whose last axis has 3 channels, not shape {arr.shape}")
    return arr @ YIQ_TO_RGB.T


def _rgb01(img):
    return np.asarray(load_image(img), dtype=np.float64) / 255.0


def _to_image01(rgb01):
    return Image.fromarray(np.clip(np.rint(rgb01 * 255.0), 0, 255).astype(np.uint8), "RGB")


def _gray_image01(y):
    return _to_image01(np.repeat(y[:, :, None], 3, axis=2))


def luminance_image(img):
    """The luminance Y of an image, replicated into 3 channels (a grey RGB image the network accepts)."""
    return _gray_image01(rgb_to_yiq(_rgb01(img))[:, :, 0])


def match_luminance(style_img, content_img):
    """The style's luminance, shifted and scaled to the content's luminance mean and standard deviation.

        L_s' = sigma_c / sigma_s * (L_s - mu_s) + mu_c      (Gatys et al. 2016, section 2.1)

    Returned as a grey RGB image (Y in all 3 channels). A flat style (sigma_s = 0) is only shifted.
    """
    y_style = rgb_to_yiq(_rgb01(style_img))[:, :, 0]
    y_content = rgb_to_yiq(_rgb01(content_img))[:, :, 0]
    mu_s, sigma_s = y_style.mean(), y_style.std()
    mu_c, sigma_c = y_content.mean(), y_content.std()
    gain = sigma_c / sigma_s if sigma_s > 0 else 0.0
    return _gray_image01(gain * (y_style - mu_s) + mu_c)


def restore_chrominance(stylized_img, content_img):
    """The stylized image's luminance Y with the content's chrominance I, Q: the content keeps its colours.

    The content is resized (LANCZOS) to the stylized image's size if they differ.
    """
    stylized = load_image(stylized_img)
    content = load_image(content_img)
    if content.size != stylized.size:
        content = content.resize(stylized.size, Image.Resampling.LANCZOS)
    yiq = rgb_to_yiq(_rgb01(content))
    yiq[:, :, 0] = rgb_to_yiq(_rgb01(stylized))[:, :, 0]
    return _to_image01(yiq_to_rgb(yiq))


# ------------------------------------------------------------------------------------------ the grid

def make_grid(images, row_labels, col_labels, title=None, padding=8, background=(255, 255, 255)):
    """Compose images into one labelled grid (the layout of the paper's Figure 3).

    `images` is a list of rows (each a list of images, paths or arrays), or a flat list of
    len(row_labels) * len(col_labels) images in row-major order. Row labels go on the left, column
    labels on top, the optional title above everything; labels may contain newlines. Cells of
    different sizes are centred in a cell as large as the largest image.
    """
    row_labels = [str(r) for r in row_labels]
    col_labels = [str(c) for c in col_labels]
    n_rows, n_cols = len(row_labels), len(col_labels)
    images = list(images)
    if images and not isinstance(images[0], (list, tuple)):
        if len(images) != n_rows * n_cols:
            raise InputError(f"make_grid got {len(images)} images for {n_rows} rows x {n_cols} columns")
        images = [images[r * n_cols:(r + 1) * n_cols] for r in range(n_rows)]
    if len(images) != n_rows or any(len(row) != n_cols for row in images):
        raise InputError(f"make_grid needs {n_rows} rows of {n_cols} images, one per row and column label")
    cells = [[load_image(img) for img in row] for row in images]
    cell_w = max((c.width for row in cells for c in row), default=1)
    cell_h = max((c.height for row in cells for c in row), default=1)

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text):
        left, top, right, bottom = measure.multiline_textbbox((0, 0), text, font=font)
        return right - left, bottom - top, left, top

    label_w = max((text_size(t)[0] for t in row_labels), default=0)
    header_h = max((text_size(t)[1] for t in col_labels), default=0)
    title_h = text_size(title)[1] + padding if title else 0
    left0 = padding + label_w + (padding if label_w else 0)
    top0 = padding + title_h + header_h + (padding if header_h else 0)
    width = left0 + n_cols * cell_w + (n_cols - 1) * padding + padding
    height = top0 + n_rows * cell_h + (n_rows - 1) * padding + padding
    width = max(width, padding * 2 + (text_size(title)[0] if title else 0))

    grid = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(grid)
    ink = (0, 0, 0)

    def put_text(x, y, text):
        # Shift by the bbox offset, so that (x, y) is where the ink starts.
        _, _, left, top = text_size(text)
        draw.multiline_text((x - left, y - top), text, fill=ink, font=font)

    if title:
        tw = text_size(title)[0]
        put_text((width - tw) // 2, padding, title)
    for c, label in enumerate(col_labels):
        tw, th, _, _ = text_size(label)
        x = left0 + c * (cell_w + padding) + (cell_w - tw) // 2
        put_text(x, padding + title_h + (header_h - th), label)
    for r, label in enumerate(row_labels):
        tw, th, _, _ = text_size(label)
        y = top0 + r * (cell_h + padding) + (cell_h - th) // 2
        put_text(padding + (label_w - tw), y, label)
        for c, cell in enumerate(cells[r]):
            x = left0 + c * (cell_w + padding) + (cell_w - cell.width) // 2
            y_cell = top0 + r * (cell_h + padding) + (cell_h - cell.height) // 2
            grid.paste(cell, (x, y_cell))
    return grid


# ------------------------------------------------------------------- the bundled style image

# A bold palette after Van Gogh's night skies: ultramarine, cobalt, Prussian blue, teal, chrome yellow,
# orange, cream, and a deep navy for the shadows.
_PALETTE = [
    (22, 44, 110), (35, 78, 170), (62, 120, 200), (20, 110, 130), (110, 170, 210),
    (245, 200, 40), (240, 140, 30), (250, 235, 170), (12, 20, 50), (200, 60, 40),
]


def make_style_image(size=(384, 288), seed=0):
    """A deterministic, colourful "painting": thick curved brush strokes following a swirling flow field.

    The picture is made of many short polylines that follow the streamlines of a vector field built
    from a few vortices (the swirls) on top of a gentle wave. Strokes are drawn in layers, wide and
    dark first, then narrower and brighter, each with a darker rim, so the result has the strong,
    oriented, multi-scale texture that makes style transfer clearly visible. It is drawn at twice the
    size and downsampled (anti-aliasing). Only `random.Random(seed).random()` is used, whose sequence
    Python guarantees across versions, so the same seed gives the same picture everywhere.
    """
    width, height = int(size[0]), int(size[1])
    if width <= 0 or height <= 0:
        raise InputError(f"the style image size must be two positive integers, not {size!r}")
    rng = random.Random(seed)
    uniform = lambda lo, hi: lo + (hi - lo) * rng.random()  # noqa: E731 (only .random() is guaranteed)
    pick = lambda seq: seq[min(int(rng.random() * len(seq)), len(seq) - 1)]  # noqa: E731

    up = 2  # supersampling factor
    W, H = width * up, height * up
    diag = math.hypot(W, H)
    # Stroke widths and lengths are designed for 384 x 288 and scale with the picture (the number of
    # strokes stays, so the canvas stays covered), so a small version is a small copy of the painting.
    zoom = math.sqrt(width * height / (384 * 288))

    # Vortices: centre, strength (sign = turning direction) and radius of influence.
    vortices = [(uniform(0.1, 0.9) * W, uniform(0.1, 0.9) * H,
                 pick((-1, 1)) * uniform(0.8, 1.6), uniform(0.12, 0.3) * diag) for _ in range(5)]
    wave_phase = uniform(0, 2 * math.pi)

    def flow(x, y):
        """Unit direction of the flow at (x, y): a rightward wave plus the swirl of each vortex."""
        vx = 1.0
        vy = 0.6 * math.sin(2 * math.pi * x / W * 1.5 + wave_phase) + 0.4 * math.cos(2 * math.pi * y / H * 2)
        for cx, cy, strength, radius in vortices:
            dx, dy = x - cx, y - cy
            falloff = strength * math.exp(-(dx * dx + dy * dy) / (radius * radius)) * diag / (math.hypot(dx, dy) + 1.0)
            vx += -dy / diag * falloff * 4
            vy += dx / diag * falloff * 4
        norm = math.hypot(vx, vy) or 1.0
        return vx / norm, vy / norm

    def region_palette(x, y):
        """Warm colours near the vortex centres (the 'stars'), cool blues elsewhere."""
        near = min(math.hypot(x - cx, y - cy) / radius for cx, cy, _, radius in vortices)
        if near < 0.25:
            return _PALETTE[5:8]
        if y > 0.78 * H:
            return [_PALETTE[0], _PALETTE[3], _PALETTE[8], _PALETTE[9]]
        return _PALETTE[0:5] + [_PALETTE[7]]

    def jitter(colour, amount):
        return tuple(max(0, min(255, int(c + uniform(-amount, amount)))) for c in colour)

    # Under-painting: a vertical gradient from navy to cobalt to teal.
    canvas = Image.new("RGB", (W, H))
    rows = np.linspace(0, 1, H)[:, None]
    top, mid, bottom = np.array(_PALETTE[8]), np.array(_PALETTE[1]), np.array(_PALETTE[3])
    gradient = np.where(rows < 0.5, top + (mid - top) * rows * 2, mid + (bottom - mid) * (rows - 0.5) * 2)
    canvas.paste(Image.fromarray(np.repeat(gradient[:, None, :], W, axis=1).astype(np.uint8)))
    draw = ImageDraw.Draw(canvas)

    # Layers: (number of strokes, stroke width, steps, step length, colour jitter).
    layers = [(500, 18, 14, 7, 25), (900, 11, 12, 6, 30), (1100, 6, 10, 5, 35)]
    for count, stroke_width, steps, step, amount in layers:
        stroke_width = max(1, round(stroke_width * zoom))
        step = step * zoom
        rim_extra = max(1, round(4 * zoom))
        for _ in range(count):
            x, y = uniform(-0.05, 1.05) * W, uniform(-0.05, 1.05) * H
            points = [(x, y)]
            for _ in range(steps):
                dx, dy = flow(x, y)
                x, y = x + dx * step * up, y + dy * step * up
                points.append((x, y))
            colour = jitter(pick(region_palette(*points[len(points) // 2])), amount)
            rim = tuple(int(c * 0.55) for c in colour)
            draw.line(points, fill=rim, width=stroke_width + rim_extra, joint="curve")
            draw.line(points, fill=colour, width=stroke_width, joint="curve")
    return canvas.resize((width, height), Image.Resampling.LANCZOS)


# ------------------------------------------------------------------------------------ sample images

def sample_names():
    """The names accepted by sample_path."""
    return sorted(SAMPLES)


def sample_path(name):
    """The path of an image that ships with handnst ("content", "style", "chelsea", "coffee", "swirls")."""
    key = str(name).lower()
    if key not in SAMPLES:
        raise InputError(f"unknown sample image {name!r}; the samples are: {', '.join(sample_names())}")
    path = os.path.join(DATA_DIR, SAMPLES[key])
    if not os.path.isfile(path):
        raise RunError(f"the sample image {path} is missing from the installation; reinstall handnst")
    return path
