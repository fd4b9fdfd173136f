"""Tests of the Python API of handnst.transfer: stylize, reconstruct, texture, grid, and the checks
that run before anything expensive (options, image sizes, memory).

They use the real VGG19 weights (the `real_weights_path` fixture) at tiny sizes with a few
iterations; the network is loaded once for the module and handed to every call with `net=`.
"""

import math

import numpy as np
import pytest
from PIL import Image

from handnst import memory, transfer
from handnst.errors import InputError, RunError
from handnst.image import load_image, pixel_bounds, resize_longer, rgb_to_yiq, sample_path
from handnst.networks.vgg import min_image_size

CONTENT = sample_path("content")
STYLE = sample_path("style")
OTHER_STYLE = sample_path("coffee")
SIZE = 40


@pytest.fixture(scope="module")
def net(real_weights_path):
    from handnst.networks.vgg import load_vgg19
    return load_vgg19(real_weights_path)


def expected_size(path, size):
    return resize_longer(load_image(path), size).size


# ---------------------------------------------------------------------------------- stylize

@pytest.mark.slow
def test_stylize_result_fields_and_the_loss_goes_down(net):
    result = transfer.stylize(CONTENT, STYLE, size=SIZE, iters=6, net=net)
    width, height = expected_size(CONTENT, SIZE)
    assert isinstance(result.image, Image.Image) and result.image.mode == "RGB"
    assert result.image.size == (width, height) == result.size
    assert result.array.shape == (3, height, width) and result.array.dtype == np.float32
    assert 1 <= result.iterations <= 6 and result.evaluations >= result.iterations
    assert len(result.history) == result.iterations
    for key in ("total", "content", "style", "style_per_layer", "tv"):
        assert key in result.loss and key in result.history[-1]
    assert set(result.loss["style_per_layer"]) == {"conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"}
    # L-BFGS-B accepts only points that decrease the objective (Wolfe line search).
    totals = [h["total"] for h in result.history]
    assert all(b <= a for a, b in zip(totals, totals[1:]))
    assert totals[-1] < totals[0]
    # The reported loss is that of the returned image, and it is the objective's formula.
    parts = result.loss
    alpha, beta = transfer.DEFAULT_CONTENT_WEIGHT, transfer.DEFAULT_STYLE_WEIGHT
    assert math.isclose(parts["total"], alpha * parts["content"] + beta * parts["style"], rel_tol=1e-9)
    assert parts["total"] <= min(totals) * (1 + 1e-6)
    t = result.timings
    assert t["seconds"] > 0 and t["seconds_per_evaluation"] > 0
    assert math.isclose(t["seconds_per_evaluation"], t["seconds"] / result.evaluations)
    assert result.options["style_weight"] == beta and result.options["iters"] == 6
    report = result.report()
    for key in ("loss", "iterations", "evaluations", "seconds", "seconds_per_evaluation", "size", "options"):
        assert key in report
    assert report["size"] == [width, height]


@pytest.mark.slow
def test_stylize_the_image_is_the_array_deprocessed(net):
    from handnst.image import deprocess
    result = transfer.stylize(CONTENT, STYLE, size=32, iters=2, net=net)
    assert np.array_equal(np.asarray(result.image), np.asarray(deprocess(result.array, net.convention)))


@pytest.mark.slow
def test_stylize_respects_the_pixel_box_exactly(net):
    # A huge style weight from white noise drives many pixels against the box: none may leave it.
    result = transfer.stylize(CONTENT, STYLE, size=32, iters=8, init="noise", style_weight=1e9, net=net)
    lo, hi = pixel_bounds(net.convention)
    lo32 = lo.astype(np.float32).reshape(3, 1, 1)
    hi32 = hi.astype(np.float32).reshape(3, 1, 1)
    assert (result.array >= lo32).all() and (result.array <= hi32).all()
    at_bound = (result.array == lo32) | (result.array == hi32)
    assert at_bound.any(), "the test should push some pixels onto the bounds"


@pytest.mark.slow
def test_same_seed_same_picture_bit_for_bit_and_another_seed_differs(net):
    runs = [transfer.stylize(CONTENT, STYLE, size=32, iters=4, init="noise", seed=s, net=net) for s in (7, 7, 8)]
    assert np.array_equal(runs[0].array, runs[1].array)
    assert [h["total"] for h in runs[0].history] == [h["total"] for h in runs[1].history]
    assert not np.array_equal(runs[0].array, runs[2].array)


@pytest.mark.slow
def test_preserve_color_keeps_the_content_chrominance(net):
    content_rgb = np.asarray(resize_longer(load_image(CONTENT), SIZE), dtype=np.float64) / 255
    chroma = rgb_to_yiq(content_rgb)[:, :, 1:]

    def chroma_error(result):
        out = np.asarray(result.image, dtype=np.float64) / 255
        return np.abs(rgb_to_yiq(out)[:, :, 1:] - chroma)

    kept = transfer.stylize(CONTENT, STYLE, size=SIZE, iters=5, preserve_color=True, net=net)
    plain = transfer.stylize(CONTENT, STYLE, size=SIZE, iters=5, net=net)
    # Up to 8-bit rounding (and gamut clipping on a few pixels) the colours are the content's.
    assert np.median(chroma_error(kept)) < 3 / 255
    assert np.median(chroma_error(kept)) < np.median(chroma_error(plain)) / 3
    assert kept.options["preserve_color"] is True


@pytest.mark.slow
def test_blend_weights_select_and_mix_styles(net):
    options = dict(size=32, iters=3, net=net)
    single = transfer.stylize(CONTENT, STYLE, **options)
    # Weight 1 and 0 is exactly the first style alone (1 * G + 0 * G' == G in floating point).
    only_first = transfer.stylize(CONTENT, [STYLE, OTHER_STYLE], style_blend_weights=[1, 0], **options)
    assert np.array_equal(single.array, only_first.array)
    # Two copies of one style, blended half and half, are that style.
    halves = transfer.stylize(CONTENT, [STYLE, STYLE], style_blend_weights=[0.5, 0.5], **options)
    assert np.array_equal(single.array, halves.array)
    mixed = transfer.stylize(CONTENT, [STYLE, OTHER_STYLE], **options)
    assert not np.array_equal(single.array, mixed.array)
    assert mixed.options["styles"] == [STYLE, OTHER_STYLE]


@pytest.mark.slow
def test_style_size_and_init_file(net, tmp_path):
    init = tmp_path / "init.png"
    Image.new("RGB", (10, 7), (200, 30, 60)).save(init)
    result = transfer.stylize(CONTENT, STYLE, size=32, style_size=48, iters=1, init=str(init), net=net)
    assert result.image.size == expected_size(CONTENT, 32)
    assert result.options["init"] == str(init) and result.options["style_size"] == 48


@pytest.mark.slow
def test_frames_and_callback(net, tmp_path):
    seen, frames = [], []
    result = transfer.stylize(CONTENT, STYLE, size=32, iters=4, net=net, save_every=2, frame_dir=str(tmp_path),
                              on_frame=lambda i, img: frames.append((i, img.size)),
                              callback=lambda info: seen.append(info["iteration"]))
    assert seen == list(range(1, result.iterations + 1))
    assert [i for i, _ in frames] == [i for i in seen if i % 2 == 0]
    assert result.frames == [str(tmp_path / f"frame_{i:04d}.png") for i, _ in frames]
    for path in result.frames:
        assert Image.open(path).size == result.image.size
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary files left"


@pytest.mark.slow
def test_ctrl_c_returns_the_best_image_so_far(net):
    def interrupt(info):
        if info["iteration"] == 2:
            raise KeyboardInterrupt

    result = transfer.stylize(CONTENT, STYLE, size=32, iters=10, net=net, callback=interrupt)
    assert result.stopped == "interrupted"
    assert result.iterations == 2
    assert result.image.size == expected_size(CONTENT, 32)
    assert math.isfinite(result.loss["total"])


# ------------------------------------------------------------------ reconstruct, texture, grid

@pytest.mark.slow
def test_reconstruct_from_noise_matches_the_layer_better_and_better(net):
    result = transfer.reconstruct(CONTENT, "conv2_1", size=SIZE, iters=6, net=net)
    assert result.image.size == expected_size(CONTENT, SIZE)
    assert result.options["content_layers"] == ["conv2_1"] and result.options["style_layers"] == []
    assert result.options["init"] == "noise"
    assert result.loss["style"] == 0 and result.loss["content"] > 0
    assert result.loss["content"] < result.history[0]["content"]


@pytest.mark.slow
def test_texture_has_the_style_shape_and_no_content(net):
    result = transfer.texture(STYLE, ["conv1_1", "conv2_1"], size=SIZE, iters=4, net=net)
    assert result.image.size == expected_size(STYLE, SIZE)
    assert result.loss["content"] == 0
    assert set(result.loss["style_per_layer"]) == {"conv1_1", "conv2_1"}
    assert result.loss["style"] < result.history[0]["style"]


@pytest.mark.slow
def test_grid_composes_one_cell_per_layer_set_and_ratio(real_weights_path):
    results = []
    picture = transfer.grid(CONTENT, STYLE, ratios=(1e-3, 1e-1), layer_sets=transfer.GRID_LAYER_SETS[:2],
                            size=32, iters=1, weights=real_weights_path, results=results)
    assert len(results) == 4
    assert [(r.options["row"], r.options["column"]) for r in results] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [r.options["style_layers"] for r in results[::2]] == [["conv1_1"], ["conv1_1", "conv2_1"]]
    assert results[1].options["style_weight"] == pytest.approx(10.0)
    cell_w, cell_h = expected_size(CONTENT, 32)
    assert picture.width >= 2 * cell_w and picture.height >= 2 * cell_h


def test_the_default_grid_is_the_papers_figure_3():
    assert transfer.GRID_LAYER_SETS == (
        ("conv1_1",), ("conv1_1", "conv2_1"), ("conv1_1", "conv2_1", "conv3_1"),
        ("conv1_1", "conv2_1", "conv3_1", "conv4_1"), ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"))
    assert transfer.GRID_RATIOS == (1e-5, 1e-4, 1e-3, 1e-2)


# -------------------------------------------------------------- checks before anything runs

@pytest.mark.parametrize("options, words", [
    ({"iters": 0}, "iterations"),
    ({"iters": 2.5}, "iterations"),
    ({"size": -3}, "--size"),
    ({"style_weight": float("nan")}, "style weight"),
    ({"content_weight": -1}, "content weight"),
    ({"tv_exponent": 0.5}, "exponent"),
    ({"style_layers": ["conv9_9"]}, "unknown VGG19 layer"),
    ({"optimizer": "newton"}, "optimizer"),
    ({"init": "no-such-file.png"}, "neither"),
    ({"style_layer_weights": [1, 2]}, "one per style layer"),
    ({"lr": 0}, "learning rate"),
    ({"size": 8}, "needs at least 16x16"),
])
def test_bad_options_fail_before_the_weights_are_read(options, words, monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("the weights were loaded before the options were checked")

    monkeypatch.setattr("handnst.networks.vgg.load_vgg19", must_not_load)
    monkeypatch.setattr("handnst.weights.load_weights", must_not_load)
    with pytest.raises(InputError) as info:
        transfer.stylize(CONTENT, STYLE, **options)
    assert words in str(info.value)


def test_min_size_message_says_the_minimum_and_why():
    with pytest.raises(InputError) as info:
        transfer.check_min_size((40, 12), ["conv1_1", "conv5_1"], "content")
    message = str(info.value)
    assert "16x16" in message and "conv5_1" in message and "4 poolings" in message
    assert "--size 54" in message    # 16 * 40 / 12 rounded up: the longer side that makes the shorter 16
    transfer.check_min_size((16, 16), ["conv5_1"], "content")   # exactly the minimum is fine
    assert min_image_size(["conv3_1"]) == 4


def test_memory_estimate_grows_with_size_and_depth():
    small = transfer.estimate_memory((64, 64), ["conv1_1"])
    deeper = transfer.estimate_memory((64, 64), ["conv1_1", "conv5_1"])
    bigger = transfer.estimate_memory((512, 512), ["conv1_1", "conv5_1"])
    assert small < deeper < bigger
    parts = transfer.memory_breakdown((512, 512), ["conv4_2", "conv5_1"])
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total")
    # At least the maps the network must hold: conv1_1 and conv1_2 are 64 channels of 512 x 512 floats.
    assert parts["maps"] >= 2 * 64 * 512 * 512 * 4
    # L-BFGS-B keeps 10 pairs of float64 vectors of 3 * H * W numbers.
    assert parts["optimizer"] >= 2 * 10 * 3 * 512 * 512 * 8


def test_memory_check_refuses_with_a_size_that_fits():
    layers = ["conv4_2", "conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
    budget = 900 * 2 ** 20
    with pytest.raises(RunError) as info:
        transfer.check_memory((1500, 2000), layers, available=budget)
    message = str(info.value)
    assert "2000x1500" in message and "available" in message
    suggested = int(message.split("--size ")[1].split()[0])
    shape = (round(1500 * suggested / 2000), suggested)
    assert transfer.estimate_memory(shape, layers) <= memory.MEMORY_FRACTION * budget
    bigger = (round(1500 * (suggested + 8) / 2000), suggested + 8)
    assert transfer.estimate_memory(bigger, layers) > memory.MEMORY_FRACTION * budget
    # A run that fits passes and returns its estimate.
    assert transfer.check_memory((64, 64), layers, available=budget)["total"] > 0


def test_gpu_without_cupy_says_so():
    from handnst.backend import gpu_available
    if gpu_available():
        pytest.skip("a GPU is available here")
    with pytest.raises(InputError) as info:
        transfer.stylize(CONTENT, STYLE, device="gpu")
    assert "CuPy" in str(info.value) or "CUDA" in str(info.value)
