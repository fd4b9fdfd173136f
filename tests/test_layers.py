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
@pytest.mark.parametrize("bands", [False, True])
def test_network_conv3x3_equals_naive(xp, C, relu, bands, monkeypatch):
    # The padded channels-last kernel the network runs (both of its branches: C < 16 uses im2col,
    # band by band: with bands=True, bands of four padded rows, the last one shorter)
    if bands:
        monkeypatch.setattr(L.padded, "IM2COL_CHUNK_BYTES", 4 * 7 * (9 * C + 1) * 8)
        monkeypatch.setattr(L.padded, "IM2COL_BACKWARD_CHUNK_BYTES", 4 * 7 * 9 * C * 8)
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


def test_winograd_f23_is_the_three_tap_correlation_with_four_products():
    r = rng(11)
    d, g = r.normal(size=4), r.normal(size=3)
    y0, y1 = L.winograd_f23(d, g)
    assert y0 == pytest.approx(d[0] * g[0] + d[1] * g[1] + d[2] * g[2], rel=1e-13)
    assert y1 == pytest.approx(d[1] * g[0] + d[2] * g[1] + d[3] * g[2], rel=1e-13)
    # the same with the matrices of the docstring: y = A^T [(G g) * (B^T d)]
    BT, G, AT = (np.array(m, dtype=float) for m in (L.WINOGRAD_BT, L.WINOGRAD_G, L.WINOGRAD_AT))
    np.testing.assert_allclose(AT @ ((G @ g) * (BT @ d)), [y0, y1], rtol=1e-13)


def test_winograd_taps_transform_the_filter_rows():
    r = rng(12)
    w = r.normal(size=(5, 4, 3, 3))
    taps = L.conv_taps(w)
    U = L.winograd_taps(taps)
    assert len(U) == 4 and all(u.shape == (3, 4, 5) for u in U)
    assert np.shares_memory(U[0], taps) and np.shares_memory(U[3], taps)     # picked rows are views
    for v in range(3):
        w0, w1, w2 = (w[:, :, u, v].T for u in range(3))
        np.testing.assert_array_equal(U[0][v], w0)
        np.testing.assert_allclose(U[1][v], (w0 + w1 + w2) / 2, rtol=1e-14)
        np.testing.assert_allclose(U[2][v], (w0 - w1 + w2) / 2, rtol=1e-14)
        np.testing.assert_array_equal(U[3][v], w2)


# Even and odd sizes (an odd H has a half tile at the bottom), a 1x1 map, chunk sizes that split
# the tile rows into several chunks with a shorter last one, and more than twice as many channels
# out as in (the output rows then need room outside the scratch Z), whole and in chunks.
WINOGRAD_CASES = [(6, 5, 4, 7, None), (7, 5, 4, 7, None), (7, 6, 3, 5, 200), (9, 4, 8, 8, 3072), (1, 1, 3, 2, 1),
                  (2, 3, 3, 2, 1), (11, 10, 6, 5, 9216), (6, 5, 2, 7, None), (9, 6, 2, 9, 600)]


@pytest.mark.parametrize("H,W,C,K,chunk", WINOGRAD_CASES)
def test_winograd_convolution_equals_naive(xp, H, W, C, K, chunk):
    r = rng(13)
    x = xp.asarray(r.normal(size=(C, H, W)))
    w, b = xp.asarray(r.normal(size=(K, C, 3, 3))), xp.asarray(r.normal(size=K))
    want, cache = L.conv_forward_naive(x, w, b, 1, 1)
    U = L.winograd_taps(L.conv_taps(w))

    def scratch(c_in, c_out):   # garbage in the buffers must not leak into the result
        shapes = L.winograd_scratch_shapes(H, W, c_in, c_out, **({} if chunk is None else {"chunk_bytes": chunk}), itemsize=8)
        return [xp.full(shape, np.nan) for shape in shapes]

    if chunk is not None and H > 2:     # really chunked (9x4 in chunks of 2, 2, 1 tile rows; 11x10 in 4, 2)
        assert scratch(C, K)[1].shape[1] < ((H + 1) // 2) * (W + 2)
    U_t = L.winograd_taps_transposed(U)
    assert all(u_t.shape == (3, K, C) and u_t.flags.c_contiguous for u_t in U_t)
    for relu, transposed in ((False, None), (True, None), (True, U_t)):
        out = xp.full((L.padded_length(H, W), K), np.nan)
        P = L.conv3x3_winograd_forward(L.to_padded(x), H, W, U, b, out, relu=relu, scratch=scratch(C, K),
                                       U_t=transposed)
        expect = xp.maximum(want, 0) if relu else want
        np.testing.assert_allclose(to_host(L.from_padded(P, H, W)), to_host(expect), rtol=1e-10, atol=1e-12)
        grid = to_host(L.padded_grid(P, H, W))
        assert not grid[0].any() and not grid[-1].any() and not grid[:, 0].any() and not grid[:, -1].any()
        assert not to_host(P[(H + 2) * (W + 2):]).any()
    dout = xp.asarray(r.normal(size=(K, H, W)))
    dP = L.conv3x3_winograd_backward(L.to_padded(dout), H, W, U, xp.full((L.padded_length(H, W), C), np.nan),
                                     scratch=scratch(K, C))
    np.testing.assert_allclose(to_host(L.from_padded(dP, H, W)), to_host(L.conv_backward_naive(dout, cache)),
                               rtol=1e-10, atol=1e-12)
    assert not to_host(L.padded_grid(dP, H, W))[0].any()


def test_winograd_convolution_in_float32_matches_the_direct_one():
    r = rng(14)
    H, W, C, K = 24, 18, 64, 48
    x = r.normal(size=(C, H, W)).astype(np.float32)
    w = (r.normal(size=(K, C, 3, 3)) / 24).astype(np.float32)
    b = r.normal(size=K).astype(np.float32)
    taps = L.conv_taps(w)
    direct = L.conv3x3_forward(L.to_padded(x), H, W, taps, b, np.empty((L.padded_length(H, W), K), np.float32))
    wino = L.conv3x3_winograd_forward(L.to_padded(x), H, W, L.winograd_taps(taps), b,
                                      np.empty((L.padded_length(H, W), K), np.float32))
    assert wino.dtype == np.float32
    scale = float(np.abs(direct).max())
    np.testing.assert_allclose(wino, direct, rtol=0, atol=2e-6 * scale)


@pytest.mark.parametrize("kind", ["2d", "4x4"])
@pytest.mark.parametrize("chunk", [1 << 16, 7])      # the float64 transform in one slice, and in slices of 7 (C, K) pairs
def test_two_dimensional_winograd_taps_are_G_g_G_transposed(monkeypatch, kind, chunk):
    monkeypatch.setattr(L.winograd2d, "TAPS_CHUNK", chunk)      # both go through winograd2d.filter_transform
    taps_of, G, points = {"2d": (L.winograd2d_taps, L.WINOGRAD_G, 4), "4x4": (L.winograd4x4_taps, L.WINOGRAD4_G, 6)}[kind]
    r = rng(15)
    w = r.normal(size=(5, 4, 3, 3))
    U = taps_of(L.conv_taps(w))
    G = np.array(G, dtype=float)
    assert U.shape == (points * points, 4, 5)
    for k in range(5):
        for c in range(4):
            np.testing.assert_allclose(U[:, c, k].reshape(points, points), G @ w[k, c] @ G.T, rtol=1e-13, atol=1e-15)


def test_winograd2d_is_two_dimensional_f23_on_a_hand_example():
    # One 4x4 patch, one 3x3 filter: A^T [(G g G^T) * (B^T d B)] A is the 2x2 correlation.
    r = rng(16)
    d, g = r.normal(size=(4, 4)), r.normal(size=(3, 3))
    BT, G, AT = (np.array(m, dtype=float) for m in (L.WINOGRAD_BT, L.WINOGRAD_G, L.WINOGRAD_AT))
    want = np.array([[(d[i:i + 3, j:j + 3] * g).sum() for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(AT @ ((G @ g @ G.T) * (BT @ d @ BT.T)) @ AT.T, want, rtol=1e-13)


# Even sizes (whole 2x2 tiles) and odd ones (half tiles at the bottom and the right), 1x1 and one-row
# maps, single and several chunks with a shorter last one, one thread and two.
WINOGRAD2D_CASES = [(6, 8, 4, 7, None, 2), (2, 2, 3, 2, None, 2), (8, 4, 5, 6, 1, 2), (10, 6, 8, 8, 3000, 2),
                    (6, 8, 4, 7, None, 1), (12, 10, 3, 5, 8000, 1), (7, 5, 4, 7, None, 2), (9, 6, 3, 4, 1, 2),
                    (6, 9, 5, 3, 2000, 1), (1, 1, 3, 2, None, 2), (1, 6, 2, 3, 1, 2), (5, 1, 2, 2, 1, 1)]


@pytest.mark.parametrize("H,W,C,K,chunk,threads", WINOGRAD2D_CASES)
def test_winograd2d_convolution_equals_naive(xp, H, W, C, K, chunk, threads):
    _check_two_dimensional_winograd(xp, "2d", H, W, C, K, chunk, threads)


# algorithm -> (transformed filters, scratch shapes, forward, backward, output rows per tile row)
TWO_DIMENSIONAL_WINOGRAD = {
    "2d": (L.winograd2d_taps, L.winograd2d_scratch_shapes, L.conv3x3_winograd2d_forward,
           L.conv3x3_winograd2d_backward, 2),
    "4x4": (L.winograd4x4_taps, L.winograd4x4_scratch_shapes, L.conv3x3_winograd4x4_forward,
            L.conv3x3_winograd4x4_backward, 4),
}


def _check_two_dimensional_winograd(xp, kind, H, W, C, K, chunk, threads):
    """Forward (with and without ReLU) and backward pass against the naive layers, from NaN-filled
    scratch and outputs, with the layout's zero border checked on both results."""
    taps_of, scratch_shapes, forward, backward, tile = TWO_DIMENSIONAL_WINOGRAD[kind]
    r = rng(17)
    x = xp.asarray(r.normal(size=(C, H, W)))
    w, b = xp.asarray(r.normal(size=(K, C, 3, 3))), xp.asarray(r.normal(size=K))
    want, cache = L.conv_forward_naive(x, w, b, 1, 1)
    U = taps_of(L.conv_taps(w))

    def scratch(c_in, c_out):   # garbage in the buffers must not leak into the result
        shapes = scratch_shapes(H, W, c_in, c_out, **({} if chunk is None else {"chunk_bytes": chunk}), itemsize=8)
        return [xp.full(shape, np.nan) for shape in shapes]

    if chunk is not None and H > tile:       # really chunked
        assert scratch(C, K)[0].shape[1] < -(-H // tile)
    for relu in (False, True):
        out = xp.full((L.padded_length(H, W), K), np.nan)
        P = forward(L.to_padded(x), H, W, U, b, out, relu=relu, scratch=scratch(C, K), threads=threads)
        expect = xp.maximum(want, 0) if relu else want
        np.testing.assert_allclose(to_host(L.from_padded(P, H, W)), to_host(expect), rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(to_host(P), to_host(L.to_padded(L.from_padded(P, H, W))))   # zero border
    dout = xp.asarray(r.normal(size=(K, H, W)))
    dP = backward(L.to_padded(dout), H, W, U, xp.full((L.padded_length(H, W), C), np.nan),
                  scratch=scratch(K, C), threads=threads)
    np.testing.assert_allclose(to_host(L.from_padded(dP, H, W)), to_host(L.conv_backward_naive(dout, cache)),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(to_host(dP), to_host(L.to_padded(L.from_padded(dP, H, W))))


def test_winograd_float32_errors_against_the_float64_direct_convolution():
    # Every algorithm in float32 against the exact (float64, direct) result, on VGG-like statistics:
    # the Winograd transforms only add, subtract and halve, so they keep the direct path's accuracy.
    r = rng(14)
    H, W, C, K = 24, 18, 64, 48
    x = np.maximum(r.normal(size=(C, H, W)), 0)
    w = r.normal(size=(K, C, 3, 3)) / 24
    b = r.normal(size=K)
    exact = L.conv3x3_forward(L.to_padded(x), H, W, L.conv_taps(w), b, np.empty((L.padded_length(H, W), K)), relu=False)
    x32, w32, b32 = (a.astype(np.float32) for a in (x, w, b))
    taps = L.conv_taps(w32)
    runs = {
        "direct": L.conv3x3_forward(L.to_padded(x32), H, W, taps, b32, np.empty((L.padded_length(H, W), K), np.float32), relu=False),
        "rows": L.conv3x3_winograd_forward(L.to_padded(x32), H, W, L.winograd_taps(taps), b32,
                                           np.empty((L.padded_length(H, W), K), np.float32), relu=False),
        "2d": L.conv3x3_winograd2d_forward(L.to_padded(x32), H, W, L.winograd2d_taps(taps), b32,
                                           np.empty((L.padded_length(H, W), K), np.float32), relu=False),
    }
    scale = float(np.abs(exact).max())
    errors = {k: float(np.abs(v - exact).max()) / scale for k, v in runs.items()}
    assert all(v.dtype == np.float32 for v in runs.values())
    assert errors["direct"] < 1e-6 and errors["rows"] < 2e-6 and errors["2d"] < 2e-6, errors


def test_winograd4x4_is_two_dimensional_f43_on_a_hand_example():
    # F(4, 3) on numbers: 4 outputs of a 3-tap correlation from 6 products; then one 6x6 patch and one
    # 3x3 filter: A^T [(G g G^T) * (B^T d B)] A is the 4x4 correlation.
    r = rng(19)
    d6, g3 = r.normal(size=6), r.normal(size=3)
    np.testing.assert_allclose(L.winograd_f43(d6, g3), [d6[i:i + 3] @ g3 for i in range(4)], rtol=1e-13)
    d, g = r.normal(size=(6, 6)), r.normal(size=(3, 3))
    BT, G, AT = (np.array(m, dtype=float) for m in (L.WINOGRAD4_BT, L.WINOGRAD4_G, L.WINOGRAD4_AT))
    want = np.array([[(d[i:i + 3, j:j + 3] * g).sum() for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(AT @ ((G @ g @ G.T) * (BT @ d @ BT.T)) @ AT.T, want, rtol=1e-12)


# Whole 4x4 tiles: one tile, wide and tall maps, single and several chunks (with a shorter last one
# made equal), one thread and two, more channels out than in and fewer. Part tiles: 1, 2 and 3 rows
# or columns past the last whole tile (at the bottom and right in the forward pass, at the top and
# left in the backward one), maps smaller than one tile, chunked ones.
WINOGRAD4X4_CASES = [(4, 4, 3, 2, None, 2), (8, 12, 4, 7, None, 2), (12, 8, 5, 3, 1, 2), (16, 4, 6, 6, 3000, 1),
                     (20, 8, 3, 5, 6000, 2), (4, 16, 2, 3, None, 1),
                     (5, 6, 3, 4, None, 2), (7, 9, 4, 3, None, 1), (1, 1, 2, 3, None, 2), (2, 3, 3, 2, None, 1),
                     (6, 11, 2, 5, None, 2), (13, 10, 3, 4, 1, 2), (11, 5, 4, 4, 4000, 1), (3, 8, 2, 2, 1, 2)]


@pytest.mark.parametrize("H,W,C,K,chunk,threads", WINOGRAD4X4_CASES)
def test_winograd4x4_convolution_equals_naive(xp, H, W, C, K, chunk, threads):
    _check_two_dimensional_winograd(xp, "4x4", H, W, C, K, chunk, threads)


def test_winograd4x4_scratch_chunks_are_equal():
    # 13 whole tile rows under a budget of 4 per chunk: 4 chunks of 4 (not 4 + 4 + 4 + 1), so no product runs short.
    H, W, C, K = 52, 8, 3, 5
    per_row = 36 * (W // 4) * max(C, K) * 4

    def rows(chunk_bytes):
        shapes = L.winograd4x4_scratch_shapes(H, W, C, K, chunk_bytes=chunk_bytes)
        n = shapes[1][1]
        assert [s[:2] for s in shapes[:4]] == [(36, n), (36, n), (36, n), (16, n)] and n % (W // 4) == 0
        return n // (W // 4)
    assert rows(4 * per_row) == 4
    assert rows(12 * per_row) == 7     # 7 + 6, not 12 + 1
    # a part tile column counts as a tile: 9 columns make 3 tiles per tile row
    assert L.winograd4x4_scratch_shapes(8, 9, C, K)[1][1] == 2 * 3


def test_winograd4x4_transforms_as_products_are_the_textbook_ones():
    # kron(B^T, B^T) on the 36 numbers of a patch is B^T d B, and kron(A^T, A^T) on the 36 numbers
    # of m is A^T m A (row-major order: entry (a, b) is number 6a + b).
    r = rng(23)
    BT, AT = (np.array(m, dtype=float) for m in (L.WINOGRAD4_BT, L.WINOGRAD4_AT))
    BT2, AT2 = (np.array(m, dtype=float) for m in (L.winograd4x4.WINOGRAD4_BT2, L.winograd4x4.WINOGRAD4_AT2))
    assert BT2.shape == (36, 36) and AT2.shape == (16, 36)
    d, m = r.normal(size=(6, 6)), r.normal(size=(6, 6))
    np.testing.assert_allclose(BT2 @ d.reshape(36), (BT @ d @ BT.T).reshape(36), rtol=1e-13)
    np.testing.assert_allclose(AT2 @ m.reshape(36), (AT @ m @ AT.T).reshape(16), rtol=1e-13)
    assert np.all(AT2[:, 7] == 1)     # m[1][1] reaches all 16 outputs with weight +1: it carries the bias


def test_winograd4x4_float32_error_against_the_float64_direct_convolution():
    # F(4x4, 3x3)'s transforms multiply by 5/2 and 8 and G holds 1/15, so float32 loses more digits
    # than with F(2x2, 3x3) (measured here: 2.3e-6 against 3.3e-7 of the largest output, on VGG-like
    # statistics with 256 channels); still far inside what a float32 gradient needs. The bound also
    # holds the choice of points: with Lavin and Gray's 0, +-1, +-2 this layer's error is 6.1e-6.
    r = rng(21)
    H, W, C, K = 24, 20, 256, 64
    x = np.maximum(r.normal(size=(C, H, W)), 0)
    w = r.normal(size=(K, C, 3, 3)) / np.sqrt(9 * C)
    b = r.normal(size=K)
    exact = L.conv3x3_forward(L.to_padded(x), H, W, L.conv_taps(w), b, np.empty((L.padded_length(H, W), K)), relu=False)
    x32, w32, b32 = (a.astype(np.float32) for a in (x, w, b))
    taps = L.conv_taps(w32)
    scale = float(np.abs(exact).max())
    errors = {}
    for name, fwd, U in (("2d", L.conv3x3_winograd2d_forward, L.winograd2d_taps(taps)),
                         ("4x4", L.conv3x3_winograd4x4_forward, L.winograd4x4_taps(taps))):
        got = fwd(L.to_padded(x32), H, W, U, b32, np.empty((L.padded_length(H, W), K), np.float32), relu=False)
        assert got.dtype == np.float32
        errors[name] = float(np.abs(got - exact).max()) / scale
    assert errors["2d"] < 2e-6 and errors["4x4"] < 5e-6, errors
    # the backward pass, which runs the same algorithm on flipped maps (2.9e-6 here; 6.5e-6 with
    # Lavin and Gray's points)
    dY = np.zeros((L.padded_length(H, W), K))
    L.interior(dY, H, W)[...] = r.normal(size=(H, W, K))
    exact = L.conv3x3_backward(dY, H, W, L.conv_taps(w), np.empty((L.padded_length(H, W), C)))
    got = L.conv3x3_winograd4x4_backward(dY.astype(np.float32), H, W, L.winograd4x4_taps(taps),
                                         np.empty((L.padded_length(H, W), C), np.float32))
    error = float(np.abs(L.interior(got, H, W) - L.interior(exact, H, W)).max()) / float(np.abs(exact).max())
    assert error < 5e-6, error


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
    # the layout's invariant: the border (the next convolution's padding) is exactly zero
    for P_out, h, w in ((out, H // 2, W // 2), (dP, H, W)):
        np.testing.assert_array_equal(to_host(P_out), to_host(L.to_padded(L.from_padded(P_out, h, w))))


@pytest.mark.parametrize("block", [1, 5 * 7, 10 ** 6])
def test_relu_mask_backward_in_blocks_is_the_mask(xp, block):
    # Blocks of one row, of 7 rows (the last one short: 45 rows) and the whole map at once.
    r = rng(15)
    Y = xp.asarray(np.maximum(np.round(r.normal(size=(45, 5)) * 2), 0))    # many exact zeros
    g = r.normal(size=(45, 5))
    want = g * (to_host(Y) > 0)
    for mask in (Y, Y > 0):                       # the map itself, or the bool mask the network keeps
        dY = xp.asarray(g.copy())
        got = L.relu_mask_backward(dY, mask, block=block)
        assert got is dY
        np.testing.assert_array_equal(to_host(got), want)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("H,W", [(12, 10), (9, 7)])
def test_pool_relu_backward_in_place_is_pooling_then_the_relu_mask(xp, mode, H, W):
    # Y is a ReLU output with many zeros and, for max pooling, ties (values on a coarse grid)
    r = rng(14)
    Y = L.to_padded(xp.asarray(np.maximum(np.round(r.normal(size=(5, H, W)) * 2), 0)))
    dout = L.to_padded(xp.asarray(r.normal(size=(5, H // 2, W // 2))))
    want = L.pool_backward_padded(dout, Y, H, W, xp.full(Y.shape, np.nan), mode)
    L.relu_mask_backward(want, Y)
    got = L.pool_relu_backward_in_place(dout, Y.copy(), H, W, mode, rows=2)   # several row blocks
    np.testing.assert_array_equal(to_host(got), to_host(want))      # the border and a dropped row too


@pytest.mark.parametrize("H,W", [(12, 10), (9, 7), (2, 3)])
def test_pool_relu_backward_from_a_mask_equals_the_pass_over_the_map(xp, H, W):
    # The network keeps only [Y > 0] of some maps and writes their gradient into memory that held
    # something else: the values, the zero border and a dropped odd row or column must all be made.
    r = rng(18)
    Y = L.to_padded(xp.asarray(np.maximum(np.round(r.normal(size=(5, H, W)) * 2), 0)))
    dout = L.to_padded(xp.asarray(r.normal(size=(5, H // 2, W // 2))))
    want = L.pool_relu_backward_in_place(dout, Y.copy(), H, W, "avg")
    room = xp.full(Y.shape, np.nan)
    got = L.pool_relu_backward_from_mask(dout, Y > 0, H, W, room, rows=2)      # several row blocks
    assert got is room
    np.testing.assert_array_equal(to_host(got), to_host(want))


@pytest.mark.parametrize("transpose", [False, True])
def test_winograd4x4_patches_and_outputs_may_live_in_other_buffers(transpose):
    # VGG19 puts the gathered patches D and the products M in the same memory, and the outputs Y
    # and the transformed input Z (SCRATCH_SHARED), the smaller of each pair inside the bigger: the
    # products of one chunk overwrite D, Y overwrites Z. Several chunks of 2 tile rows, part tiles
    # right and below, more channels out than in and fewer (so that each of D and M is the smaller
    # one somewhere).
    r = rng(19)
    for H, W, C, K in ((21, 13, 4, 5), (17, 10, 6, 2)):
        if transpose:
            C, K = K, C
        P = L.to_padded(r.normal(size=(C, H, W)))
        taps = r.normal(size=(9, K, C) if transpose else (9, C, K))
        U = L.winograd4x4_taps(taps)
        tw = -(-W // 4)
        shapes = L.winograd4x4_scratch_shapes(H, W, C, K, chunk_bytes=2 * 36 * tw * max(C, K) * 8, itemsize=8)
        assert shapes[1][1] == 2 * tw and set(L.winograd4x4.SCRATCH_SHARED) == {(0, 2), (3, 1)}
        separate = [np.full(s, np.nan) for s in shapes]
        shared = [np.full(s, np.nan) for s in shapes]
        for i, j in L.winograd4x4.SCRATCH_SHARED:
            small, big = (j, i) if shared[j].size < shared[i].size else (i, j)
            shared[small] = shared[big].reshape(-1)[:shared[small].size].reshape(shapes[small])
        out_separate, out_shared = (np.full((L.padded_length(H, W), K), np.nan) for _ in range(2))
        direct = np.full((L.padded_length(H, W), K), np.nan)
        if transpose:
            want = L.conv3x3_winograd4x4_backward(P, H, W, U, out_separate, scratch=separate)
            got = L.conv3x3_winograd4x4_backward(P, H, W, U, out_shared, scratch=shared)
            truth = L.conv3x3_backward(P, H, W, taps, direct)
        else:
            bias = r.normal(size=K)
            want = L.conv3x3_winograd4x4_forward(P, H, W, U, bias, out_separate, scratch=separate)
            got = L.conv3x3_winograd4x4_forward(P, H, W, U, bias, out_shared, scratch=shared)
            truth = L.conv3x3_forward(P, H, W, taps, bias, direct)
        np.testing.assert_allclose(L.from_padded(got, H, W), L.from_padded(truth, H, W), rtol=1e-10, atol=1e-10)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("how,H,W,band", [("rows", 20, 9, 8), ("rows", 17, 6, 4), ("2d", 16, 10, 4),
                                         ("2d", 15, 9, 8), ("4x4", 24, 14, 8), ("4x4", 21, 13, 12)])
def test_convolution_in_place_by_bands_equals_the_whole_map(xp, how, H, W, band):
    # the backward kernels of the network's Winograd algorithms, band by band over their own input
    from handnst.networks.vgg import WINOGRAD_KERNELS
    taps_of, _, _, backward = WINOGRAD_KERNELS[how]
    r = rng(15)
    C = 6
    U = taps_of(xp.asarray(r.normal(size=(9, C, C))))
    G = L.to_padded(xp.asarray(r.normal(size=(C, H, W))))
    want = backward(G, H, W, U, xp.full(G.shape, np.nan))
    scratch = xp.full(L.padded_length(band, W) * C, np.nan)
    got = L.conv_in_place_by_bands(lambda Pb, h, out: backward(Pb, h, W, U, out), G, H, W, band, scratch)
    assert got is G
    np.testing.assert_allclose(to_host(got), to_host(want), rtol=1e-12, atol=1e-12 * float(abs(want).max()))
    np.testing.assert_array_equal(to_host(L.zero_border(got.copy(), H, W)), to_host(got))   # border still zero


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
