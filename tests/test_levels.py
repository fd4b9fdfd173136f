"""Coarse-to-fine planning: level sizes, iterations per level, and the weight conventions."""

import pytest

from handnst import levels
from handnst.errors import InputError


def test_level_sizes():
    assert levels.level_sizes(128, 512) == [128, 256, 512]
    assert levels.level_sizes(128, 512, 2 ** 0.5) == [128, 181, 256, 362, 512]
    assert levels.level_sizes(200, 512) == [200, 320, 512]          # never more than 2x per step
    assert levels.level_sizes(300, 512) == [300, 512]


def test_level_iterations():
    assert levels.level_iterations(300, 3) == [300, 150, 75]
    assert levels.level_iterations(60, 4) == [60, 30, 20, 20]       # the floor
    assert levels.level_iterations(10, 3) == [10, 10, 10]           # never more than asked
    assert levels.level_iterations(300, 2, given=[100, 40]) == [100, 40]


def test_paper_convention_keeps_the_final_balance_at_every_level():
    final = (384, 512)
    assert levels.content_weight_at(1.0, final) == 1.0
    assert levels.content_weight_at(1.0, final, "paper", final) == 1.0
    assert levels.content_weight_at(2.0, (96, 128), "paper", final) == 32.0
    # size-invariant: per-pixel content loss times 256^2; equal to the paper's at 256 x 256
    assert levels.content_weight_at(1.0, (256, 256), "size-invariant") == 1.0
    assert levels.content_weight_at(1.0, (384, 512), "size-invariant") == pytest.approx(1 / 3)


@pytest.mark.parametrize("call, match", [
    (lambda: levels.level_sizes(512, 512), "must be smaller than --size 512"),
    (lambda: levels.level_sizes(0, 512), "--start-size must be a positive"),
    (lambda: levels.level_sizes(128, 512, 1.0), "level factor must be a number above 1"),
    (lambda: levels.level_iterations(300, 3, given=[1, 2]), "2 level iteration counts given for 3 levels"),
    (lambda: levels.level_iterations(300, 2, given=[1, 0]), "positive whole numbers"),
    (lambda: levels.content_weight_at(1.0, (8, 8), "pixels"), "unknown normalization 'pixels'"),
])
def test_bad_plans_are_clear_errors(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_upsample_detail_keeps_the_contents_detail_and_carries_the_change():
    import numpy as np
    r = np.random.default_rng(0)
    c_small, c_big = r.normal(size=(3, 5, 7)), r.normal(size=(3, 10, 14))
    assert np.allclose(levels.upsample_detail(c_small, c_small, c_big), c_big)       # nothing painted: the content
    shifted = levels.upsample_detail(c_small + 2.0, c_small, c_big)
    assert np.allclose(shifted, c_big + 2.0, atol=1e-6)                               # a flat change carries over
