"""Tests of the benchmark's bookkeeping: FLOP counts, the GEMM probe, the report, the CLI entry.

A benchmark is not a test: nothing here asserts how fast anything is.
"""

import argparse
import json
import statistics

import pytest

from handnst import bench
from handnst.cli import bench as bench_cli
from handnst.backend import gpu_available
from handnst.errors import InputError
from handnst.networks.vgg import CONV_LAYERS


def _parse(argv):
    parser = argparse.ArgumentParser(prog="handnst bench")
    bench_cli.add_cli_arguments(parser)
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------- FLOPs

def _hand_count(width, height, deepest_conv, style_layers):
    """FLOPs counted independently of bench.py: walk CONV_LAYERS, halving the map after each block."""
    conv = 0
    h, w = height, width
    block = 1
    for name, cin, cout in CONV_LAYERS:
        this_block = int(name[4])
        while block < this_block:      # a 2x2 pooling closes each block
            h, w = h // 2, w // 2
            block += 1
        conv += 2 * 9 * cin * cout * h * w
        if name == deepest_conv:
            break
    gram = 0
    for name in style_layers:
        b = int(name[4])
        n = dict((nm, co) for nm, _, co in CONV_LAYERS)[name]
        hh, ww = height, width
        for _ in range(b - 1):
            hh, ww = hh // 2, ww // 2
        gram += 2 * n * n * hh * ww
    return conv, gram


@pytest.mark.parametrize("width,height", [(16, 16), (32, 24), (40, 20), (256, 192)])
def test_flops_match_an_independent_count(width, height):
    styles = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
    conv, gram = _hand_count(width, height, "conv5_1", styles)
    f = bench.objective_flops(width, height)
    assert f["conv_forward"] == conv == f["conv_backward"]
    assert f["gram_forward"] == gram == f["gram_backward"]
    assert f["forward"] == conv + gram and f["backward"] == conv + gram
    assert f["total"] == 2 * (conv + gram)
    assert sum(f["per_layer"].values()) == conv
    assert list(f["per_layer"]) == [name for name, _, _ in CONV_LAYERS[:13]]   # conv1_1 .. conv5_1


def test_flops_by_hand_at_16x16():
    # Worked out on paper. Map sides 16, 8, 4, 2, 1 for blocks 1..5; per conv 18 * Cin * Cout * h * w.
    conv = 18 * (3 * 64 * 256 + 64 * 64 * 256          # conv1_1, conv1_2 on 16x16
                 + 64 * 128 * 64 + 128 * 128 * 64      # conv2_x on 8x8
                 + 128 * 256 * 16 + 3 * 256 * 256 * 16  # conv3_x on 4x4
                 + 256 * 512 * 4 + 3 * 512 * 512 * 4    # conv4_x on 2x2
                 + 512 * 512 * 1)                       # conv5_1 on 1x1
    gram = 2 * (64 * 64 * 256 + 128 * 128 * 64 + 256 * 256 * 16 + 512 * 512 * 4 + 512 * 512 * 1)
    f = bench.objective_flops(16, 16)
    assert f["total"] == 2 * (conv + gram)


def test_flops_at_256x192_are_the_figure_quoted_in_the_issue():
    # "One objective evaluation at 256x192 (forward to conv5_1 plus the backward pass) is about 71 GFLOP":
    # the convolutions; the five Gram matrices and their gradients add about 3.4 GFLOP on top.
    f = bench.objective_flops(256, 192)
    assert 70.5e9 < f["conv_forward"] + f["conv_backward"] < 71.5e9
    assert 3.3e9 < f["gram_forward"] + f["gram_backward"] < 3.5e9


def test_flops_stop_at_the_deepest_layer_asked_for():
    f = bench.objective_flops(64, 64, content_layers=("conv4_2",), style_layers=())
    assert list(f["per_layer"])[-1] == "conv4_2"
    assert f["gram_forward"] == 0
    conv, _ = _hand_count(64, 64, "conv4_2", ())
    assert f["conv_forward"] == conv


def test_flops_need_a_layer():
    with pytest.raises(InputError):
        bench.objective_flops(64, 64, content_layers=(), style_layers=())


# -------------------------------------------------------------------------------------- sizes

@pytest.mark.parametrize("text,expected", [("256x192", (256, 192)), ("64X48", (64, 48)), (" 32 x 32 ", (32, 32))])
def test_parse_size(text, expected):
    assert bench.parse_size(text) == expected


@pytest.mark.parametrize("text", ["256", "256x", "x192", "axb", "0x10", "-4x4", "1x2x3"])
def test_parse_size_rejects_bad_sizes(text):
    with pytest.raises(InputError, match="WIDTHxHEIGHT|positive"):
        bench.parse_size(text)


def test_a_size_too_small_for_conv5_1_is_a_clear_error():
    with pytest.raises(InputError, match="too small"):
        bench.bench_size(8, 32, weights="random", repeat=1, warmup=0)


# --------------------------------------------------------------------------------------- GEMM

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_measure_gemm_gives_a_positive_rate(dtype):
    rate = bench.measure_gemm(64, 48, 32, dtype=dtype, repeat=2, min_seconds=0.0)
    assert rate > 0 and rate != float("inf")


def test_gemm_names():
    assert bench.gemm_name("float32") == "sgemm" and bench.gemm_name("float64") == "dgemm"


def test_conv_like_shape_is_the_padded_conv3_product():
    # conv3_x at 256x192 runs on a 64x48 map: 48 rows of (64 + 2) padded positions, 256 -> 256 channels.
    assert bench.conv_like_gemm_shape(256, 192) == (48 * 66, 256, 256)


# ---------------------------------------------------------------------------------------- CLI

SIZE_FIELDS = {"size", "width", "height", "megapixels", "flops", "seconds", "forward_seconds", "backward_seconds",
               "gflops", "gemm", "gemm_gflops", "ratio_to_gemm", "conv_gemm_gflops", "ratio_to_conv_gemm",
               "seconds_per_megapixel", "cost_per_pixel_vs_largest", "memory", "weights", "backend", "dtype"}


def _check_report(report, sizes):
    assert {"machine", "backend", "dtype", "gemm_square_shape", "gemm_gflops", "sizes", "cost_per_pixel_spread", "weights",
            "objective"} <= set(report)
    assert report["machine"]["cpu"] and report["machine"]["cores"] >= 1
    assert report["gemm_gflops"] > 0
    assert [r["size"] for r in report["sizes"]] == sizes
    for r in report["sizes"]:
        assert SIZE_FIELDS <= set(r), SIZE_FIELDS - set(r)
        assert r["flops"]["total"] == bench.objective_flops(r["width"], r["height"])["total"]
        s = r["seconds"]
        assert 0 < s["min"] <= s["median"] <= s["max"]
        assert len(s["samples"]) == report["repeat"]
        assert r["forward_seconds"]["median"] > 0 and r["backward_seconds"]["median"] >= 0
        # the derived numbers are consistent with the measured ones
        assert r["gflops"] == pytest.approx(r["flops"]["total"] / s["median"] / 1e9)
        # each round's ratio pairs its evaluation with the GEMM rate measured right after it
        rates = r["gemm"]["square"]["samples"]
        assert len(rates) == len(r["ratio_samples"]) == report["repeat"]
        assert r["gemm_gflops"] == pytest.approx(statistics.median(rates))
        assert r["ratio_samples"] == pytest.approx([r["flops"]["total"] / t / 1e9 / g for t, g in zip(s["samples"], rates)])
        assert r["ratio_to_gemm"] == pytest.approx(statistics.median(r["ratio_samples"]))
        assert r["ratio_to_conv_gemm"] == pytest.approx(r["gflops"] / r["conv_gemm_gflops"])
        assert r["gemm"]["square"]["shape"] == report["gemm_square_shape"]
        assert r["gemm"]["conv_like"]["shape"] == list(bench.conv_like_gemm_shape(r["width"], r["height"]))
        assert r["gemm_gflops"] > 0 and r["conv_gemm_gflops"] > 0
        assert r["seconds_per_megapixel"] == pytest.approx(s["median"] / (r["width"] * r["height"] / 1e6))
        assert r["memory"]["peak_rss_bytes"] is None or r["memory"]["peak_rss_bytes"] > 0
    assert report["cost_per_pixel_spread"] >= 0


def test_cli_runs_at_a_tiny_size_and_prints_json(capsys):
    args = _parse(["--size", "32x32", "--repeat", "1", "--warmup", "0", "--weights", "random", "--json"])
    assert bench_cli.run_cli(args) == 0
    out = capsys.readouterr().out
    report = json.loads(out)             # only JSON on stdout
    _check_report(report, ["32x32"])
    assert report["isolated"] is True
    assert "random" in report["weights"]
    assert report["sizes"][0]["memory"]["peak_rss_bytes"] > 0


def test_cli_writes_json_to_a_file_and_prints_the_table(tmp_path, capsys):
    path = tmp_path / "bench.json"
    args = _parse(["--size", "32x16", "16x16", "--repeat", "2", "--warmup", "0", "--weights", "random",
                   "--in-process", "--json", str(path)])
    assert bench_cli.run_cli(args) == 0
    table = capsys.readouterr().out
    assert "32x16" in table and "16x16" in table and "sgemm" in table and "GFLOP/s" in table
    report = json.loads(path.read_text())
    _check_report(report, ["32x16", "16x16"])
    assert report["isolated"] is False
    # cost per pixel is given relative to the largest size, which is 1.0 against itself
    assert report["sizes"][0]["cost_per_pixel_vs_largest"] == pytest.approx(1.0)
    assert list(tmp_path.iterdir()) == [path]            # no temporary file left behind


def test_cli_refuses_an_unwritable_json_path_before_running(tmp_path):
    args = _parse(["--size", "32x32", "--json", str(tmp_path / "missing" / "b.json")])
    with pytest.raises(InputError, match="does not exist"):
        bench_cli.run_cli(args)


def test_cli_rejects_a_bad_size_and_bad_counts():
    with pytest.raises(InputError, match="WIDTHxHEIGHT"):
        bench_cli.run_cli(_parse(["--size", "big"]))
    with pytest.raises(InputError, match="repeat"):
        bench_cli.run_cli(_parse(["--size", "32x32", "--repeat", "0", "--weights", "random"]))


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        bench_cli.run_cli(_parse(["--size", "32x32", "--weights", str(tmp_path / "nope.h5")]))


@pytest.mark.skipif(gpu_available(), reason="CuPy and a GPU are present")
def test_gpu_without_cupy_is_a_clear_error():
    with pytest.raises(InputError, match="CuPy"):
        bench_cli.run_cli(_parse(["--size", "32x32", "--device", "gpu", "--repeat", "1"]))


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA device")
def test_gpu_bench_reports_the_memory_pool():
    report = bench.run_benchmark([(32, 32)], device="gpu", repeat=1, warmup=0, weights="random")
    _check_report(report, ["32x32"])
    assert report["sizes"][0]["memory"]["gpu_pool_bytes"] > 0
    assert "gpu" in report["machine"]


# ---------------------------------------------------------------------------------- per layer

def test_every_layer_is_timed_forward_and_backward(capsys):
    args = _parse(["--size", "32x32", "--repeat", "2", "--warmup", "0", "--weights", "random", "--in-process"])
    assert bench_cli.run_cli(args) == 0
    table = capsys.readouterr().out
    result = bench.bench_size(32, 32, weights="random", repeat=2, warmup=0)
    layers = result["layers"]
    expected = [n for n in bench.LAYER_ORDER[:bench.LAYER_ORDER.index("conv5_1") + 1]]
    assert list(layers) == expected
    for name, t in layers.items():
        assert t["forward"] >= 0 and t["backward"] >= 0, name
    assert result["loss_seconds"] >= 0
    # the layers and the rest make up an evaluation (medians of each part: roughly, not exactly)
    assert sum(t["forward"] + t["backward"] for t in layers.values()) < 3 * result["seconds"]["max"]
    assert "time per layer" in table and "conv4_2" in table and "pool3" in table and "the rest" in table


def test_network_books_each_layer_once_per_pass():
    from handnst.networks.vgg import random_vgg19
    import numpy as np
    net = random_vgg19(0)
    net.layer_times = {}
    x = np.zeros((3, 16, 16), dtype=np.float32)
    net.forward(x, ["conv2_2"])
    net.backward({"conv2_2": np.ones((128, 8, 8), dtype=np.float32)})
    names = ["conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2"]
    assert sorted(net.layer_times) == sorted([("forward", n) for n in names] + [("backward", n) for n in names])
    assert all(len(v) == 1 for v in net.layer_times.values())
    net.layer_times = None
    net.forward(x, ["conv1_1"])         # off again: nothing booked, nothing fails


# ---------------------------------------------------------------------------------- the product clock

def test_the_product_clock_counts_blas_products_only_while_running():
    import time
    import numpy as np
    from handnst import backend
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 384, 384)).astype(np.float32)
    out = np.empty((384, 384), dtype=np.float32)
    assert backend.stop_product_clock() is None           # off unless started
    backend.gemm(a, b, out)                                 # not counted: nothing to read afterwards
    assert backend.stop_product_clock() is None
    backend.start_product_clock()
    t0 = time.perf_counter()
    backend.gemm(a, b, out)
    backend.gemm(a, b, out, accumulate=True, trans_a=True)
    backend.matmul(a, b.T)                                  # matmul goes through gemm: counted too
    wall = time.perf_counter() - t0
    np.testing.assert_allclose(out, a @ b + a.T @ b, rtol=1e-4, atol=1e-3)   # results unchanged
    counted = backend.stop_product_clock()
    assert 0 < counted <= wall
    assert backend.stop_product_clock() is None             # stopping turns it off
    backend.start_product_clock()                           # and a new start counts from zero
    assert backend.stop_product_clock() == 0.0


def test_a_product_the_clock_cannot_time_makes_its_reading_unknown():
    import numpy as np
    from handnst import backend
    a = np.arange(12).reshape(3, 4)             # integers: the generic path, as every product on CuPy
    backend.start_product_clock()
    backend.gemm(a, a.T, np.empty((3, 3), dtype=a.dtype))
    backend.gemm(*np.ones((2, 8, 8), dtype=np.float32), np.empty((8, 8), dtype=np.float32))
    assert backend.stop_product_clock() is None             # not a reading that is too small
    backend.start_product_clock()
    backend.matmul(a, a.T)
    assert backend.stop_product_clock() is None


def test_bench_reports_the_time_inside_blas_products(capsys):
    result = bench.bench_size(32, 32, weights="random", repeat=2, warmup=0)
    products, total = result["product_seconds"], result["seconds"]
    assert len(products["samples"]) == len(total["samples"]) == 2
    # every evaluation spends some, not all, of its time in products (ReLU, pooling, losses are not)
    assert all(0 < p < t for p, t in zip(products["samples"], total["samples"]))
    assert result["product_fraction"] == pytest.approx(
        statistics.median(p / t for p, t in zip(products["samples"], total["samples"])))
    from handnst import backend
    assert backend.stop_product_clock() is None             # the benchmark leaves the clock off
    assert "inside BLAS products" in "\n".join(bench.format_layers(result))


# ---------------------------------------------------------------------------------- PyTorch

def test_torch_comparison_computes_the_same_objective():
    pytest.importorskip("torch")
    result = bench.bench_size(32, 32, weights="random", repeat=2, warmup=0, torch=True)
    t = result["torch"]
    assert "error" not in t
    assert t["gradient_difference"] < 1e-4 and t["value_difference"] < 1e-4
    assert len(t["ratio_samples"]) == 2 and t["ratio"] > 0 and t["gemm_gflops"] > 0
    assert "handnst / PyTorch" in bench._torch_line(t)
    # handnst's products are part of its turns, so their ratio to PyTorch's turns is below the whole ratio
    assert len(t["products_ratio_samples"]) == 2
    assert 0 < t["products_ratio"] < t["ratio"] and 0 < t["product_seconds"] < t["handnst_seconds"]
    assert "BLAS products alone" in bench._torch_line(t)


def test_torch_comparison_says_clearly_when_torch_is_missing(monkeypatch):
    from handnst import bench_torch
    monkeypatch.setattr(bench_torch, "torch_available", lambda: False)
    result = bench.bench_size(32, 32, weights="random", repeat=1, warmup=0, torch=True)
    assert "PyTorch is not installed" in result["torch"]["error"]
    assert "PyTorch is not installed" in bench._torch_line(result["torch"])
