"""Image files in and out: any file a person has becomes one upright RGB image, or one clear error;
pictures are written atomically; the bundled sample images.

* load_image: any file people actually have (phone photos with EXIF rotation, palette GIFs,
  transparent PNGs, CMYK JPEGs from print workflows, 16-bit scans) becomes one upright RGB image, and
  everything that is *not* a usable image (missing, empty, truncated, a decompression bomb) becomes a
  one-sentence InputError instead of a traceback.
* save_image / save_gif: atomic writes (temporary file in the same directory, then os.replace), so a
  crash or Ctrl-C never leaves half an image behind and never destroys the previous file.

Everything here runs on the host (Pillow + NumPy).
"""

import functools
import io
import math
import os
import stat
import tempfile
import warnings

import numpy as np
from PIL import Image, ImageOps

from handnst.backend import to_host
from handnst.errors import InputError, RunError
from handnst.fileio import atomic_path


# A guard of our own against decompression bombs: a tiny file can declare an enormous image
# (e.g. 50000 x 50000 pixels of one colour compress to a few kilobytes, but decode to 7.5 GB).
# Style transfer works on images of a few hundred pixels a side, so anything above 100 megapixels is
# refused from the header alone, before a single pixel is decoded. Pillow has its own guard
# (Image.MAX_IMAGE_PIXELS), which we leave alone for the rest of the program and catch as well.
MAX_PIXELS = 100_000_000


# The images that ship in handnst/data (see handnst/data/README.md for where they come from).
SAMPLES = {
    "content": "chelsea.jpg",
    "chelsea": "chelsea.jpg",
    "coffee": "coffee.jpg",
    "style": "swirls.jpg",
    "swirls": "swirls.jpg",
}
DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


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
