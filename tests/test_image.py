"""Tests for handnst.image: loading every kind of file, the input space, atomic saving, colour tools.

Every unusual file is written here in tmp_path, and the expected pixels come from the definition of
the format (alpha compositing, the EXIF orientation table, the CMYK formula, 16-bit scaling), not
from the implementation.
"""

import io
import os
import struct
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from handnst import image
from handnst.errors import InputError, RunError

KERAS = {"channel_order": "BGR", "scale": 255.0, "mean": [103.939, 116.779, 123.68], "std": None}
TORCH = {"channel_order": "RGB", "scale": 1.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
CONVENTIONS = pytest.param(KERAS, id="keras"), pytest.param(TORCH, id="torchvision")


def random_rgb(h=17, w=23, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def pixels(img):
    return np.asarray(img, dtype=np.int64)


def assert_one_sentence(message):
    """A user-facing error: one line, no traceback, and it says something."""
    assert "\n" not in message and "Traceback" not in message and len(message) > 20


# ---------------------------------------------------------------------------- input space round trip

@pytest.mark.parametrize("conv", CONVENTIONS)
def test_preprocess_deprocess_round_trip_is_identity(conv):
    rgb = random_rgb()
    x = image.preprocess(Image.fromarray(rgb), convention=conv)
    assert x.shape == (3, 17, 23) and x.dtype == np.float32
    np.testing.assert_array_equal(pixels(image.deprocess(x, convention=conv)), rgb)


@pytest.mark.parametrize("conv", CONVENTIONS)
def test_preprocess_follows_the_convention_formula(conv):
    rgb = random_rgb(4, 5, seed=1)
    x = image.preprocess(Image.fromarray(rgb), convention=conv)
    order = [2, 1, 0] if conv["channel_order"] == "BGR" else [0, 1, 2]
    std = np.ones(3) if conv["std"] is None else np.array(conv["std"])
    for c in range(3):
        expected = (rgb[:, :, order[c]] / 255.0 * conv["scale"] - conv["mean"][c]) / std[c]
        np.testing.assert_allclose(x[c], expected, rtol=1e-6, atol=1e-6 * conv["scale"])


def test_preprocess_default_is_keras_and_accepts_an_object_with_convention():
    rgb = random_rgb(3, 4)
    default = image.preprocess(Image.fromarray(rgb))
    # pixel (r, g, b) -> (b - 103.939, g - 116.779, r - 123.68): BGR, 0..255, ImageNet mean
    np.testing.assert_allclose(default[0, 0, 0], rgb[0, 0, 2] - 103.939, rtol=1e-6)
    np.testing.assert_allclose(default[2, 0, 0], rgb[0, 0, 0] - 123.68, rtol=1e-6)

    class Net:
        convention = TORCH

    np.testing.assert_array_equal(image.preprocess(Image.fromarray(rgb), convention=Net()),
                                  image.preprocess(Image.fromarray(rgb), convention=TORCH))


def test_deprocess_accepts_batch_of_one_and_clips_and_survives_nan():
    x = image.preprocess(Image.fromarray(random_rgb()), convention=KERAS)
    np.testing.assert_array_equal(pixels(image.deprocess(x[None], KERAS)), pixels(image.deprocess(x, KERAS)))
    wild = np.full((3, 2, 2), 1e6, dtype=np.float32)
    wild[:, 0, 0] = -1e6
    wild[:, 1, 1] = np.nan
    out = pixels(image.deprocess(wild, KERAS))
    assert (out[0, 0] == 0).all() and (out[0, 1] == 255).all() and (out[1, 1] == 0).all()
    with pytest.raises(InputError, match="shape"):
        image.deprocess(np.zeros((2, 4, 4)), KERAS)


@pytest.mark.parametrize("conv", CONVENTIONS)
def test_pixel_bounds_are_preprocess_of_black_and_white(conv):
    lo, hi = image.pixel_bounds(conv)
    assert lo.shape == hi.shape == (3,) and (lo < hi).all()
    black = image.preprocess(Image.new("RGB", (3, 2), (0, 0, 0)), convention=conv)
    white = image.preprocess(Image.new("RGB", (3, 2), (255, 255, 255)), convention=conv)
    np.testing.assert_array_equal(black[:, 0, 0], lo)
    np.testing.assert_array_equal(white[:, 0, 0], hi)
    # and every real image lies inside the box
    x = image.preprocess(Image.fromarray(random_rgb()), convention=conv)
    assert (x >= lo[:, None, None]).all() and (x <= hi[:, None, None]).all()


def test_local_conventions_agree_with_the_weights_module():
    weights = pytest.importorskip("handnst.weights")
    assert image.vgg_space._LOCAL_CONVENTIONS["keras"] == weights.KERAS_CONVENTION == KERAS
    torch_constant = getattr(weights, "TORCH_CONVENTION", getattr(weights, "TORCHVISION_CONVENTION", None))
    assert image.vgg_space._LOCAL_CONVENTIONS["torchvision"] == torch_constant == TORCH
    assert image.resolve_convention("torch") == TORCH and image.resolve_convention(None) == KERAS


@pytest.mark.parametrize("bad", [
    {"channel_order": "GBR", "scale": 255.0, "mean": [0, 0, 0], "std": None},
    {"channel_order": "RGB", "scale": -1.0, "mean": [0, 0, 0], "std": None},
    {"channel_order": "RGB", "scale": 1.0, "mean": [0, 0], "std": None},
    {"channel_order": "RGB", "scale": 1.0, "mean": [0, 0, 0], "std": [1, 0, 1]},
    {"scale": 1.0, "mean": [0, 0, 0]},
    "imagenet-ish", 42,
])
def test_malformed_conventions_are_refused(bad):
    with pytest.raises(InputError) as err:
        image.pixel_bounds(bad)
    assert_one_sentence(str(err.value))


# ---------------------------------------------------------------------------------------- resizing

def test_resize_longer_keeps_aspect_ratio():
    wide = Image.new("RGB", (400, 200))
    tall = Image.new("RGB", (30, 90))
    assert image.resize_longer(wide, 100).size == (100, 50)
    assert image.resize_longer(tall, 60).size == (20, 60)
    assert image.resize_longer(wide, None).size == (400, 200)
    assert image.resize_longer(Image.new("RGB", (1000, 2)), 10).size == (10, 1)  # never 0 pixels
    assert image.preprocess(wide, size=np.int64(40)).shape == (3, 20, 40)


@pytest.mark.parametrize("size", [0, -3, 1.5, "256", True])
def test_resize_longer_rejects_bad_sizes(size):
    with pytest.raises(InputError) as err:
        image.resize_longer(Image.new("RGB", (8, 8)), size)
    assert_one_sentence(str(err.value))


# ------------------------------------------------------------------------ unusual but valid images

def test_grayscale_becomes_rgb(tmp_path):
    gray = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = image.load_image(tmp_path / "g.png")
    assert out.mode == "RGB" and out.size == (16, 16)
    np.testing.assert_array_equal(pixels(out), np.repeat(gray[:, :, None], 3, axis=2))


def test_grayscale_with_alpha_is_composited_on_white(tmp_path):
    alphas = np.array([[0, 128, 255]], dtype=np.uint8)
    la = np.stack([np.zeros_like(alphas), alphas], axis=2)  # black ink with varying opacity
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = pixels(image.load_image(tmp_path / "la.png"))
    expected = np.rint(0 * alphas / 255 + 255 * (1 - alphas / 255))  # a*c + (1-a)*white
    for c in range(3):
        np.testing.assert_allclose(out[0, :, c], expected[0], atol=1)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (200, 10, 10, 255)   # opaque red stays red
    rgba[0, 1] = (0, 0, 0, 0)         # fully transparent black becomes white
    rgba[1, 0] = (0, 0, 255, 51)      # 20% blue over white
    rgba[1, 1] = (7, 9, 11, 0)        # hidden colour must not leak
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = pixels(image.load_image(tmp_path / "a.png"))
    np.testing.assert_array_equal(out[0, 0], (200, 10, 10))
    np.testing.assert_array_equal(out[0, 1], (255, 255, 255))
    np.testing.assert_allclose(out[1, 0], [204, 204, 255], atol=1)
    np.testing.assert_array_equal(out[1, 1], (255, 255, 255))


def test_palette_gif_with_transparency(tmp_path):
    indices = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    pal = Image.fromarray(indices, "P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (253 * 3))
    pal.save(tmp_path / "p.gif", transparency=0)
    out = pixels(image.load_image(tmp_path / "p.gif"))
    np.testing.assert_array_equal(out[0, 0], (255, 255, 255))  # transparent index -> white, not black
    np.testing.assert_array_equal(out[0, 1], (255, 0, 0))
    np.testing.assert_array_equal(out[1, 0], (0, 255, 0))


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(tmp_path / "anim.gif").n_frames == 3
    np.testing.assert_array_equal(pixels(image.load_image(tmp_path / "anim.gif"))[4, 4], (255, 0, 0))


def test_cmyk_jpeg(tmp_path):
    patches = [(0, 255, 255, 0), (0, 0, 0, 255), (0, 0, 0, 0), (255, 0, 255, 0)]
    cmyk = Image.new("CMYK", (64, 16))
    for i, p in enumerate(patches):
        cmyk.paste(p, (16 * i, 0, 16 * i + 16, 16))
    cmyk.save(tmp_path / "cmyk.jpg", quality=95)
    out = pixels(image.load_image(tmp_path / "cmyk.jpg"))
    assert out.shape == (16, 64, 3)
    for i, (c, m, y, k) in enumerate(patches):
        # naive CMYK: R = (255 - C)(255 - K)/255, ... (red, black, white, green)
        expected = [(255 - v) * (255 - k) / 255 for v in (c, m, y)]
        np.testing.assert_allclose(out[8, 16 * i + 8], expected, atol=6)  # JPEG noise, patch centre


def test_16_bit_png_is_scaled_not_truncated(tmp_path):
    levels = np.arange(256, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(levels * 257).save(tmp_path / "deep.png")   # 0..65535, full 16-bit range
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = pixels(image.load_image(tmp_path / "deep.png"))
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], levels)
    # in-between values round to the nearest 8-bit level
    Image.fromarray(np.array([[32767, 384]], dtype=np.uint16)).save(tmp_path / "mid.png")
    np.testing.assert_array_equal(pixels(image.load_image(tmp_path / "mid.png"))[0, :, 0], [127, 1])


def test_32_bit_integer_and_float_modes():
    as_int = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.int32), "I")
    np.testing.assert_array_equal(pixels(image.load_image(as_int))[0, :, 1], [0, 100, 255])
    as_float = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    np.testing.assert_array_equal(pixels(image.load_image(as_float))[0, :, 2], [0, 128, 255])


def test_exif_rotated_jpeg_is_upright(tmp_path):
    # Stored 40 wide x 20 high, in four colour quadrants, with EXIF orientation 6. By the EXIF table,
    # orientation 6 means: stored row 0 is the visual right-hand side, stored column 0 the visual top.
    red, green, blue, white = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
    stored = Image.new("RGB", (40, 20))
    stored.paste(red, (0, 0, 20, 10))       # top-left
    stored.paste(green, (20, 0, 40, 10))    # top-right
    stored.paste(blue, (0, 10, 20, 20))     # bottom-left
    stored.paste(white, (20, 10, 40, 20))   # bottom-right
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)

    out = image.load_image(tmp_path / "phone.jpg")
    assert out.size == (20, 40)  # width and height swapped
    px = pixels(out)
    np.testing.assert_allclose(px[5, 15], red, atol=12)     # stored (row 0, col 0) -> visual top-right
    np.testing.assert_allclose(px[35, 15], green, atol=12)  # stored (row 0, last col) -> bottom-right
    np.testing.assert_allclose(px[5, 5], blue, atol=12)     # stored (last row, col 0) -> top-left
    np.testing.assert_allclose(px[35, 5], white, atol=12)
    # and preprocess sees the upright picture too
    assert image.preprocess(tmp_path / "phone.jpg").shape == (3, 40, 20)


def test_arrays_and_open_images_are_accepted():
    rgb = random_rgb(5, 6)
    np.testing.assert_array_equal(pixels(image.load_image(rgb)), rgb)
    np.testing.assert_array_equal(pixels(image.load_image(rgb / 255.0)), rgb)
    with pytest.raises(InputError, match="deprocess"):
        image.load_image(np.zeros((3, 5, 6), dtype=np.uint8))


# ----------------------------------------------------------------------------------- bad inputs

def _jpeg_bytes():
    buf = io.BytesIO()
    Image.fromarray(random_rgb(64, 64)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png_bytes():
    buf = io.BytesIO()
    Image.fromarray(random_rgb(64, 64)).save(buf, format="PNG")
    return buf.getvalue()


def _corrupt_png():
    data = bytearray(_png_bytes())
    start = data.index(b"IDAT") + 4
    for i in range(start + 20, start + 60):
        data[i] ^= 0x5A  # garbage inside the compressed pixels (the chunk CRC no longer matches)
    return bytes(data)


BAD_FILES = {
    "empty": (b"", "empty"),
    "text": (b"this is not an image, just some text\n" * 10, "not an image"),
    "truncated_jpeg": (_jpeg_bytes()[: len(_jpeg_bytes()) // 2], "truncated or corrupted"),
    "truncated_png": (_png_bytes()[: len(_png_bytes()) // 2], "truncated or corrupted"),
    "corrupt_png": (_corrupt_png(), "truncated or corrupted"),
    "header_only_png": (_png_bytes()[:40], "corrupted"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_input_error(tmp_path, name):
    data, phrase = BAD_FILES[name]
    path = tmp_path / f"{name}.{'jpg' if 'jpeg' in name else 'png'}"
    path.write_bytes(data)
    with pytest.raises(InputError) as err:
        image.load_image(path)
    assert phrase in str(err.value) and str(path) in str(err.value)
    assert_one_sentence(str(err.value))
    with pytest.raises(InputError):
        image.preprocess(str(path), size=32)


def test_truncated_image_already_opened_by_the_caller(tmp_path):
    path = tmp_path / "cut.jpg"
    path.write_bytes(_jpeg_bytes()[:1500])
    with Image.open(path) as lazy:  # Pillow has read the header only
        with pytest.raises(InputError, match="truncated or corrupted"):
            image.load_image(lazy)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(InputError, match="does not exist") as err:
        image.load_image(tmp_path / "nope.jpg")
    assert_one_sentence(str(err.value))
    with pytest.raises(InputError, match="is a directory") as err:
        image.load_image(tmp_path)
    assert_one_sentence(str(err.value))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        image.load_image(fifo)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(tmp_path):
    path = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    try:
        with pytest.raises(InputError, match="permission"):
            image.load_image(path)
    finally:
        path.chmod(0o644)


def test_unreadable_file_reported_even_when_open_fails(tmp_path, monkeypatch):
    # Simulate what an unprivileged user sees (tests may run as root, who can read anything).
    path = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(path)
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(InputError, match="permission"):
        image.load_image(path)


def _header_only_png(width, height):
    """A valid PNG signature and header declaring width x height RGB pixels, with almost no data."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("width,height", [
    (12_000, 10_000),   # 120 MP: above our limit, below twice Pillow's (Pillow would only warn)
    (60_000, 60_000),   # 3600 MP: Pillow itself refuses at open
])
def test_decompression_bomb_refused_quickly_without_decoding(tmp_path, monkeypatch, width, height):
    path = tmp_path / "bomb.png"
    path.write_bytes(_header_only_png(width, height))
    assert path.stat().st_size < 200
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1))
    start = time.perf_counter()
    with pytest.raises(InputError) as err:
        image.load_image(path)
    assert time.perf_counter() - start < 1.0
    assert decoded == []
    assert "decompression bomb" in str(err.value)
    assert_one_sentence(str(err.value))


def test_own_pixel_limit_applies_to_real_images_and_resizing(tmp_path, monkeypatch):
    Image.new("RGB", (20, 20)).save(tmp_path / "small.png")
    monkeypatch.setattr(image.io, "MAX_PIXELS", 399)
    with pytest.raises(InputError, match="megapixel"):
        image.load_image(tmp_path / "small.png")
    monkeypatch.setattr(image.io, "MAX_PIXELS", 400)
    assert image.load_image(tmp_path / "small.png").size == (20, 20)
    with pytest.raises(InputError, match="megapixel"):
        image.preprocess(tmp_path / "small.png", size=21)


# -------------------------------------------------------------------------------- output paths

def test_check_output_path_accepts_common_formats(tmp_path):
    assert image.check_output_path(tmp_path / "a.png") == "PNG"
    assert image.check_output_path(str(tmp_path / "a.JPG")) == "JPEG"
    assert image.check_output_path(tmp_path / "a.gif") == "GIF"
    assert os.listdir(tmp_path) == []  # the writability probe cleans up after itself


@pytest.mark.parametrize("relative,phrase", [
    ("missing_dir/out.png", "does not exist"),
    ("a_file.txt/out.png", "not a directory"),
    ("out.xyz", ".png"),
    ("out", "no extension"),
    ("out.xbm", ".png"),            # a format Pillow lists but cannot write for RGB images
    ("existing_dir", "is a directory"),
])
def test_check_output_path_refuses(tmp_path, relative, phrase):
    (tmp_path / "a_file.txt").write_text("x")
    (tmp_path / "existing_dir").mkdir()
    with pytest.raises(InputError) as err:
        image.check_output_path(tmp_path / relative)
    assert phrase in str(err.value)
    assert_one_sentence(str(err.value))


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root can write anywhere")
def test_check_output_path_unwritable_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(InputError, match="not writable"):
            image.check_output_path(locked / "out.png")
    finally:
        locked.chmod(0o700)


def test_check_output_path_unwritable_directory_simulated(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(image.io.tempfile, "mkstemp", refuse)
    with pytest.raises(InputError, match="not writable"):
        image.check_output_path(tmp_path / "out.png")


# ---------------------------------------------------------------------------------------- saving

@pytest.mark.parametrize("ext,fmt,lossless", [
    (".png", "PNG", True), (".jpg", "JPEG", False), (".webp", "WEBP", False),
    (".bmp", "BMP", True), (".tif", "TIFF", True), (".gif", "GIF", False),
])
def test_save_image_format_from_extension(tmp_path, ext, fmt, lossless):
    if ext not in image.io._writable_extensions():
        pytest.skip(f"this Pillow cannot write {ext}")
    img = Image.fromarray(random_rgb(20, 30))
    path = tmp_path / f"out{ext}"
    assert image.save_image(img, path) == str(path)
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left
    with Image.open(path) as back:
        assert back.format == fmt and back.size == (30, 20)
        if lossless:
            np.testing.assert_array_equal(pixels(back.convert("RGB")), pixels(img))
    # saving again replaces the file, still with nothing left over
    image.save_image(img, path)
    assert os.listdir(tmp_path) == [path.name]


def test_save_jpeg_drops_alpha_and_keeps_quality(tmp_path):
    rgba = Image.new("RGBA", (16, 16), (10, 200, 30, 255))
    image.save_image(rgba, tmp_path / "x.jpg")
    with Image.open(tmp_path / "x.jpg") as back:
        assert back.mode == "RGB"
        np.testing.assert_allclose(pixels(back)[8, 8], (10, 200, 30), atol=4)


@pytest.mark.parametrize("relative", ["out.xyz", "missing/out.png"])
def test_save_image_bad_path_leaves_nothing(tmp_path, relative):
    with pytest.raises(InputError):
        image.save_image(Image.new("RGB", (4, 4)), tmp_path / relative)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("exception", [RuntimeError("disk on fire"), KeyboardInterrupt(), OSError(28, "No space")])
def test_failure_mid_save_leaves_nothing_and_keeps_old_file(tmp_path, monkeypatch, exception):
    path = tmp_path / "out.png"
    path.write_bytes(b"the previous result")
    real_save = Image.Image.save

    def half_then_fail(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half an image")
        raise exception

    monkeypatch.setattr(Image.Image, "save", half_then_fail)
    expected = RunError if isinstance(exception, OSError) else type(exception)
    with pytest.raises(expected):
        image.save_image(Image.new("RGB", (4, 4)), path)
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert os.listdir(tmp_path) == ["out.png"]
    assert path.read_bytes() == b"the previous result"


def test_failure_mid_gif_leaves_nothing(tmp_path, monkeypatch):
    def fail(self, fp, *args, **kwargs):
        fp.write(b"GIF89a")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", fail)
    with pytest.raises(KeyboardInterrupt):
        image.save_gif([Image.new("RGB", (4, 4))] * 2, tmp_path / "anim.gif")
    assert os.listdir(tmp_path) == []


def test_saved_file_gets_ordinary_permissions(tmp_path):
    path = tmp_path / "out.png"
    image.save_image(Image.new("RGB", (4, 4)), path)
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_save_gif(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (12, 10), c) for c in colours]
    frames[2] = frames[2].resize((24, 20))  # a frame of another size is resized to the first
    path = image.save_gif(frames, tmp_path / "progress.gif", duration_ms=80)
    assert os.listdir(tmp_path) == ["progress.gif"]
    with Image.open(path) as gif:
        assert gif.n_frames == 3 and gif.size == (12, 10)
        for i, c in enumerate(colours):
            gif.seek(i)
            assert gif.info["duration"] == 80
            np.testing.assert_array_equal(pixels(gif.convert("RGB"))[5, 5], c)


@pytest.mark.parametrize("frames,name,duration", [
    ([], "a.gif", 100), ([Image.new("RGB", (2, 2))], "a.png", 100), ([Image.new("RGB", (2, 2))], "a.gif", 0),
])
def test_save_gif_refuses_bad_arguments(tmp_path, frames, name, duration):
    with pytest.raises(InputError):
        image.save_gif(frames, tmp_path / name, duration_ms=duration)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------ colour preservation

def test_yiq_round_trip_and_grey_has_no_chroma():
    rgb = np.random.default_rng(3).random((7, 9, 3))
    np.testing.assert_allclose(image.yiq_to_rgb(image.rgb_to_yiq(rgb)), rgb, atol=1e-12)
    grey = np.full((2, 2, 3), 0.37)
    yiq = image.rgb_to_yiq(grey)
    np.testing.assert_allclose(yiq[..., 0], 0.37, atol=1e-12)      # Y of a grey is the grey
    np.testing.assert_allclose(yiq[..., 1:], 0.0, atol=1e-12)      # and it has no chrominance
    # Y is the standard (Rec. 601) luma
    np.testing.assert_allclose(image.rgb_to_yiq([1.0, 0.0, 0.0])[0], 0.299)
    with pytest.raises(InputError):
        image.rgb_to_yiq(np.zeros((4, 4)))


def _luma(img):
    return image.rgb_to_yiq(np.asarray(img, dtype=np.float64) / 255.0)[..., 0]


def test_luminance_image_is_grey_with_the_images_luma():
    rgb = random_rgb(8, 8)
    lum = pixels(image.luminance_image(Image.fromarray(rgb)))
    assert (lum[..., 0] == lum[..., 1]).all() and (lum[..., 1] == lum[..., 2]).all()
    np.testing.assert_allclose(lum[..., 0] / 255.0, _luma(rgb), atol=0.5 / 255 + 1e-9)


def test_match_luminance_gives_the_content_mean_and_std():
    rng = np.random.default_rng(4)
    style = rng.integers(0, 256, (30, 40, 3)).astype(np.uint8)                    # bright, contrasty
    content = (90 + rng.integers(0, 40, (25, 35, 3))).astype(np.uint8)            # dull and narrow
    matched = image.match_luminance(Image.fromarray(style), Image.fromarray(content))
    assert matched.size == (40, 30)
    y = _luma(matched)
    target = _luma(content)
    # up to 8-bit rounding of the result, at most half a level per pixel
    assert abs(y.mean() - target.mean()) <= 0.5 / 255
    assert abs(y.std() - target.std()) <= 0.5 / 255
    assert abs(_luma(style).std() - target.std()) > 20 / 255  # the check above is not trivially true
    # the *pattern* is the style's: the result is an increasing function of the style's luminance
    assert np.corrcoef(y.ravel(), _luma(style).ravel())[0, 1] > 0.99


def test_restore_chrominance_keeps_content_colours_and_stylized_luminance():
    rng = np.random.default_rng(5)
    content = (80 + rng.integers(0, 90, (20, 24, 3))).astype(np.uint8)     # mid-range: nothing clips
    stylized = (90 + rng.integers(0, 70, (20, 24, 3))).astype(np.uint8)
    out = image.restore_chrominance(Image.fromarray(stylized), Image.fromarray(content))
    yiq_out = image.rgb_to_yiq(pixels(out) / 255.0)
    yiq_content = image.rgb_to_yiq(content / 255.0)
    yiq_stylized = image.rgb_to_yiq(stylized / 255.0)
    # 8-bit rounding moves each of R, G, B by at most 0.5/255; through the YIQ rows that is at most
    # (sum of |row|) * 0.5/255 in each of Y, I, Q.
    tolerance = np.abs(image.RGB_TO_YIQ).sum(axis=1) * 0.5 / 255
    np.testing.assert_array_less(np.abs(yiq_out[..., 0] - yiq_stylized[..., 0]), tolerance[0] + 1e-9)
    np.testing.assert_array_less(np.abs(yiq_out[..., 1] - yiq_content[..., 1]), tolerance[1] + 1e-9)
    np.testing.assert_array_less(np.abs(yiq_out[..., 2] - yiq_content[..., 2]), tolerance[2] + 1e-9)


def test_restore_chrominance_resizes_content():
    content = Image.new("RGB", (40, 20), (200, 60, 60))
    stylized = Image.new("RGB", (20, 10), (128, 128, 128))
    out = image.restore_chrominance(stylized, content)
    assert out.size == (20, 10)
    r, g, b = pixels(out)[5, 10]
    assert r > g + 50 and r > b + 50  # the content's red is back, on the stylized grey's brightness
    assert abs(_luma(out).mean() - 128 / 255) < 1 / 255


# --------------------------------------------------------------------------------------- the grid

def test_make_grid_places_images_in_rows_and_columns():
    colours = [[(255, 0, 0), (0, 255, 0), (0, 0, 255)], [(255, 255, 0), (0, 255, 255), (255, 0, 255)]]
    cells = [[Image.new("RGB", (30, 20), c) for c in row] for row in colours]
    grid = image.make_grid(cells, ["conv1_1", "conv1_1\nconv2_1"], ["1e-5", "1e-4", "1e-3"], title="Figure 3")
    px = pixels(grid)
    centres = {}
    for r, row in enumerate(colours):
        for c, colour in enumerate(row):
            ys, xs = np.nonzero((px == colour).all(axis=2))
            assert len(ys) == 30 * 20, f"cell {r},{c} not found intact"
            centres[r, c] = (ys.mean(), xs.mean())
    for c in range(3):
        assert centres[0, c][0] < centres[1, c][0]            # rows go down
    for r in range(2):
        assert centres[r, 0][1] < centres[r, 1][1] < centres[r, 2][1]  # columns go right
    top_of_cells = min(y for y, _ in centres.values()) - 10
    left_of_cells = min(x for _, x in centres.values()) - 15
    assert (px[: int(top_of_cells)] < 128).all(axis=2).any()      # ink above the cells: title, column labels
    assert (px[:, : int(left_of_cells)] < 128).all(axis=2).any()  # ink left of the cells: row labels
    flat = image.make_grid([c for row in cells for c in row], ["a", "b"], ["x", "y", "z"])
    assert flat.size[0] > 3 * 30 and flat.size[1] > 2 * 20
    with pytest.raises(InputError):
        image.make_grid(cells, ["only one row"], ["x", "y", "z"])


# --------------------------------------------------------------------------------- sample images

def test_sample_images_exist_and_load():
    for name in ("content", "style", "chelsea", "coffee", "swirls"):
        img = image.load_image(image.sample_path(name))
        assert img.mode == "RGB" and max(img.size) == 384
    with pytest.raises(InputError) as err:
        image.sample_path("mona_lisa")
    assert "content" in str(err.value) and "style" in str(err.value)


def test_data_folder_is_small_and_attributed():
    files = os.listdir(image.DATA_DIR)
    total = sum(os.path.getsize(os.path.join(image.DATA_DIR, f)) for f in files)
    assert total < 400_000
    readme = open(os.path.join(image.DATA_DIR, "README.md"), encoding="utf-8").read()
    for f in files:
        if f != "README.md":
            assert f in readme, f"{f} has no attribution"


def _psnr(a, b):
    mse = np.mean((pixels(a) - pixels(b)).astype(np.float64) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def test_shipped_style_image_is_what_make_style_image_draws():
    shipped = image.load_image(image.sample_path("style"))
    drawn = image.make_style_image(size=shipped.size, seed=0)
    # "JPEG noise" measured, not guessed: the shipped file (JPEG quality 90, see data/README.md) must
    # differ from the fresh drawing no more than this machine's own JPEG encoding of it does (1 dB of
    # slack for a different libjpeg). Busy strokes make that noise large (about 25 dB), but another
    # drawing (another seed) is far further away (about 10 dB).
    buf = io.BytesIO()
    drawn.save(buf, format="JPEG", quality=90)
    jpeg_noise_psnr = _psnr(drawn, Image.open(buf).convert("RGB"))
    assert _psnr(drawn, shipped) >= jpeg_noise_psnr - 1.0
    assert _psnr(image.make_style_image(size=shipped.size, seed=1), shipped) < jpeg_noise_psnr - 10.0


def test_make_style_image_is_deterministic_and_colourful():
    a = image.make_style_image(size=(64, 48), seed=7)
    b = image.make_style_image(size=(64, 48), seed=7)
    assert a.size == (64, 48) and a.mode == "RGB"
    np.testing.assert_array_equal(pixels(a), pixels(b))
    hsv = pixels(a.convert("HSV"))
    assert hsv[..., 1].mean() > 100          # saturated colours, not greys
    assert pixels(a).std(axis=(0, 1)).min() > 30  # strong texture in every channel
