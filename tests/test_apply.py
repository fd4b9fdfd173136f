"""Applying a trained network (issue 13): any photo size comes back at its size, several photos go to
a folder, and every bad model or photo is one line with exit code 2 and nothing written."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

import handnst
from handnst import apply as A
from handnst.image import load_image, preprocess, sample_path
from handnst.networks.transform import TransformNet

CONTENT = sample_path("content")


def run_cli(args, cwd, timeout=120):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "handnst", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("handnst: error: "), proc.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.h5"
    TransformNet(4, 1, seed=2).save(path, attrs={"style_image": "swirls.jpg"})
    return path


def photo(path, size, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def listing(folder):
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------------------------- arrays

@pytest.mark.parametrize("H, W", [(8, 8), (9, 13), (30, 17), (16, 21)])
def test_any_size_comes_back_at_its_size(H, W):
    net = TransformNet(4, 1, seed=1)
    x = np.random.default_rng(0).standard_normal((3, H, W)).astype(np.float32) * 50
    y = A.stylize_array(net, x)
    assert y.shape == (3, H, W)
    H4, W4 = A.padded_shape(H, W)
    assert H4 % 4 == 0 and W4 % 4 == 0 and 0 <= H4 - H < 4 and 0 <= W4 - W < 4
    padded = A.reflect_pad(x, H4, W4)
    # reflection about the last row / column: padded row H + i is row H - 2 - i
    for i in range(H4 - H):
        assert np.array_equal(padded[:, H + i, :W], x[:, H - 2 - i, :])
    for j in range(W4 - W):
        assert np.array_equal(padded[:, :H, W + j], x[:, :, W - 2 - j])
    np.testing.assert_array_equal(y, net.forward(padded[None], cache=False)[0, :, :H, :W])


def test_multiples_of_4_are_not_padded():
    net = TransformNet(4, 1, seed=1)
    x = np.random.default_rng(1).standard_normal((3, 12, 16)).astype(np.float32)
    np.testing.assert_array_equal(A.stylize_array(net, x), net.forward(x[None], cache=False)[0])


def test_apply_api_sizes_and_preserve_color(model):
    img = load_image(CONTENT)
    out = handnst.apply(model, CONTENT, size=50)
    assert out.size == (50, round(img.size[1] * 50 / img.size[0]))
    kept = A.apply(model, [CONTENT], size=50, preserve_color=True)[0]
    # the photo's chrominance (I, Q of YIQ) is back: compare against the photo at that size
    from handnst.image import rgb_to_yiq
    small = np.asarray(img.resize(kept.size, Image.Resampling.LANCZOS), dtype=np.float64) / 255
    got = rgb_to_yiq(np.asarray(kept, dtype=np.float64) / 255)
    want = rgb_to_yiq(small)
    assert np.abs(got[..., 1:] - want[..., 1:]).mean() < 0.02


def test_memory_check_names_a_size_that_fits():
    with pytest.raises(handnst.errors.InputError, match=r"use --size \d+ or smaller"):
        A.check_memory(32, 4000, 3000, available=200 * 2 ** 20)


def test_shipped_model_loads_and_stylizes():
    path = A.shipped_model_path()
    if not os.path.isfile(path):
        pytest.skip("no shipped model in this checkout")
    net = A.load_model(path)
    assert net.width == 16
    picture = A.apply(net, CONTENT, size=64)
    assert picture.size[0] == 64
    x = preprocess(CONTENT, size=64)
    assert np.abs(preprocess(picture) - x).mean() > 5        # it changes the photo


# ------------------------------------------------------------------------------------------ CLI

def test_apply_help_teaches_with_examples(tmp_path):
    proc = run_cli(["apply", "--help"], tmp_path)
    assert proc.returncode == 0
    assert "handnst apply" in proc.stdout.split("examples:")[1]
    for option in ("-o", "--size", "--device", "--preserve-color"):
        assert option in proc.stdout


def test_one_photo_to_a_file_several_to_a_folder(tmp_path, model):
    photo(tmp_path / "a.png", (21, 14))
    photo(tmp_path / "b.jpg", (18, 30), seed=1)
    proc = run_cli(["apply", model, "a.png", "-o", "one.png"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "one.png").size == (21, 14)
    proc = run_cli(["apply", model, "a.png", "b.jpg", "-o", "out"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert listing(tmp_path / "out") == ["a.png", "b.jpg"]
    assert Image.open(tmp_path / "out" / "b.jpg").size == (18, 30)


def test_bad_models_are_one_line_exit_2_and_nothing_written(tmp_path, model, real_weights_path):
    photo(tmp_path / "a.png", (16, 16))
    (tmp_path / "notes.txt").write_text("hello")
    before = listing(tmp_path)
    one_error_line(run_cli(["apply", real_weights_path, "a.png", "-o", "o.png"], tmp_path), "VGG19")
    one_error_line(run_cli(["apply", "notes.txt", "a.png", "-o", "o.png"], tmp_path), "not an HDF5")
    one_error_line(run_cli(["apply", "missing.h5", "a.png", "-o", "o.png"], tmp_path), "does not exist")

    def damaged(name, change):
        path = tmp_path / name
        path.write_bytes(open(model, "rb").read())
        with h5py.File(path, "r+") as f:
            change(f)
        return name

    def nan(f):
        f["conv2/weight"][0, 0, 0, 0] = np.nan

    def wrong_shape(f):
        del f["norm1/scale"]
        f["norm1/scale"] = np.ones(5, dtype=np.float32)

    cases = [(damaged("missing.h5", lambda f: f.__delitem__("res1/conv2/weight")), "missing"),
             (damaged("nan.h5", nan), "NaN"), (damaged("shape.h5", wrong_shape), "shape")]
    before = listing(tmp_path)
    for name, word in cases:
        one_error_line(run_cli(["apply", name, "a.png", "-o", "o.png"], tmp_path), word)
    assert listing(tmp_path) == before


def test_an_unreadable_photo_stops_before_anything_is_written(tmp_path, model):
    photo(tmp_path / "a.png", (16, 16))
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    before = listing(tmp_path)
    one_error_line(run_cli(["apply", model, "a.png", "b.jpg", "-o", "out"], tmp_path), "b.jpg")
    one_error_line(run_cli(["apply", model, "b.jpg", "-o", "o.png"], tmp_path), "b.jpg")
    assert listing(tmp_path) == before
