"""`handnst bench --transform` (issue 13), at tiny sizes: the report, and where PyTorch is installed,
agreement of the network and the loss with an independent autograd implementation of them."""

import importlib.util

import pytest

from handnst import bench_transform as B

TINY = dict(width=4, residual_blocks=1, rounds=1, weights="random", apply_size=(20, 16), step_size=32, step_batch=2)


def test_report_without_pytorch():
    report = B.run(torch_compare=False, **TINY)
    assert report["pytorch"] is None and report["parameters"] > 0
    assert report["apply_seconds"]["median"] > 0 and report["step_seconds"]["median"] > 0
    parts = report["step_parts_seconds"]                          # where a step's time goes
    assert set(parts) == set(B.STEP_PARTS) and all(v > 0 for v in parts.values())
    assert sum(parts.values()) <= report["step_seconds"]["max"] * 1.01 + 1e-3
    assert "network backward" in B.format_report(report)
    assert "PyTorch not installed" in B.format_report(report) or "no comparison" in B.format_report(report)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
def test_agrees_with_pytorch_autograd():
    report = B.run(**TINY)
    assert report["agreement"]["apply_max_abs_diff_relative"] < 1e-4
    assert report["agreement"]["loss_relative_diff"] < 1e-4
    assert report["agreement"]["gradient_max_abs_diff_relative"] < 1e-3     # float32, summed over batches
    assert report["apply_ratio_to_pytorch"] > 0 and report["step_ratio_to_pytorch"] > 0
