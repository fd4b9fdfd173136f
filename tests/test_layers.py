"""Every layer: the vectorized version equals the naive loops, and both equal finite differences."""

import numpy as np
import pytest

from handnst import layers as L
from handnst.backend import get_xp, to_host
from handnst.gradcheck import check_gradient, layer_checks, LAYER_TOLERANCE

from backends import BACKENDS


@pytest.fixture(params=BACKENDS)
def xp(request):
    return get_xp(request.param)


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("shape,kshape,stride,pad", [
    ((3, 7, 6), (4, 3, 3, 3), 1, 1),
    ((2, 8, 9), (5, 2, 3, 3), 2, 1),
    ((3, 6, 7), (2, 3, 3, 3), 2, 0),
    ((1, 5, 5), (3, 1, 1, 1), 1, 0),
    ((2, 9, 8), (3, 2, 5, 3), 3, 2),
])
def test_conv_fast_equals_naive(xp, shape, kshape, stride, pad):
    r = rng(1)
    x, w, b = (xp.asarray(r.normal(size=s)) for s in (shape, kshape, kshape[:1]))
    out_n, cache_n = L.conv_forward_naive(x, w, b, stride, pad)
    out_f, cache_f = L.conv_forward(x, w, b, stride, pad)
    assert out_n.shape == out_f.shape == (kshape[0], L.conv_output_size(shape[1], kshape[2], stride, pad),
                                          L.conv_output_size(shape[2], kshape[3], stride, pad))
    np.testing.assert_allclose(to_host(out_f), to_host(out_n), rtol=1e-12, atol=1e-12)
    dout = xp.asarray(r.normal(size=out_n.shape))
    np.testing.assert_allclose(to_host(L.conv_backward(dout, cache_f)), to_host(L.conv_backward_naive(dout, cache_n)),
                               rtol=1e-12, atol=1e-12)
    for got, want in zip(L.conv_weight_backward(dout, cache_f), L.conv_weight_backward_naive(dout, cache_n)):
        np.testing.assert_allclose(to_host(got), to_host(want), rtol=1e-12, atol=1e-12)


def test_conv_naive_matches_definition_on_a_hand_example():
    # A 1-channel 3x3 image and a filter that picks the right neighbour: with zero padding the
    # output is the image shifted left by one with a zero column on the right.
    x = np.arange(9.0).reshape(1, 3, 3)
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 1, 2] = 1.0
    out, _ = L.conv_forward_naive(x, w, np.zeros(1))
    np.testing.assert_array_equal(out[0], [[1, 2, 0], [4, 5, 0], [7, 8, 0]])


@pytest.mark.parametrize("pair", [
    (L.relu_forward_naive, L.relu_forward, L.relu_backward_naive, L.relu_backward),
    (L.avg_pool_forward_naive, L.avg_pool_forward, L.avg_pool_backward_naive, L.avg_pool_backward),
    (L.max_pool_forward_naive, L.max_pool_forward, L.max_pool_backward_naive, L.max_pool_backward),
], ids=["relu", "avg_pool", "max_pool"])
@pytest.mark.parametrize("shape", [(3, 6, 8), (2, 7, 5)])
def test_elementwise_and_pool_fast_equals_naive(xp, pair, shape):
    fn, ff, bn, bf = pair
    r = rng(2)
    x = xp.asarray(r.normal(size=shape))
    out_n, cache_n = fn(x)
    out_f, cache_f = ff(x)
    np.testing.assert_allclose(to_host(out_f), to_host(out_n), rtol=1e-12)
    dout = xp.asarray(r.normal(size=out_n.shape))
    np.testing.assert_allclose(to_host(bf(dout, cache_f)), to_host(bn(dout, cache_n)), rtol=1e-12)


def test_max_pool_ties_route_to_first_winner_in_both_versions():
    x = np.ones((1, 2, 2))
    for fwd, bwd in ((L.max_pool_forward_naive, L.max_pool_backward_naive), (L.max_pool_forward, L.max_pool_backward)):
        out, cache = fwd(x)
        dx = bwd(np.full((1, 1, 1), 3.0), cache)
        np.testing.assert_array_equal(dx, [[[3.0, 0.0], [0.0, 0.0]]])


def test_pool_drops_odd_row_and_column():
    x = np.arange(15.0).reshape(1, 3, 5)
    out, cache = L.avg_pool_forward(x)
    assert out.shape == (1, 1, 2)
    np.testing.assert_allclose(out[0, 0], [(0 + 1 + 5 + 6) / 4, (2 + 3 + 7 + 8) / 4])
    dx = L.avg_pool_backward(np.ones((1, 1, 2)), cache)
    assert dx[0, 2].sum() == 0 and dx[0, :, 4].sum() == 0


@pytest.mark.parametrize("C", [3, 8, 20])
@pytest.mark.parametrize("relu", [False, True])
def test_network_conv3x3_equals_naive(xp, C, relu):
    # The padded channels-last kernel the network runs (both of its branches: C < 16 uses im2col)
    r = rng(3)
    H, W, K = 6, 5, 7
    x = xp.asarray(r.normal(size=(C, H, W)))
    w, b = xp.asarray(r.normal(size=(K, C, 3, 3))), xp.asarray(r.normal(size=K))
    want, cache = L.conv_forward_naive(x, w, b, 1, 1)
    if relu:
        want = xp.maximum(want, 0)
    out = xp.full((L.padded_length(H, W), K), np.nan)        # garbage in the buffer must not leak
    P = L.conv3x3_forward(L.to_padded(x), H, W, L.conv_taps(w), b, out, relu=relu)
    np.testing.assert_allclose(to_host(L.from_padded(P, H, W)), to_host(want), rtol=1e-10, atol=1e-12)
    grid = to_host(L.padded_grid(P, H, W))
    assert not grid[0].any() and not grid[-1].any() and not grid[:, 0].any() and not grid[:, -1].any()
    assert not to_host(P[(H + 2) * (W + 2):]).any()
    dout = xp.asarray(r.normal(size=(K, H, W)))
    dx = L.from_padded(L.conv3x3_backward(L.to_padded(dout), H, W, L.conv_taps(w),
                                          xp.full((L.padded_length(H, W), C), np.nan)), H, W)
    np.testing.assert_allclose(to_host(dx), to_host(L.conv_backward_naive(dout, cache)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("H,W", [(6, 8), (7, 5)])
def test_network_pooling_equals_naive(xp, mode, H, W):
    r = rng(4)
    x = xp.asarray(r.normal(size=(4, H, W)))
    fwd, bwd = ((L.avg_pool_forward_naive, L.avg_pool_backward_naive) if mode == "avg"
                else (L.max_pool_forward_naive, L.max_pool_backward_naive))
    want, cache = fwd(x)
    P = L.to_padded(x)
    out = L.pool_forward_padded(P, H, W, xp.full((L.padded_length(H // 2, W // 2), 4), np.nan), mode)
    np.testing.assert_allclose(to_host(L.from_padded(out, H // 2, W // 2)), to_host(want), rtol=1e-12)
    dout = xp.asarray(r.normal(size=want.shape))
    dP = L.pool_backward_padded(L.to_padded(dout), P, H, W, xp.full((L.padded_length(H, W), 4), np.nan), mode)
    np.testing.assert_allclose(to_host(L.from_padded(dP, H, W)), to_host(bwd(dout, cache)), rtol=1e-12)


@pytest.mark.parametrize("dtype,tol", [("float32", 2e-5), ("float64", 1e-12)])
def test_network_conv_float32_and_float64(dtype, tol):
    r = rng(5)
    x = r.normal(size=(32, 9, 7)).astype(dtype)
    w, b = r.normal(size=(16, 32, 3, 3)).astype(dtype), r.normal(size=16).astype(dtype)
    P = L.conv3x3_forward(L.to_padded(x), 9, 7, L.conv_taps(w), b, np.empty((L.padded_length(9, 7), 16), dtype), relu=False)
    assert P.dtype == np.dtype(dtype)
    want = L.conv_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))[0]
    np.testing.assert_allclose(L.from_padded(P, 9, 7), want, rtol=tol, atol=tol * np.abs(want).max())


def _layer_check_ids():
    return [name for name, _, _ in layer_checks("numpy")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("index", range(len(_layer_check_ids())), ids=_layer_check_ids())
def test_layer_gradients_match_finite_differences(backend, index):
    name, fn, tol = layer_checks(backend)[index]
    assert tol == LAYER_TOLERANCE == 1e-6
    err = fn()
    assert err <= tol, f"{name}: max relative error {err:.2e} > {tol:.0e}"


def test_gradient_check_catches_a_wrong_gradient():
    # The check must be able to fail: a gradient off by 0.1% in one entry, or missing the ReLU mask.
    r = rng(6)
    x = r.normal(size=(3, 5, 4))
    x = np.where(np.abs(x) < 0.05, 0.5, x)               # keep the ReLU kink out of reach of +-h
    R = r.normal(size=x.shape)
    f = lambda z: float((L.relu_forward(z)[0] * R).sum())
    good = L.relu_backward(R, L.relu_forward(x)[1])
    assert check_gradient(f, x, good) < 1e-8
    assert check_gradient(f, x, R) > 1e-2                   # the unmasked gradient
    bad = good.copy()
    bad.flat[np.flatnonzero(good)[0]] *= 1.001
    assert check_gradient(f, x, bad, entries=x.size) > 1e-4
