"""Coarse-to-fine runs and the perceptual controls (colour, space, scale) through the Python API and the
command line: the plumbing with a stand-in for the optimization (fast), one real tiny run of each, and the
errors a user can cause."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from handnst import controls, transfer
from handnst.errors import InputError, RunError
from handnst.image import load_image, match_color, rgb_to_yiq, sample_path

CONTENT = sample_path("content")        # 451 x 300
STYLE = sample_path("style")
OTHER = sample_path("coffee")


@pytest.fixture
def runs(monkeypatch):
    """Replace the optimization by a stand-in that records what each level was given."""
    calls = []

    def fake_run(**kw):
        calls.append(kw)
        H, W = kw["size_hw"]
        x0 = kw.get("x0")
        if callable(x0):        # a level's start, made from the pictures in VGG's space (here: all ones)
            x0 = kw["x0"] = x0(lambda img: np.ones((3, img.size[1], img.size[0]), dtype=np.float32))
        array = np.zeros((3, H, W), dtype=np.float32) if x0 is None else x0
        return transfer.Result(image=Image.new("RGB", (W, H)), array=array, history=[],
                               timings={"seconds": 1.0, "setup_seconds": 0.5, "seconds_per_evaluation": 0.5,
                                        "seconds_per_iteration": 1.0},
                               iterations=kw["options"]["iters"], evaluations=kw["options"]["iters"] + 1,
                               loss={"total": float(W)}, stopped="max_iterations",
                               options=dict(kw["options"]), frames=[])
    monkeypatch.setattr(transfer, "_run", fake_run)
    return calls


def test_coarse_to_fine_plan_reaches_every_level(runs):
    r = transfer.stylize(CONTENT, STYLE, size=128, start_size=32, iters=40, style_size=96, save_every=5)
    assert [c["size_hw"] for c in runs] == [(21, 32), (42, 64), (85, 128)]
    assert [c["options"]["iters"] for c in runs] == [40, 20, 20]
    # paper normalization: alpha times final pixels / level pixels, exactly alpha at the last level
    assert [c["alpha"] for c in runs] == pytest.approx([85 * 128 / (21 * 32), 85 * 128 / (42 * 64), 1.0])
    assert [c["style_imgs"][0].size[0] for c in runs] == [24, 48, 96]         # the style follows the content
    assert runs[0]["x0"] is None and runs[1]["x0"].shape == (3, 42, 64) and runs[2]["x0"].shape == (3, 85, 128)
    # each level starts from its own content plus the change the level below made (zeros - ones here)
    np.testing.assert_allclose(runs[1]["x0"], 0.0, atol=1e-6)
    assert [c["save_every"] for c in runs] == [None, None, 5]                 # frames at the last level only
    assert r.iterations == 80 and r.evaluations == 83 and r.timings["seconds"] == 3.0
    report = r.report()
    assert [lv["size"] for lv in report["levels"]] == [[32, 21], [64, 42], [128, 85]]
    assert report["options"]["level_sizes"] == [32, 64, 128] and report["options"]["iters"] == 40
    json.dumps(report)


def test_single_size_runs_are_unchanged_and_size_invariant_rescales_alpha(runs):
    r = transfer.stylize(CONTENT, STYLE, size=64, iters=7)
    assert runs[-1]["alpha"] == 1.0 and not r.levels and "levels" not in r.report()
    transfer.stylize(CONTENT, STYLE, size=64, iters=7, normalization="size-invariant", content_weight=2.0)
    assert runs[-1]["alpha"] == pytest.approx(2.0 * 256 * 256 / (64 * 42))


def test_texture_coarse_to_fine(runs):
    r = transfer.texture(STYLE, size=64, start_size=32, iters=10, level_iters=[10, 3])
    assert [c["size_hw"][1] for c in runs] == [32, 64] and [c["options"]["iters"] for c in runs] == [10, 3]
    assert len(r.levels) == 2


def test_style_scale_sizes_the_style_from_the_content(runs):
    transfer.stylize(CONTENT, STYLE, size=64, iters=3, style_scale=2.0)
    assert max(runs[-1]["style_imgs"][0].size) == 128 and runs[-1]["options"]["style_scale"] == 2.0
    transfer.stylize(CONTENT, STYLE, size=128, start_size=64, iters=3, style_scale=0.5)
    assert [max(c["style_imgs"][0].size) for c in runs[-2:]] == [32, 64]
    with pytest.raises(InputError, match="a larger --start-size: the style needs a longer side of 22"):
        transfer.stylize(CONTENT, STYLE, size=64, start_size=32, iters=3, style_scale=0.5)


def test_colour_controls(runs):
    transfer.stylize(CONTENT, STYLE, size=48, iters=3, color_control="histogram", color_match="pca")
    style = np.asarray(runs[-1]["style_imgs"][0], dtype=np.float64) / 255
    content = np.asarray(runs[-1]["content_img"], dtype=np.float64) / 255
    np.testing.assert_allclose(style.reshape(-1, 3).mean(0), content.reshape(-1, 3).mean(0), atol=0.03)
    assert runs[-1]["colour_source"] is None
    transfer.stylize(CONTENT, STYLE, size=48, iters=3, preserve_color=True)
    grey = np.asarray(runs[-1]["content_img"])
    assert (grey[..., 0] == grey[..., 2]).all() and runs[-1]["colour_source"] is not None


def test_regions_reach_the_loss_at_every_level(runs, tmp_path):
    left = np.zeros((30, 45))
    left[:, :20] = 1.0
    Image.fromarray((left * 255).astype(np.uint8)).save(tmp_path / "left.png")
    smask = tmp_path / "smask.png"
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(smask)
    transfer.stylize(CONTENT, None, regions=[(tmp_path / "left.png", STYLE, smask), (1 - left, OTHER)],
                     size=64, start_size=32, iters=3)
    for call in runs[-2:]:
        H, W = call["size_hw"]
        (m1, s1, sm1), (m2, s2, sm2) = call["regions"]
        assert m1.shape == m2.shape == (H, W) and sm1.shape == s1.size[::-1] and sm2 is None
        assert (m1 + m2).min() > 0.99


@pytest.mark.parametrize("kwargs, match", [
    (dict(style=None), "at least one style image"),
    (dict(regions=[("a.png",)]), "region 1 has 1 item"),
    (dict(regions=[]), "empty list"),
    (dict(color_control="lab"), "unknown colour control 'lab'"),
    (dict(color_match="sym"), "add --color-control histogram"),
    (dict(start_size=300, size=256), "must be smaller than --size 256"),
    (dict(start_size=64, size=None), "--start-size needs --size"),
    (dict(level_iters=[3]), "add --start-size"),
    (dict(normalization="pixels"), "unknown normalization"),
    (dict(style_scale=-1), "--style-scale must be a positive number"),
])
def test_bad_options_are_clear_errors(kwargs, match, runs):
    args = dict(style=STYLE, size=64, iters=3)
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        transfer.stylize(CONTENT, args.pop("style"), **args)
    assert not runs


def test_regions_and_a_style_together_or_uncovered_masks_are_errors(runs):
    half = np.zeros((43, 64))
    half[:, :32] = 1
    with pytest.raises(InputError, match="not both"):
        transfer.stylize(CONTENT, STYLE, regions=[(half, STYLE)], size=64)
    with pytest.raises(InputError, match="do not cover the picture: 50.0%"):
        transfer.stylize(CONTENT, None, regions=[(half, STYLE)], size=64)
    with pytest.raises(InputError, match="the content mask of region 2 is empty"):
        transfer.stylize(CONTENT, None, regions=[(np.ones((5, 5)), STYLE), (np.zeros((5, 5)), OTHER)], size=64)


def test_memory_check_knows_the_style_scale():
    with pytest.raises(RunError, match=r"use --style-scale \d+\.\d\d or smaller"):
        transfer.stylize(CONTENT, STYLE, size=64, style_scale=2000.0)


def test_colour_match_of_pictures_changes_only_the_palette():
    content = load_image(CONTENT)
    out = controls.apply_color_control(content, [load_image(STYLE)], "histogram", "sym")[1][0]
    a = rgb_to_yiq(np.asarray(out) / 255).reshape(-1, 3).mean(0)
    b = rgb_to_yiq(np.asarray(content) / 255).reshape(-1, 3).mean(0)
    np.testing.assert_allclose(a, b, atol=0.02)
    assert out.size == load_image(STYLE).size
    assert match_color is not None


# ---------------------------------------------------------------------------- real tiny runs

@pytest.fixture(scope="module")
def net(real_weights_path):
    from handnst.networks.vgg import load_vgg19
    return load_vgg19(real_weights_path)


@pytest.mark.slow
def test_real_coarse_to_fine_and_regions(net):
    r = transfer.stylize(CONTENT, STYLE, size=48, start_size=24, iters=4, net=net)
    assert r.size == (48, 32) and [lv["size"] for lv in r.levels] == [[24, 16], [48, 32]]
    assert all(np.isfinite(lv["loss"]["total"]) for lv in r.levels) and r.stopped != "nonfinite"
    half = np.zeros((32, 48))
    half[:16] = 1
    g = transfer.stylize(CONTENT, None, regions=[(half, STYLE), (1 - half, OTHER)], size=48, iters=3, net=net)
    assert g.size == (48, 32) and np.isfinite(g.loss["total"])


# ----------------------------------------------------------------------------- command line

def cli(args, cwd, weights):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               HANDNST_WEIGHTS=str(weights))
    return subprocess.run([sys.executable, "-m", "handnst", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_help_lists_the_new_options(tmp_path):
    text = cli(["stylize", "--help"], tmp_path, tmp_path / "none.h5").stdout
    for option in ("--start-size", "--level-factor", "--level-iters", "--normalization", "--color-control",
                   "--color-match", "--region", "--style-scale", "--preserve-color"):
        assert option in text, option
    assert "--start-size" in cli(["texture", "--help"], tmp_path, tmp_path / "none.h5").stdout


@pytest.mark.parametrize("args, words", [
    (["stylize", CONTENT, "-o", "out.png"], "give a STYLE image"),
    (["stylize", CONTENT, "-o", "out.png", "--region", "m.png"], "region 1 has 1 item"),
    (["stylize", CONTENT, STYLE, "-o", "out.png", "--color-match", "chol"], "add --color-control histogram"),
    (["stylize", CONTENT, STYLE, "-o", "out.png", "--start-size", "512"], "must be smaller than --size 256"),
    (["stylize", CONTENT, "-o", "out.png", "--region", "missing.png", STYLE], "the content mask of region 1"),
])
def test_cli_errors_are_one_line_exit_2(args, words, tmp_path):
    proc = cli(args, tmp_path, tmp_path / "not-there.h5")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("handnst: error: ") and words in lines[0], lines
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_coarse_to_fine_report_and_regions(real_weights_path, tmp_path):
    mask = np.zeros((32, 48), np.uint8)
    mask[:, :24] = 255
    Image.fromarray(mask).save(tmp_path / "left.png")
    Image.fromarray(255 - mask).save(tmp_path / "right.png")
    proc = cli(["stylize", CONTENT, "-o", "out.png", "--size", "48", "--start-size", "24", "--iters", "3",
                "--region", "left.png", STYLE, "--region", "right.png", OTHER, "--color-control", "histogram",
                "--style-scale", "1.5", "--json", "r.json", "-q"], tmp_path, real_weights_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert [lv["size"] for lv in report["levels"]] == [[24, 16], [48, 32]]
    assert report["options"]["color_control"] == "histogram" and report["options"]["style_scale"] == 1.5
    assert len(report["options"]["regions"]) == 2 and Image.open(tmp_path / "out.png").size == (48, 32)
