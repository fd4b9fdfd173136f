"""Every style-transfer command, run as a user runs it: `python -m handnst ...` in a subprocess.

Tiny sizes and a few iterations, with the real weights (the `real_weights_path` fixture, passed on
through HANDNST_WEIGHTS). The subprocesses run BLAS on one thread: on images of 32 pixels more
threads only add overhead (and on a busy machine they fight for the cores).
"""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from handnst.image import load_image, resize_longer, sample_path

CONTENT = sample_path("content")
STYLE = sample_path("style")
COMMANDS = ("stylize", "reconstruct", "texture", "grid", "demo")


def run(args, cwd, weights=None, timeout=300):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if weights:
        env["HANDNST_WEIGHTS"] = str(weights)
    return subprocess.run([sys.executable, "-m", "handnst", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def size_of(path, size):
    return resize_longer(load_image(path), size).size


def leftovers(folder):
    """Hidden temporary files that an atomic write would leave behind if it went wrong."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------------------------- help

@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_0_and_shows_an_example(command, tmp_path):
    proc = run([command, "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "example" in proc.stdout and f"handnst {command}" in proc.stdout.split("example")[1]


def test_main_help_lists_the_commands(tmp_path):
    proc = run(["--help"], tmp_path)
    assert proc.returncode == 0
    for command in COMMANDS:
        assert command in proc.stdout


def test_stylize_help_lists_every_option_of_the_issue(tmp_path):
    text = run(["stylize", "--help"], tmp_path).stdout
    for option in ("-o", "--size", "--iters", "--seed", "--init", "--content-weight", "--style-weight",
                   "--tv-weight", "--tv-exponent", "--content-layers", "--style-layers", "--style-layer-weights",
                   "--pooling", "--optimizer", "--lr", "--device", "--weights", "--preserve-color",
                   "--save-every", "--json", "--style-size", "--style-blend-weights"):
        assert option in text, option


# ---------------------------------------------------------------------------------- commands

@pytest.mark.slow
def test_stylize_writes_the_image_the_report_and_the_frames(real_weights_path, tmp_path):
    proc = run(["stylize", CONTENT, STYLE, "-o", "out.png", "--size", "40", "--iters", "4", "--save-every", "2",
                "--json", "report.json"], tmp_path, real_weights_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out.png"
    assert Image.open(out).size == size_of(CONTENT, 40)
    report = json.loads((tmp_path / "report.json").read_text())
    for key in ("total", "content", "style", "style_per_layer", "tv"):
        assert key in report["loss"]
    for key in ("iterations", "evaluations", "seconds", "seconds_per_evaluation", "size", "options"):
        assert key in report
    assert report["size"] == list(size_of(CONTENT, 40))
    assert report["iterations"] == len(report["history"]) >= 2
    assert report["evaluations"] >= report["iterations"]
    assert report["options"]["style_layers"] == ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
    frames = sorted(p.name for p in tmp_path.glob("out_0*.png"))
    expected = [f"out_{i:04d}.png" for i in range(2, report["iterations"] + 1, 2)]
    assert frames == expected and report["frames"] == expected
    gif = Image.open(tmp_path / "out_progress.gif")
    # The frames, then the final picture unless the last frame was taken at the last iteration.
    assert gif.n_frames == len(frames) + (report["iterations"] % 2 != 0)
    assert "out.png" in proc.stdout
    assert not leftovers(tmp_path)


@pytest.mark.slow
def test_stylize_options_reach_the_run(real_weights_path, tmp_path):
    proc = run(["stylize", CONTENT, STYLE, sample_path("coffee"), "-o", "out.jpg", "--size", "32", "--iters", "2",
                "--init", "noise", "--seed", "3", "--content-weight", "2", "--style-weight", "50",
                "--tv-weight", "1e-3", "--content-layers", "relu3_1", "--style-layers", "conv1_1", "conv2_1",
                "--style-layer-weights", "1", "3", "--style-blend-weights", "2", "1", "--pooling", "max",
                "--preserve-color", "--json", "r.json"], tmp_path, real_weights_path)
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "out.jpg").format == "JPEG"
    options = json.loads((tmp_path / "r.json").read_text())["options"]
    assert options["init"] == "noise" and options["seed"] == 3
    assert options["content_weight"] == 2 and options["style_weight"] == 50 and options["tv_weight"] == 1e-3
    assert options["content_layers"] == ["conv3_1"] and options["style_layers"] == ["conv1_1", "conv2_1"]
    assert options["style_layer_weights"] == [1, 3] and options["style_blend_weights"] == [2, 1]
    assert options["pooling"] == "max" and options["preserve_color"] is True


@pytest.mark.slow
def test_reconstruct_and_texture_write_their_pictures(real_weights_path, tmp_path):
    proc = run(["reconstruct", CONTENT, "--layer", "conv3_1", "-o", "rec.png", "--size", "32", "--iters", "3"],
               tmp_path, real_weights_path)
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "rec.png").size == size_of(CONTENT, 32)
    proc = run(["texture", STYLE, "--layers", "conv1_1", "conv2_1", "-o", "tex.webp", "--size", "32",
                "--iters", "3", "--json", "t.json"], tmp_path, real_weights_path)
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "tex.webp").size == size_of(STYLE, 32)
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["loss"]["content"] == 0 and set(report["loss"]["style_per_layer"]) == {"conv1_1", "conv2_1"}


@pytest.mark.slow
def test_grid_writes_one_labelled_picture(real_weights_path, tmp_path):
    proc = run(["grid", CONTENT, STYLE, "-o", "grid.png", "--ratios", "1e-3", "1e-2", "--size", "32",
                "--iters", "1", "--json", "g.json"], tmp_path, real_weights_path)
    assert proc.returncode == 0, proc.stderr
    cell_w, cell_h = size_of(CONTENT, 32)
    picture = Image.open(tmp_path / "grid.png")
    assert picture.width >= 2 * cell_w and picture.height >= 5 * cell_h
    report = json.loads((tmp_path / "g.json").read_text())
    assert len(report["cells"]) == 10 and report["ratios"] == [1e-3, 1e-2]


@pytest.mark.slow
def test_demo_writes_its_picture_in_the_current_folder(real_weights_path, tmp_path):
    proc = run(["demo", "--size", "32", "--iters", "2"], tmp_path, real_weights_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "handnst-demo.png"
    assert Image.open(out).size == size_of(CONTENT, 32)
    assert str(out) in proc.stdout


# ------------------------------------------------------------------ failures before running

@pytest.mark.parametrize("args, words", [
    (["stylize", CONTENT, STYLE, "-o", "out.png", "--iters", "0"], "--iters"),
    (["stylize", CONTENT, STYLE, "-o", "out.png", "--style-weight", "nan"], "finite"),
    (["stylize", CONTENT, STYLE, "-o", "out.png", "--style-layers", "conv6_1"], "unknown VGG19 layer"),
    (["stylize", CONTENT, STYLE, "-o", "out.xyz"], "extension"),
    (["stylize", CONTENT, STYLE, "-o", "no/such/folder/out.png"], "does not exist"),
    (["stylize", CONTENT, "missing.jpg", "-o", "out.png"], "does not exist"),
    (["stylize", CONTENT, STYLE, "-o", "out.png", "--init", "missing.png"], "missing.png"),
    (["stylize", CONTENT, STYLE, "-o", "out.png", "--size", "10"], "needs at least 16x16"),
    (["texture", STYLE, "-o", "t.png", "--init", "content"], "no content image"),
    (["stylize", CONTENT, STYLE, "-o", "out.png", "--json", "."], "directory"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(args, words, tmp_path):
    # No weights are needed (or found: HANDNST_WEIGHTS points nowhere) because nothing gets that far.
    proc = run(args, tmp_path, weights=tmp_path / "not-there.h5")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("handnst: error: ") and words in lines[0]
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_size_the_memory_cannot_hold_is_refused_with_a_size_that_fits(tmp_path):
    proc = run(["stylize", CONTENT, STYLE, "-o", "out.png", "--size", "100000"], tmp_path,
               weights=tmp_path / "not-there.h5")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs about" in lines[0] and "or smaller" in lines[0]
    suggested = int(lines[0].split("use --size ")[1].split()[0])
    assert 16 <= suggested < 100000
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_loss_that_is_never_finite_is_one_line_exit_1_and_nothing_written(real_weights_path, tmp_path):
    proc = run(["stylize", CONTENT, STYLE, "-o", "out.png", "--size", "32", "--iters", "3",
                "--style-weight", "1e308"], tmp_path, real_weights_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("handnst: error: ") and "NaN or infinite" in lines[-1]
    assert not any("Warning" in line or "Traceback" in line for line in lines)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_run_saves_the_best_image_and_exits_130(tmp_path, capsys):
    # _finish is what the CLI does with a Result; a Ctrl-C'd one must still be saved.
    import argparse

    import numpy as np

    from handnst.cli import common as cli
    from handnst.transfer import Result
    picture = Image.new("RGB", (20, 10), (10, 200, 30))
    result = Result(image=picture, array=np.zeros((3, 10, 20), np.float32), history=[], iterations=3,
                    evaluations=4, timings={"seconds": 1.0, "seconds_per_evaluation": 0.25},
                    loss={"total": 5.0, "content": 1.0, "style": 0.004, "style_per_layer": {}, "tv": 0.0},
                    stopped="interrupted", message="interrupted")
    args = argparse.Namespace(output=str(tmp_path / "out.png"), json=str(tmp_path / "r.json"), quiet=True)
    assert cli._finish(args, result) == 130
    assert Image.open(tmp_path / "out.png").size == (20, 10)
    assert json.loads((tmp_path / "r.json").read_text())["stopped"] == "interrupted"
    assert "saved the best image so far to" in capsys.readouterr().err

    result.stopped, result.message = "nonfinite", "the loss became NaN or infinite at evaluation 5"
    args.output, args.json = str(tmp_path / "nan.png"), None
    with pytest.raises(cli.HandnstError) as info:
        cli._finish(args, result)
    assert info.value.exit_code == 1 and "saved to" in str(info.value)
    assert (tmp_path / "nan.png").exists()


@pytest.mark.slow
def test_ctrl_c_in_a_real_run_saves_the_best_image_and_exits_130(real_weights_path, tmp_path):
    import signal
    import time
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", HANDNST_WEIGHTS=str(real_weights_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "handnst", "stylize", CONTENT, STYLE, "-o", "out.png", "--size", "40",
         "--iters", "1000", "--json", "r.json"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        # A shell without job control starts background jobs with SIGINT ignored; a user's terminal does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = proc.stderr.readline()          # printed once every check has passed, after the network has loaded
        assert "stylization at" in first, first
        time.sleep(6)                            # long enough for the weights and a few iterations
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "saved the best image so far to out.png" in err and "Traceback" not in err
    assert Image.open(tmp_path / "out.png").size == size_of(CONTENT, 40)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["stopped"] == "interrupted" and report["iterations"] < 1000
    assert not leftovers(tmp_path)
