"""Bad input never crashes, never leaves half-written files, never loses work (issue 7).

Every case runs the command line the way a user does, `python -m handnst ...` in a subprocess whose
current folder is a fresh temporary folder, and checks what the user sees and what stays on disk:

* the exit code: 2 for bad usage or bad input, 1 for a failure while running, 130 for Ctrl-C;
* stderr is exactly one line, `handnst: error: ...` (or the interrupt line), which names what was
  wrong or what to do; there is no traceback anywhere;
* nothing is left behind: the folder (dotfiles included) holds exactly what it held before.

Files that are valid but unusual (grayscale, transparency, palettes, CMYK, 16 bits, EXIF rotation)
must work end to end, and the picture that comes out must show that they were decoded correctly.

Runs use tiny sizes and one to three iterations with the real weights (`real_weights_path`).
With ROBUSTNESS_LOG=path in the environment, every case appends {case, code, message} to that file
as a JSON line (to tabulate what each case prints).
"""

import http.server
import json
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from handnst.image import load_image, resize_longer, sample_path

CONTENT = sample_path("content")
STYLE = sample_path("style")
TINY = ["--size", "32", "--iters", "2"]


# ------------------------------------------------------------------------------------- helpers

def _env(weights=None):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("HANDNST_WEIGHTS", None)
    if weights is not None:
        env["HANDNST_WEIGHTS"] = str(weights)
    return env


def run_cli(args, cwd, weights=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "handnst", *map(str, args)], cwd=cwd, env=_env(weights),
                          capture_output=True, text=True, timeout=timeout)


def snapshot(folder):
    """Every path under `folder` (dotfiles and sub-folders included) with its size, for before/after."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = None if os.path.isdir(path) else os.lstat(path).st_size
    return found


def record(case, code, message):
    log = os.environ.get("ROBUSTNESS_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"case": case, "code": code, "message": message}) + "\n")


def the_error_line(proc, code, words, case, extra_lines_allowed=False):
    """Assert the exit code, one `handnst: error:` line holding `words`, no traceback; return the line.

    extra_lines_allowed: status lines (`handnst: ...`) and progress bars may come first (a download).
    """
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert lines, "no message at all"
    if not extra_lines_allowed:
        assert len(lines) == 1, proc.stderr
    assert sum(line.startswith("handnst: error:") for line in lines) == 1, proc.stderr
    line = lines[-1]
    assert line.startswith("handnst: error: "), proc.stderr
    for word in words:
        assert word.lower() in line.lower(), (word, line)
    record(case, proc.returncode, line)
    return line


def noisy_rgb(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def halves(width, height, top_or_left, bottom_or_right, vertical=False, mode="RGB"):
    """An image split in two flat halves: left/right (or top/bottom with vertical=True)."""
    img = Image.new(mode, (width, height), bottom_or_right)
    box = (0, 0, width, height // 2) if vertical else (0, 0, width // 2, height)
    img.paste(top_or_left, box)
    return img


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width, height):
    """A few hundred bytes of PNG whose header declares width x height RGB pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def write_bytes(path, data):
    with open(path, "wb") as fh:
        fh.write(data)
    return str(path)


def truncated(path, fmt, keep=0.5):
    noisy_rgb(64, 48).save(path, format=fmt)
    data = open(path, "rb").read()
    return write_bytes(path, data[:int(len(data) * keep)])


def corrupted_png(path):
    noisy_rgb(64, 48).save(path, format="PNG")
    data = bytearray(open(path, "rb").read())
    start = data.index(b"IDAT") + 4
    for i in range(start + 20, start + 60):
        data[i] ^= 0x5A                     # scramble the compressed pixels (the chunk CRC no longer matches)
    return write_bytes(path, bytes(data))


# -------------------------------------------------------------------- weights files to break

@pytest.fixture(scope="session")
def random_weights(tmp_path_factory):
    """A valid weights file in the project's format (random numbers: these cases never get to run)."""
    from handnst.networks.vgg import CONV_LAYERS
    from handnst.weights import KERAS_CONVENTION, save_weights
    rng = np.random.default_rng(0)
    params = {name: (rng.standard_normal((cout, cin, 3, 3), dtype=np.float32) * 0.01,
                     np.zeros(cout, np.float32)) for name, cin, cout in CONV_LAYERS}
    path = tmp_path_factory.mktemp("weights") / "random.h5"
    return save_weights(path, params, {"convention": KERAS_CONVENTION, "source": "random, for tests"})


def broken_weights(source, path, how):
    """Copy a good weights file to `path` and break it in one way with h5py."""
    import shutil

    import h5py
    shutil.copyfile(source, path)
    with h5py.File(path, "r+") as f:
        if how == "wrong-shape":
            del f["conv2_1"]["weight"]
            f["conv2_1"].create_dataset("weight", data=np.zeros((128, 64, 5, 5), np.float32))
        elif how == "missing-layer":
            del f["conv4_3"]
        elif how == "nan":
            w = f["conv3_2"]["weight"][()]
            w[0, 0, 1, 1] = np.nan
            f["conv3_2"]["weight"][...] = w
        else:
            raise ValueError(how)
    return str(path)


# ------------------------------------------------------------------------ cases that must fail
#
# Each case: a function tmp -> command-line arguments (it may create files in tmp first), the exit
# code, and words the one error line must contain. Cases whose weights matter name them.

@dataclass
class Case:
    name: str
    args: object
    code: int
    words: tuple
    weights: str = "real"    # HANDNST_WEIGHTS: "real", or "nowhere" (a file that does not exist)
    broken: str = None       # write w.h5 first: a valid weights file broken this way (see broken_weights)


def stylize(*extra, content=CONTENT, style=STYLE, out="out.png"):
    return ["stylize", content, style, "-o", out, *extra]


def _fifo(tmp):
    path = tmp / "pipe.jpg"
    os.mkfifo(path)
    return str(path)


def _unwritable_folder(tmp):
    """A folder this process cannot create files in: chmod 500 for ordinary users; as root (who may
    write anywhere the permissions say no) a read-only system folder."""
    if os.geteuid() != 0:
        folder = tmp / "readonly"
        folder.mkdir()
        folder.chmod(0o500)
        return str(folder)
    for folder in ("/proc", "/sys"):
        try:
            fd = os.open(os.path.join(folder, ".handnst-robustness-probe"), os.O_CREAT | os.O_WRONLY, 0o600)
        except OSError:
            return folder
        os.close(fd)
        os.unlink(os.path.join(folder, ".handnst-robustness-probe"))
    pytest.skip("running as root with no read-only folder available")


def _too_small(tmp):
    path = tmp / "strip.png"
    noisy_rgb(40, 10).save(path)
    return stylize("--size", "40", "--iters", "1", content=str(path))


def _text_bomb(path):
    """A valid 8x8 PNG with a zTXt chunk that inflates to 100 MB (Pillow refuses such text chunks)."""
    noisy_rgb(8, 8).save(path)
    data = open(path, "rb").read()
    ztxt = png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * (100 << 20), 9))
    end = data.index(b"IEND") - 4
    return write_bytes(path, data[:end] + ztxt + data[end:])


def _init_not_image(tmp):
    write_bytes(tmp / "init.png", b"this is not a picture\n")
    return stylize(*TINY, "--init", "init.png")


def _unpickle_bomb(tmp, zip_format):
    """A "weights" file whose pickle calls os.system to create a marker file when loaded."""
    marker = tmp / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps({"features.0.weight": Evil()}, protocol=2)
    path = tmp / ("evil_zip.pth" if zip_format else "evil.pth")
    if zip_format:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", payload)
            archive.writestr("archive/byteorder", "little")
    else:
        write_bytes(path, payload)
    return ["weights", "convert", path, "--output", "converted.h5"]


FAILURES = [
    # image inputs
    Case("content missing", lambda t: stylize(*TINY, content="no-such-photo.jpg"), 2, ("does not exist",)),
    Case("content is a directory", lambda t: stylize(*TINY, content=str(t)), 2, ("directory",)),
    Case("content is empty", lambda t: stylize(*TINY, content=write_bytes(t / "empty.jpg", b"")), 2,
         ("empty", "0 bytes")),
    Case("text file named .jpg", lambda t: stylize(*TINY, content=write_bytes(t / "notes.jpg", b"hello\n" * 50)),
         2, ("not an image",)),
    Case("truncated JPEG", lambda t: stylize(*TINY, content=truncated(t / "cut.jpg", "JPEG")), 2, ("truncated",)),
    Case("truncated PNG", lambda t: stylize(*TINY, content=truncated(t / "cut.png", "PNG")), 2, ("truncated",)),
    Case("corrupted PNG", lambda t: stylize(*TINY, content=corrupted_png(t / "bad.png")), 2, ("corrupted",)),
    Case("PNG bomb 30000x30000", lambda t: stylize(*TINY, content=write_bytes(t / "bomb.png",
                                                                          png_claiming(30000, 30000))),
         2, ("decompression bomb",)),
    Case("PNG claiming 110 megapixels", lambda t: stylize(*TINY, content=write_bytes(t / "big.png",
                                                                                  png_claiming(11000, 10000))),
         2, ("11000x10000", "decompression bomb")),
    Case("style is a truncated JPEG", lambda t: stylize(*TINY, style=truncated(t / "s.jpg", "JPEG", 0.3)), 2,
         ("style image", "truncated")),
    Case("content is a FIFO", lambda t: stylize(*TINY, content=_fifo(t)), 2, ("not a regular file",)),
    Case("image too small for conv5_1", _too_small, 2, ("40x10", "at least 16x16", "--size 64")),
    Case("texture too small for its layers",
         lambda t: ["texture", STYLE, "--layers", "conv3_1", "-o", "t.png", "--size", "3", "--iters", "1"], 2,
         ("at least 4x4",)),
    Case("reconstruct from pool5 too small",
         lambda t: ["reconstruct", CONTENT, "--layer", "pool5", "-o", "r.png", "--size", "40", "--iters", "1"], 2,
         ("pool5", "at least 32x32")),
    Case("PNG with a huge compressed text chunk", lambda t: stylize(*TINY, content=_text_bomb(t / "text.png")), 2,
         ("text.png",)),
    Case("init is not an image", _init_not_image, 2, ("init", "not an image")),
    # options
    Case("--size 0", lambda t: stylize("--size", "0"), 2, ("--size", "positive whole number")),
    Case("--size -5", lambda t: stylize("--size", "-5"), 2, ("--size", "positive whole number")),
    Case("--size abc", lambda t: stylize("--size", "abc"), 2, ("--size", "'abc'")),
    Case("--iters 0", lambda t: stylize("--iters", "0"), 2, ("--iters", "positive whole number")),
    Case("--iters -1", lambda t: stylize("--iters", "-1"), 2, ("--iters", "positive whole number")),
    Case("--iters x", lambda t: stylize("--iters", "x"), 2, ("--iters", "'x'")),
    Case("--content-weight nan", lambda t: stylize("--content-weight", "nan"), 2, ("--content-weight", "finite")),
    Case("--content-weight inf", lambda t: stylize("--content-weight", "inf"), 2, ("--content-weight", "finite")),
    Case("--content-weight -1", lambda t: stylize("--content-weight", "-1"), 2, ("--content-weight", "at least 0")),
    Case("--style-weight -1", lambda t: stylize("--style-weight", "-1"), 2, ("--style-weight", "at least 0")),
    Case("--tv-weight nan", lambda t: stylize("--tv-weight", "nan"), 2, ("--tv-weight", "finite")),
    Case("--tv-exponent 0.5", lambda t: stylize("--tv-exponent", "0.5"), 2, ("exponent", "at least 1")),
    Case("--lr 0 with adam", lambda t: stylize("--optimizer", "adam", "--lr", "0"), 2, ("--lr", "greater than 0")),
    Case("--save-every 0", lambda t: stylize("--save-every", "0"), 2, ("--save-every",)),
    Case("unknown content layer", lambda t: stylize("--content-layers", "conv9_9"), 2,
         ("conv9_9", "conv1_1..conv5_4")),
    Case("unknown style layer", lambda t: stylize("--style-layers", "conv1_1", "fc7"), 2, ("fc7", "conv1_1..conv5_4")),
    Case("style layer weights count", lambda t: stylize("--style-layer-weights", "1", "2"), 2,
         ("2 style layer weights", "5 style layers")),
    Case("style layer weights all 0", lambda t: stylize("--style-layer-weights", "0", "0", "0", "0", "0"), 2,
         ("must not all be 0",)),
    Case("style blend weights count", lambda t: stylize("--style-blend-weights", "1", "2"), 2,
         ("2 style blend weights", "1 style image")),
    Case("unknown optimizer", lambda t: stylize("--optimizer", "newton"), 2, ("newton", "lbfgs")),
    Case("unknown init", lambda t: stylize("--init", "zeros"), 2, ("zeros", "content, noise")),
    Case("init file missing", lambda t: stylize("--init", "start.png"), 2, ("start.png", "existing image file")),
    Case("unknown command", lambda t: ["stylise", CONTENT, STYLE], 2, ("stylise", "stylize")),
    # outputs
    Case("output folder missing", lambda t: stylize(out="no/such/dir/out.png"), 2, ("does not exist", "create it")),
    Case("output parent is a file", lambda t: stylize(out=write_bytes(t / "afile", b"x") + "/out.png"), 2,
         ("not a directory",)),
    Case("output folder not writable", lambda t: stylize(out=os.path.join(_unwritable_folder(t), "out.png")), 2,
         ("not writable",)),
    Case("output is a directory", lambda t: stylize(out=str(t)), 2, ("is a directory",)),
    Case("output without extension", lambda t: stylize(out="picture"), 2, ("no extension", ".png")),
    Case("--json is the output", lambda t: stylize(*TINY, "--json", "out.png"), 2, ("same file",)),
    Case("output extension .xyz", lambda t: stylize(out="out.xyz"), 2, (".xyz", ".png")),
    Case("--json folder missing", lambda t: stylize(*TINY, "--json", "reports/r.json"), 2,
         ("--json", "does not exist")),
    Case("--device gpu without CuPy", lambda t: stylize(*TINY, "--device", "gpu"), 2, ("CuPy", "--device cpu")),
    # weights
    Case("--weights missing", lambda t: stylize(*TINY, "--weights", "vgg.h5"), 2,
         ("does not exist", "handnst weights fetch")),
    Case("HANDNST_WEIGHTS missing", lambda t: stylize(*TINY), 2, ("HANDNST_WEIGHTS", "does not exist"),
         weights="nowhere"),
    Case("weights not HDF5", lambda t: stylize(*TINY, "--weights", write_bytes(t / "w.h5", b"\0" * 4096)), 2,
         ("not an HDF5 file", "fetch")),
    Case("weights wrong shapes", lambda t: stylize(*TINY, "--weights", "w.h5"), 2, ("conv2_1", "shape"),
         broken="wrong-shape"),
    Case("weights missing a layer", lambda t: stylize(*TINY, "--weights", "w.h5"), 2, ("missing layer", "conv4_3"),
         broken="missing-layer"),
    Case("weights with NaN", lambda t: stylize(*TINY, "--weights", "w.h5"), 2, ("conv3_2", "NaN"), broken="nan"),
    Case("--weights is a directory", lambda t: stylize(*TINY, "--weights", str(t)), 2, ("is a directory",)),
    Case("grid with weights that are not HDF5",
         lambda t: ["grid", CONTENT, STYLE, "-o", "g.png", "--size", "32", "--iters", "1", "--weights",
                    write_bytes(t / "w.h5", b"\0" * 4096)], 2, ("not an HDF5 file",)),
    Case("weights info of a non-HDF5 file", lambda t: ["weights", "info", write_bytes(t / "w.h5", b"GIF89a")], 2,
         ("not an HDF5 file",)),
    Case("fetch: local Keras file with the wrong md5",
         lambda t: ["weights", "fetch", "--source", "keras", write_bytes(t / "keras.h5", b"\x89HDF\r\n" * 100),
                    "--output", "vgg19.h5"], 2, ("md5", "253f8cb515780f3b799900260a226db6")),
    Case("fetch into a path whose parent is a file",
         lambda t: ["weights", "fetch", "--output", write_bytes(t / "afile", b"x") + "/vgg19.h5"], 2,
         ("afile",)),
    Case("convert: unknown format", lambda t: ["weights", "convert", CONTENT, "--output", "w.h5"], 2,
         ("cannot tell the format", "--format")),
    Case("convert: malicious pickle", lambda t: _unpickle_bomb(t, zip_format=False), 2,
         ("refusing", "os", "malicious")),
    Case("convert: malicious pickle in a zip", lambda t: _unpickle_bomb(t, zip_format=True), 2,
         ("refusing", "os", "malicious")),
    # resources
    Case("--size too large for the memory", lambda t: stylize("--size", "100000"), 1,
         ("needs about", "use --size", "or smaller")),
]


@pytest.mark.parametrize("case", FAILURES, ids=[c.name for c in FAILURES])
def test_bad_input_fails_cleanly(case, tmp_path, real_weights_path, random_weights):
    if case.broken:
        broken_weights(random_weights, tmp_path / "w.h5", case.broken)
    args = case.args(tmp_path)
    before = snapshot(tmp_path)
    weights = {"real": real_weights_path, "nowhere": tmp_path / "not-here.h5"}.get(case.weights)
    started = time.perf_counter()
    proc = run_cli(args, tmp_path, weights=weights)
    seconds = time.perf_counter() - started
    line = the_error_line(proc, case.code, case.words, case.name)
    assert snapshot(tmp_path) == before, line
    assert not os.path.exists(tmp_path / "PWNED"), "the pickle ran code"
    # Everything here is refused before any real work (bombs before decoding, memory before allocating).
    assert seconds < 30, seconds


def test_the_memory_refusal_allocates_nothing(tmp_path, real_weights_path):
    """--size 100000 would need tens of GB: the refusal comes from the estimate, so the process never
    grows past an interpreter with NumPy (measured as the peak resident memory of the child)."""
    probe = ("import resource, subprocess, sys; "
             "p = subprocess.run([sys.executable, '-m', 'handnst', 'stylize', sys.argv[1], sys.argv[2], "
             "'-o', 'out.png', '--size', '100000'], capture_output=True, text=True); "
             "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    proc = subprocess.run([sys.executable, "-c", probe, CONTENT, STYLE], cwd=tmp_path, env=_env(real_weights_path),
                          capture_output=True, text=True, timeout=120)
    code, peak_kb = map(int, proc.stdout.split())
    assert code == 1
    assert peak_kb < 600 * 1024, f"peak {peak_kb / 1024:.0f} MB"
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_folder_is_refused_before_running(tmp_path, monkeypatch):
    """Function level, independent of who runs the tests: creating the probe file fails."""
    import tempfile

    from handnst.errors import InputError
    from handnst.image import check_output_path

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(InputError, match="not writable"):
        check_output_path(tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ valid but unusual images
#
# Each file is two flat halves whose colours are known; the decoded (upright, RGB, alpha on white)
# picture must show them. Two iterations of stylization from the content already blend flat halves
# towards each other and the style's colours (measured: the difference between the halves keeps
# 20-75% of its length), but keep the *direction* of that difference (cosine 0.8-1.0). A wrong
# decoding reverses it (black instead of white behind transparency, CMYK inverted), removes it
# (16-bit values saturated to white, a sideways photo's top and bottom halves) or turns the picture.

WHITE, BLACK, RED, BLUE = (255, 255, 255), (0, 0, 0), (220, 30, 30), (30, 40, 200)


def _gray(path):
    halves(48, 32, 40, 215, mode="L").save(path)
    return (40,) * 3, (215,) * 3


def _gray_alpha(path):
    img = halves(48, 32, (0, 0), (0, 255), mode="LA")   # left: transparent (stored black), right: opaque black
    img.save(path)
    return WHITE, BLACK


def _palette_gif(path):
    img = Image.new("P", (48, 32), 1)
    img.putpalette([0, 0, 0, *BLUE] + [0, 0, 0] * 254)
    img.paste(0, (0, 0, 24, 32))                        # left: palette index 0, the transparent one
    img.save(path, transparency=0)
    return WHITE, BLUE


def _rgba(path):
    img = halves(48, 32, (0, 0, 0, 0), (*RED, 255), mode="RGBA")
    img.save(path)
    return WHITE, RED


def _cmyk_jpeg(path):
    halves(48, 32, RED, BLUE).convert("CMYK").save(path, quality=95)
    return RED, BLUE


def _png16(path):
    values = np.full((32, 48), 5140, dtype=np.uint16)   # 5140 / 257 = 20
    values[:, :24] = 60395                              # 60395 / 257 = 235
    Image.fromarray(values).save(path)                  # a 16-bit grayscale PNG
    assert Image.open(path).mode.startswith("I")
    return (235,) * 3, (20,) * 3


def _exif_rotated(path):
    """Upright the picture is 32 wide and 48 tall, bright on top; stored on its side with orientation 6."""
    upright = halves(32, 48, (230, 230, 230), (25, 25, 25), vertical=True)
    stored = upright.transpose(Image.Transpose.ROTATE_90)   # what the camera wrote: 48x32, bright on the left
    exif = Image.Exif()
    exif[0x0112] = 6                                        # "rotate 90 degrees clockwise to display"
    stored.save(path, exif=exif, quality=95)
    return (230,) * 3, (25,) * 3


UNUSUAL = {
    "grayscale L": ("gray.png", _gray),
    "grayscale with alpha LA": ("gray_alpha.png", _gray_alpha),
    "palette GIF with transparency": ("palette.gif", _palette_gif),
    "RGBA": ("rgba.png", _rgba),
    "CMYK JPEG": ("cmyk.jpg", _cmyk_jpeg),
    "16-bit PNG": ("gray16.png", _png16),
    "EXIF-rotated JPEG": ("rotated.jpg", _exif_rotated),
}


def _half_means(img, vertical):
    a = np.asarray(img.convert("RGB"), dtype=np.float64)
    if vertical:
        h = a.shape[0]
        return a[: h // 3].mean(axis=(0, 1)), a[h - h // 3:].mean(axis=(0, 1))
    w = a.shape[1]
    return a[:, : w // 3].mean(axis=(0, 1)), a[:, w - w // 3:].mean(axis=(0, 1))


@pytest.mark.parametrize("name", list(UNUSUAL))
@pytest.mark.parametrize("role", ["content", "style"])
def test_unusual_images_work_end_to_end(name, role, tmp_path, real_weights_path):
    filename, make = UNUSUAL[name]
    path = tmp_path / filename
    first, second = make(path)
    rotated = name.startswith("EXIF")
    stored_size = Image.open(path).size
    # Decoding: the expected colours, upright.
    decoded = load_image(str(path))
    assert decoded.mode == "RGB"
    assert decoded.size == (stored_size[::-1] if rotated else stored_size)
    for got, want in zip(_half_means(decoded, rotated), (first, second)):
        assert np.abs(got - np.asarray(want)).max() < 12, (got, want)
    before = set(snapshot(tmp_path))

    if role == "content":
        args = stylize("--size", "32", "--iters", "2", content=str(path))
    else:
        args = stylize("--size", "32", "--iters", "2", style=str(path))
    proc = run_cli(args, tmp_path, weights=real_weights_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert set(snapshot(tmp_path)) == before | {"out.png"}
    out = Image.open(tmp_path / "out.png")
    out.load()
    assert out.mode == "RGB"
    record(f"valid: {name} as {role}", 0, proc.stdout.strip().splitlines()[0])
    if role == "style":
        assert out.size == resize_longer(load_image(CONTENT), 32).size
        return
    assert out.size == resize_longer(decoded, 32).size
    if rotated:
        assert out.height > out.width       # upright: taller than wide, as the stored pixels were not
    top_or_left, bottom_or_right = _half_means(out, rotated)
    expected = np.subtract(first, second, dtype=np.float64)
    got = top_or_left - bottom_or_right
    cosine = expected @ got / (np.linalg.norm(expected) * np.linalg.norm(got) + 1e-9)
    assert cosine > 0.7, (top_or_left, bottom_or_right, first, second)
    assert np.linalg.norm(got) > 0.15 * np.linalg.norm(expected), (top_or_left, bottom_or_right, first, second)


# ------------------------------------------------------------------------------------ runs

def _start(args, cwd, weights, stderr):
    return subprocess.Popen(
        [sys.executable, "-m", "handnst", *map(str, args)], cwd=cwd, env=_env(weights), stdout=subprocess.PIPE,
        stderr=stderr,
        # A shell without job control starts background jobs with SIGINT ignored; a user's terminal does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(condition, proc, seconds=60):
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "timed out waiting for the run to make progress"
        time.sleep(0.05)


def _interrupt_when(condition, proc):
    """Ctrl-C the run once `condition()` holds; returns its stderr as text (the run is killed if it hangs)."""
    try:
        _wait_for(condition, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return err.decode()


def test_ctrl_c_saves_the_best_image_so_far_and_exits_130(tmp_path, real_weights_path):
    """Run in a terminal (a pty), so that the progress bar is shown; Ctrl-C once it has moved."""
    import fcntl
    import pty
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))   # a 120-column terminal
    proc = _start(stylize("--size", "32", "--iters", "1000"), tmp_path, real_weights_path, slave)
    os.close(slave)
    screen = []

    def read_terminal():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:       # the child closed the terminal
                return
            if not data:
                return
            screen.append(data.decode("utf-8", "replace"))

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        _wait_for(lambda: "loss=" in "".join(screen), proc)     # the progress bar shows a finished iteration
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    os.close(master)
    text = "".join(screen)
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "handnst: error" not in text
    last = [part.strip() for part in re.split(r"[\r\n]+", text) if part.strip()][-1]
    assert re.fullmatch(r"handnst: interrupted after \d+ iterations; saved the best image so far to out\.png", last)
    record("Ctrl-C during stylize", proc.returncode, last)
    out = Image.open(tmp_path / "out.png")
    out.load()
    assert out.size == resize_longer(load_image(CONTENT), 32).size
    assert sorted(snapshot(tmp_path)) == ["out.png"]


def test_ctrl_c_leaves_only_complete_frames(tmp_path, real_weights_path):
    """--save-every 1 writes a frame per iteration; interrupted mid-run, every frame on disk decodes
    in full, the animation is written, and no temporary file remains."""
    proc = _start(stylize("--size", "32", "--iters", "1000", "--save-every", "1", "--json", "r.json", "-q"),
                  tmp_path, real_weights_path, subprocess.PIPE)
    err = _interrupt_when(lambda: (tmp_path / "out_0003.png").exists(), proc)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("handnst: interrupted after"), err
    files = sorted(snapshot(tmp_path))
    frames = [f for f in files if re.fullmatch(r"out_\d{4}\.png", f)]
    assert len(frames) >= 3
    assert files == sorted(frames + ["out.png", "out_progress.gif", "r.json"]), files
    for name in frames + ["out.png"]:
        with Image.open(tmp_path / name) as frame:
            frame.load()                   # a half-written PNG would fail here
            assert frame.size == resize_longer(load_image(CONTENT), 32).size
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["stopped"] == "interrupted" and report["frames"] == frames


def test_nan_in_the_loss_stops_with_a_message_and_keeps_the_best_image(tmp_path, real_weights_path):
    """beta = 1e32: the first evaluation is finite, the next one overflows float32 to inf."""
    proc = run_cli(stylize("--size", "32", "--iters", "3", "--content-weight", "0", "--style-weight", "1e32", "-q"),
                   tmp_path, real_weights_path)
    line = the_error_line(proc, 1, ("NaN or infinite", "best image so far was saved to out.png"),
                          "NaN/Inf in the loss (--style-weight 1e32)")
    assert "smaller loss weights" in line
    out = Image.open(tmp_path / "out.png")
    out.load()
    assert out.size == resize_longer(load_image(CONTENT), 32).size
    assert sorted(snapshot(tmp_path)) == ["out.png"]


# -------------------------------------------------------------------------------- downloads

class _Server:
    """A local HTTP server whose one file is `body`, declared as `length` bytes, sent `chunk` bytes at
    a time every `pause` seconds (slow), and cut off where the body ends (broken)."""

    def __init__(self, body, length=None, chunk=1 << 16, pause=0.0):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(length or len(body)))
                self.end_headers()
                try:
                    for start in range(0, len(body), chunk):
                        self.wfile.write(body[start:start + chunk])
                        self.wfile.flush()
                        time.sleep(pause)
                        if outer.stopping:
                            return
                except OSError:
                    return
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.stopping = False
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/vgg19_notop.h5"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping = True
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("broken", [False, True], ids=["wrong md5", "connection closed early"])
def test_a_bad_download_writes_nothing(broken, tmp_path):
    body = b"not the Keras file " * 1000
    with _Server(body, length=len(body) * 10 if broken else None) as server:
        proc = run_cli(["weights", "fetch", "--source", "keras", server.url, "--output", "vgg19.h5"], tmp_path)
    words = ("stopped after", "try again") if broken else ("md5", "damaged", "try again")
    the_error_line(proc, 1, words, f"fetch from a URL: {'connection closed early' if broken else 'wrong md5'}",
                   extra_lines_allowed=True)
    assert snapshot(tmp_path) == {}


def test_an_interrupted_download_leaves_nothing_half_written(tmp_path):
    body = b"\0" * (1 << 22)
    with _Server(body, chunk=1 << 12, pause=0.02) as server:
        proc = _start(["weights", "fetch", "--source", "keras", server.url, "--output", "vgg19.h5"], tmp_path,
                      None, subprocess.PIPE)
        # The download has started once its scratch file next to the output has data in it.
        err = _interrupt_when(lambda: any(size for name, size in snapshot(tmp_path).items()
                                          if name.endswith(".h5") and size), proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last == "handnst: interrupted", err
    record("Ctrl-C during `weights fetch` (download)", 130, last)
    assert snapshot(tmp_path) == {}
