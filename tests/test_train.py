"""Training the feed-forward network (issue 13): the loss falls, resuming is exact, the data are
reproducible, and the command fails cleanly. Tiny sizes (crops of 32 pixels, networks of width 4)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import handnst
from handnst import train as T
from handnst.data import PhotoCrops, bundled_photos_dir, scan_photos
from handnst.errors import InputError
from handnst.image import sample_path
from handnst.networks.vgg import load_vgg19, random_vgg19

STYLE = sample_path("style")
TINY = dict(size=32, batch=2, width=4, residual_blocks=1)


def run_cli(args, cwd, weights=None, timeout=300):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("HANDNST_WEIGHTS", None)
    if weights:
        env["HANDNST_WEIGHTS"] = str(weights)
    return subprocess.run([sys.executable, "-m", "handnst", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def vgg_max(real_weights_path):
    return load_vgg19(real_weights_path, pooling="max")


@pytest.fixture(scope="module")
def random_vgg_max():
    return random_vgg19(3, pooling="max")


def photo_folder(folder, n=3, size=(40, 30)):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(5)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


# ------------------------------------------------------------------------------------------ data

def test_bundled_photos_exclude_the_held_out_samples():
    photos, skipped = scan_photos(bundled_photos_dir())
    names = {os.path.basename(p) for p in photos}
    assert len(photos) >= 5 and not skipped
    assert not names & {"chelsea.jpg", "coffee.jpg"}


def test_crops_are_reproducible_by_seed_and_state(tmp_path):
    folder = photo_folder(tmp_path / "photos")
    a = PhotoCrops(folder, size=16, seed=1)
    b = PhotoCrops(folder, size=16, seed=1)
    first = a.batch(3)
    assert first.shape == (3, 3, 16, 16) and first.dtype == np.float32
    assert np.array_equal(first, b.batch(3))
    assert not np.array_equal(first, PhotoCrops(folder, size=16, seed=2).batch(3))
    state = a.state()
    json.dumps(state)                                    # travels inside a checkpoint
    nxt = a.batch(2)
    b.set_state(state)
    assert np.array_equal(nxt, b.batch(2))


def test_data_folder_is_searched_recursively_and_unreadable_files_counted_once(tmp_path):
    folder = photo_folder(tmp_path / "photos", n=2)
    photo_folder(folder / "sub", n=1)
    (folder / "notes.txt").write_text("not a photo")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    (folder / ".hidden.png").write_bytes(b"ignored")
    lines = []
    crops = PhotoCrops(folder, size=16, warn=lines.append)
    assert len(crops) == 3
    assert len(lines) == 1 and "skipped 2 of 5 files" in lines[0]


def test_empty_or_photo_less_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no files"):
        PhotoCrops(tmp_path / "empty", size=16)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="none of them a readable image"):
        PhotoCrops(tmp_path / "text", size=16)


# ---------------------------------------------------------------------------------------- training

def test_loss_falls_on_a_tiny_run(vgg_max):
    result = T.train(STYLE, iters=40, lr=3e-3, vgg=vgg_max, **TINY)
    assert result.step == 40 and len(result.history) == 40
    summary = result.loss_summary()
    assert summary["last"]["total"] < 0.8 * summary["first"]["total"], summary
    assert summary["last"]["style"] < summary["first"]["style"]
    record = result.history[-1]
    assert set(record) >= {"step", "total", "content", "style", "tv", "style_per_layer", "seconds"}
    assert np.isfinite(record["total"])


def test_resume_continues_bit_for_bit(tmp_path, random_vgg_max):
    options = dict(TINY, vgg=random_vgg_max, style_weight=1e-3, seed=4)
    straight = T.train(STYLE, iters=6, **options)
    ckpt = tmp_path / "run.ckpt.h5"
    first = T.train(STYLE, iters=3, checkpoint=ckpt, checkpoint_every=3, **options)
    assert first.checkpoint == os.fspath(ckpt) and os.path.isfile(ckpt)
    resumed = T.train(STYLE, iters=6, resume=ckpt, **options)
    assert resumed.resumed_from == 3 and resumed.step == 6
    for name, p in straight.net.params.items():
        assert np.array_equal(p, resumed.net.params[name]), name
    assert [h["total"] for h in resumed.history] == [h["total"] for h in straight.history]


def test_resume_refuses_other_options(tmp_path, random_vgg_max):
    ckpt = tmp_path / "run.ckpt.h5"
    T.train(STYLE, iters=1, checkpoint=ckpt, checkpoint_every=1, vgg=random_vgg_max, **TINY)
    with pytest.raises(InputError, match="width"):
        T.train(STYLE, iters=2, resume=ckpt, vgg=random_vgg_max, **dict(TINY, width=8))
    with pytest.raises(InputError, match="step 1 already"):
        T.train(STYLE, iters=1, resume=ckpt, vgg=random_vgg_max, **TINY)


def test_output_layer_starts_at_the_photos_scale():
    from handnst.networks.transform import TransformNet
    net = TransformNet(4, 1, seed=0)
    x = np.random.default_rng(0).normal(10.0, 60.0, (2, 3, 16, 16)).astype(np.float32)
    assert float(net.forward(x, cache=False).std()) < 5
    T.calibrate_output(net, x)
    y = net.forward(x, cache=False)
    for c in range(3):
        np.testing.assert_allclose(y[:, c].std(), x[:, c].std(), rtol=1e-3)
        np.testing.assert_allclose(y[:, c].mean(), x[:, c].mean(), rtol=1e-3, atol=1e-2)


def test_adam_matches_the_formula():
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(5)
    params, adam = {"w": p0.copy()}, None
    adam = T.Adam(params, lr=0.1)
    m = v = np.zeros(5)
    p = p0.copy()
    for t in range(1, 4):
        g = rng.standard_normal(5)
        adam.step(params, {"w": g})
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        p = p - 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        np.testing.assert_allclose(params["w"], p, rtol=1e-12, atol=1e-12)


def test_style_grams_are_per_position_so_the_style_size_does_not_matter(random_vgg_max):
    from handnst.image import preprocess
    small = preprocess(STYLE, size=64)
    loss = T.PerceptualLoss(random_vgg_max, small, 32)
    for n in loss.style_layers:
        h, w = random_vgg_max.forward(small, [n]) [n].shape[1:]
        scale = (32 // T._scale(n)) ** 2 / (h * w)
        F = random_vgg_max.forward(small, [n], layout="matrix")[n]
        np.testing.assert_allclose(loss.gram_targets[n], (F @ F.T) * scale, rtol=1e-4)


def test_handnst_train_is_callable_in_any_import_order():
    import handnst.train  # noqa: F401  (the submodule becomes an attribute of the package)
    assert callable(handnst.train) and callable(handnst.apply)
    assert handnst.train.DEFAULT_LR == 1e-3


# ------------------------------------------------------------------------------------------- CLI

def test_train_help_teaches_with_examples(tmp_path):
    proc = run_cli(["train", "--help"], tmp_path)
    assert proc.returncode == 0
    assert "handnst train" in proc.stdout.split("examples:")[1]
    for option in ("--data", "--size", "--batch", "--iters", "--lr", "--width", "--residual-blocks", "--seed",
                   "--content-weight", "--style-weight", "--tv-weight", "--content-layers", "--style-layers",
                   "--device", "--weights", "--json", "--checkpoint-every", "--resume", "--save-every"):
        assert option in proc.stdout, option


def test_train_command_writes_model_report_and_frames(tmp_path, real_weights_path):
    proc = run_cli(["train", STYLE, "-o", "m.h5", "--size", "32", "--batch", "1", "--iters", "2", "--width", "4",
                    "--residual-blocks", "1", "--save-every", "1", "--json", "r.json", "--checkpoint-every", "1"],
                   tmp_path, real_weights_path)
    assert proc.returncode == 0, proc.stderr
    net = handnst.load_transform_net(tmp_path / "m.h5")
    assert net.width == 4 and net.attrs["steps"] == 2
    assert net.attrs["training_options"]["size"] == 32
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["history"]) == 2 and "total" in report["history"][0]
    assert report["command"][:2] == ["handnst", "train"]
    assert report["options"]["batch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["m.ckpt.h5", "m.h5", "m_0001.png", "m_0002.png", "m_progress.gif",
                                            "r.json"]


def test_train_empty_data_folder_is_one_line_exit_2(tmp_path, real_weights_path):
    (tmp_path / "empty").mkdir()
    proc = run_cli(["train", STYLE, "-o", "m.h5", "--data", "empty", "--size", "32", "--iters", "1"], tmp_path,
                   real_weights_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("handnst: error:") and "empty" in lines[0]
    assert sorted(os.listdir(tmp_path)) == ["empty"]


def test_ctrl_c_writes_a_checkpoint_that_resumes(tmp_path, real_weights_path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", HANDNST_WEIGHTS=str(real_weights_path))
    args = [sys.executable, "-m", "handnst", "train", STYLE, "-o", "m.h5", "--size", "32", "--batch", "1",
            "--width", "4", "--residual-blocks", "1", "--checkpoint-every", "1"]
    proc = subprocess.Popen(args + ["--iters", "100000"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "m.ckpt.h5").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err.decode() and "--resume" in err.decode()
    step = T.load_checkpoint(tmp_path / "m.ckpt.h5")["step"]
    assert step >= 1
    assert handnst.load_transform_net(tmp_path / "m.h5").attrs["steps"] == step
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]
    done = subprocess.run(args + ["--iters", str(step + 1), "--resume"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"steps {step + 1}..{step + 1}" in done.stdout


def test_loss_text_says_whether_the_loss_fell_or_rose():
    from handnst.cli.train import _loss_text
    summary = {"window": 1, "first": {"total": 2.0}, "last": {"total": 1.5}, "fall": 0.25}
    assert _loss_text(summary).endswith("(means of the first and last 1 steps, 25% lower)")
    rose = {"window": 1, "first": {"total": 2.83e12}, "last": {"total": 3.667e12}, "fall": 1 - 3.667 / 2.83}
    assert _loss_text(rose).endswith(", 30% higher)")
    assert _loss_text({}) == ""
