"""The transformation network's layers on a batch: fast equals naive, both equal finite differences,
and each agrees with an independent definition (np.pad, np.repeat, the single-image convolution)."""

import numpy as np
import pytest

from handnst import layers as L
from handnst.backend import get_xp, to_host
from handnst.errors import InputError
from handnst.gradcheck import LAYER_TOLERANCE
from handnst.gradcheck_transform import transform_layer_checks
from handnst.networks.transform import residual_backward, residual_forward

from backends import BACKENDS


@pytest.fixture(params=BACKENDS)
def xp(request):
    return get_xp(request.param)


def rng(seed=0):
    return np.random.default_rng(seed)


def close(a, b, tol=1e-12):
    np.testing.assert_allclose(to_host(a), to_host(b), rtol=tol, atol=tol)


# ---------------------------------------------------------------------------- reflection padding

@pytest.mark.parametrize("shape,pad", [((2, 3, 6, 7), 1), ((1, 2, 5, 5), 4), ((2, 1, 9, 6), 4), ((1, 1, 2, 2), 1),
                                       ((1, 2, 4, 3), 0)])
def test_reflection_pad_matches_numpy_and_naive(xp, shape, pad):
    r = rng(1)
    x = xp.asarray(r.normal(size=shape))
    want = np.pad(to_host(x), ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    out_n, cache_n = L.reflection_pad_forward_naive(x, pad)
    out_f, cache_f = L.reflection_pad_forward(x, pad)
    close(out_n, want, 0)
    close(out_f, want, 0)
    dout = xp.asarray(r.normal(size=want.shape))
    close(L.reflection_pad_backward(dout, cache_f), L.reflection_pad_backward_naive(dout, cache_n))


def test_reflection_pad_backward_is_the_adjoint():
    # <R x, y> = <x, R^T y> for random x, y: the backward pass is the transpose of the copy.
    r = rng(2)
    x = r.normal(size=(2, 3, 6, 5))
    out, cache = L.reflection_pad_forward(x, 4)
    y = r.normal(size=out.shape)
    assert np.isclose((out * y).sum(), (x * L.reflection_pad_backward(y, cache)).sum(), rtol=1e-12)


def test_reflection_pad_hand_example_and_too_small_map():
    x = np.arange(3.0).reshape(1, 1, 1, 3)
    x = np.repeat(x, 3, axis=2)                               # rows [0 1 2]
    out, _ = L.reflection_pad_forward(x, 2)
    np.testing.assert_array_equal(out[0, 0, 0], [2, 1, 0, 1, 2, 1, 0])
    with pytest.raises(InputError, match="at least 5 x 5"):
        L.reflection_pad_forward(np.zeros((1, 1, 4, 8)), 4)


# ------------------------------------------------------------------------------ batched convolution

@pytest.mark.parametrize("shape,kshape,stride", [
    ((2, 3, 7, 6), (4, 3, 3, 3), 1),
    ((3, 2, 8, 9), (5, 2, 3, 3), 2),
    ((2, 2, 11, 10), (3, 2, 9, 9), 1),
    ((1, 3, 6, 7), (2, 3, 1, 1), 1),
    ((2, 2, 9, 8), (3, 2, 5, 3), 2),
    ((2, 6, 9, 8), (2, 6, 3, 5), 1),
])
@pytest.mark.parametrize("chunk", [1, 60, 1 << 22], ids=["row-bands", "some-images", "whole-batch"])
@pytest.mark.parametrize("method", [None, "strided", "rows", "outputs", "wide"])
def test_conv_batch_fast_equals_naive(xp, shape, kshape, stride, chunk, method):
    if method in ("rows", "outputs", "wide") and stride != 1:
        pytest.skip("stride 1 only")
    r = rng(3)
    x, w, b = (xp.asarray(r.normal(size=s)) for s in (shape, kshape, kshape[:1]))
    out_n, cache_n = L.conv_batch_forward_naive(x, w, b, stride)
    out_f, cache_f = L.conv_batch_forward(x, w, b, stride, chunk=chunk, method=method)
    Ho = L.conv_batch_output_size(shape[2], kshape[2], stride)
    Wo = L.conv_batch_output_size(shape[3], kshape[3], stride)
    assert out_f.shape == out_n.shape == (shape[0], kshape[0], Ho, Wo)
    close(out_f, out_n)
    dout = xp.asarray(r.normal(size=out_n.shape))
    for got, want in zip(L.conv_batch_backward(dout, cache_f, chunk=chunk), L.conv_batch_backward_naive(dout, cache_n)):
        close(got, want)
    assert L.conv_batch_backward(dout, cache_f, need_dx=False, chunk=chunk)[0] is None


def test_conv_batch_method_choice():
    assert L.conv_batch_method(32, 3, 1) == "outputs"       # conv6: unfold the 3 output channels
    assert L.conv_batch_method(3, 32, 1) == "wide"          # conv1: 4 outputs per unfolded column
    assert L.conv_batch_method(32, 16, 2) == "strided"      # stride 2 is always plain im2col
    with pytest.raises(ValueError):
        L.conv_batch_forward(np.zeros((1, 2, 5, 5)), np.zeros((1, 2, 3, 3)), np.zeros(1), 2, method="rows")


def test_conv_batch_chunks_cover_every_output_once():
    for N, Ho, Wo, rows, chunk in ((4, 32, 32, 1152, 1 << 22), (1, 384, 512, 2592, 1 << 22), (3, 5, 4, 9, 50)):
        seen = np.zeros((N, Ho), dtype=int)
        for n0, n1, r0, r1 in L.conv_batch_chunks(N, Ho, Wo, rows, chunk):
            seen[n0:n1, r0:r1] += 1
            assert (n1 - n0) * (r1 - r0) * Wo * rows <= chunk or (n1 - n0, r1 - r0) == (1, 1)
        assert (seen == 1).all()


def test_conv_batch_equals_the_single_image_convolution():
    # Image by image, the batched layer is the textbook conv of handnst.layers.conv with pad 0.
    r = rng(4)
    x, w, b = r.normal(size=(3, 2, 9, 8)), r.normal(size=(4, 2, 3, 3)), r.normal(size=4)
    for stride in (1, 2):
        out, cache = L.conv_batch_forward(x, w, b, stride)
        dout = r.normal(size=out.shape)
        dx, dw, db = L.conv_batch_backward(dout, cache)
        dw_sum, db_sum = 0, 0
        for n in range(3):
            o, c = L.conv_forward(x[n], w, b, stride, 0)
            close(out[n], o)
            close(dx[n], L.conv_backward(dout[n], c))
            dwn, dbn = L.conv_weight_backward(dout[n], c)
            dw_sum, db_sum = dw_sum + dwn, db_sum + dbn
        close(dw, dw_sum)
        close(db, db_sum)


def test_conv_batch_float32_stays_float32():
    r = rng(5)
    x = r.normal(size=(2, 3, 8, 8)).astype(np.float32)
    w = r.normal(size=(4, 3, 3, 3)).astype(np.float32)
    out, cache = L.conv_batch_forward(x, w, np.zeros(4, np.float32), 2)
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in L.conv_batch_backward(np.ones_like(out), cache))


# --------------------------------------------------------------------------- instance normalization

@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 4, 3, 3), (3, 2, 1, 6)])
def test_instance_norm_fast_equals_naive(xp, shape):
    r = rng(6)
    x = xp.asarray(r.normal(loc=3.0, scale=2.0, size=shape))
    scale, shift = xp.asarray(r.normal(size=shape[1])), xp.asarray(r.normal(size=shape[1]))
    out_n, cache_n = L.instance_norm_forward_naive(x, scale, shift)
    out_f, cache_f = L.instance_norm_forward(x, scale, shift)
    close(out_f, out_n)
    scratch = x.copy()
    out_o, cache_o = L.instance_norm_forward(scratch, scale, shift, overwrite_x=True)
    assert cache_o[0] is scratch                       # xhat lives in the input's memory
    close(out_o, out_n)
    dout = xp.asarray(r.normal(size=shape))
    for got, want in zip(L.instance_norm_backward(dout, cache_f), L.instance_norm_backward_naive(dout, cache_n)):
        close(got, want, 1e-11)


def test_instance_norm_normalizes_each_image_and_channel():
    r = rng(7)
    x = r.normal(loc=5.0, scale=3.0, size=(2, 3, 6, 5))
    y, _ = L.instance_norm_forward(x, np.ones(3), np.zeros(3))
    np.testing.assert_allclose(y.mean(axis=(2, 3)), 0, atol=1e-12)
    var = x.var(axis=(2, 3))                                   # biased, as the layer uses
    np.testing.assert_allclose(y.var(axis=(2, 3)), var / (var + 1e-5), rtol=1e-12)
    y2, _ = L.instance_norm_forward(x, np.full(3, 2.0), np.full(3, -1.0))
    np.testing.assert_allclose(y2, 2 * y - 1, rtol=1e-12, atol=1e-12)


def test_instance_norm_input_gradient_ignores_constants_and_scaling():
    # dL/dx sums to zero over every image and channel (a constant added to x changes nothing) and,
    # without eps, is orthogonal to x - mean (scaling x about its mean changes nothing either).
    r = rng(8)
    x = r.normal(size=(2, 3, 6, 5))
    for eps in (1e-5, 0.0):
        y, cache = L.instance_norm_forward(x, r.normal(size=3), r.normal(size=3), eps=eps)
        dx, _, _ = L.instance_norm_backward(r.normal(size=y.shape), cache)
        np.testing.assert_allclose(dx.sum(axis=(2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose((dx * (x - x.mean(axis=(2, 3), keepdims=True))).sum(axis=(2, 3)), 0, atol=1e-12)


# ------------------------------------------------------------------------------------ upsampling

@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 1, 1)])
def test_upsample_matches_repeat_and_naive(xp, shape):
    r = rng(9)
    x = xp.asarray(r.normal(size=shape))
    want = np.repeat(np.repeat(to_host(x), 2, axis=2), 2, axis=3)
    out_n, cache_n = L.upsample2x_forward_naive(x)
    out_f, cache_f = L.upsample2x_forward(x)
    close(out_n, want, 0)
    close(out_f, want, 0)
    dout = xp.asarray(r.normal(size=want.shape))
    dx = L.upsample2x_backward(dout, cache_f)
    close(dx, L.upsample2x_backward_naive(dout, cache_n))
    blocks = to_host(dout).reshape(shape[0], shape[1], shape[2], 2, shape[3], 2).sum(axis=(3, 5))
    close(dx, blocks)


@pytest.mark.parametrize("shape,K", [((2, 3, 4, 5), 4), ((1, 5, 1, 2), 2), ((1, 2, 3, 3), 7)])
def test_upsample_conv_equals_upsample_pad_conv(xp, shape, K):
    # The phase form must give what the three layers give one after the other (np.repeat, np.pad
    # with mode="reflect", the batched convolution), forward and backward, for maps as small as 1 row.
    r = rng(12)
    x, w, b = (xp.asarray(r.normal(size=s)) for s in (shape, (K, shape[1], 3, 3), (K,)))
    up = np.repeat(np.repeat(to_host(x), 2, axis=2), 2, axis=3)
    padded = xp.asarray(np.pad(up, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect"))
    want, conv_cache = L.conv_batch_forward_naive(padded, w, b, 1)
    out_n, cache_n = L.upsample_conv_forward_naive(x, w, b)
    out_f, cache_f = L.upsample_conv_forward(x, w, b)
    close(out_n, want)
    close(out_f, want)
    dout = xp.asarray(r.normal(size=want.shape))
    dpadded, dw_want, db_want = L.conv_batch_backward_naive(dout, conv_cache)
    # the input gradient through the two separately tested adjoints, reflection padding and upsampling
    N, C, H, W = shape
    dup = L.reflection_pad_backward_naive(dpadded, ((N, C, 2 * H, 2 * W), 1))
    dx_want = L.upsample2x_backward_naive(dup, shape)
    for dx, dw, db in (L.upsample_conv_backward_naive(dout, cache_n), L.upsample_conv_backward(dout, cache_f)):
        close(dx, dx_want)
        close(dw, dw_want)
        close(db, db_want)
    dx_none, dw_only, _ = L.upsample_conv_backward(dout, cache_f, need_dx=False)
    assert dx_none is None
    close(dw_only, dw_want)


def test_edge_pad_and_its_adjoint():
    x = rng(13).normal(size=(2, 3, 4, 5))
    np.testing.assert_array_equal(L.edge_pad_forward(x), np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge"))
    d = rng(14).normal(size=(2, 3, 6, 7))
    # adjoint: <edge_pad(x), d> = <x, edge_pad^T(d)>
    np.testing.assert_allclose((L.edge_pad_forward(x) * d).sum(), (x * L.edge_pad_backward(d)).sum(), rtol=1e-12)


def test_residual_sum_sends_the_gradient_to_both_branches():
    x, f = np.ones((1, 2, 2, 2)), np.full((1, 2, 2, 2), 2.0)
    y, cache = residual_forward(x, f)
    np.testing.assert_array_equal(y, 3.0)
    d = np.arange(8.0).reshape(y.shape)
    dx, df = residual_backward(d, cache)
    np.testing.assert_array_equal(dx, d)
    np.testing.assert_array_equal(df, d)


# -------------------------------------------------------------------------------- finite differences

def _names():
    return [name for name, _, _ in transform_layer_checks("numpy")]


@pytest.mark.parametrize("index", range(len(_names())), ids=_names())
def test_transform_layer_gradients_match_finite_differences(xp, index):
    backend = "cupy" if xp.__name__ == "cupy" else "numpy"
    name, fn, tol = transform_layer_checks(backend)[index]
    assert tol == LAYER_TOLERANCE
    err = fn()
    assert err <= tol, f"{name}: max relative error {err:.2e} > {tol:.0e}"


# ------------------------------------------------- writing straight into the next padded input

def test_layers_write_into_the_interior_of_a_padded_buffer():
    # The network writes each layer's output into the next convolution's padded input and fills only
    # the border: the same numbers as padding a separate copy.
    r = rng(11)
    x = r.normal(size=(2, 3, 6, 5))
    scale, shift = r.normal(size=3), r.normal(size=3)
    for pad in (1, 4):
        buf = np.full((2, 3, 6 + 2 * pad, 5 + 2 * pad), np.nan)
        view = buf[:, :, pad:pad + 6, pad:pad + 5]
        y, _ = L.instance_norm_forward(x, scale, shift, out=view)
        assert y is view
        L.reflect_border(buf, pad)
        np.testing.assert_array_equal(buf, L.reflection_pad_forward(L.instance_norm_forward(x, scale, shift)[0], pad)[0])
    small = r.normal(size=(2, 3, 3, 4))
    buf = np.full((2, 3, 8, 10), np.nan)
    L.upsample2x_forward(small, out=buf[:, :, 1:7, 1:9])
    L.reflect_border(buf, 1)
    np.testing.assert_array_equal(buf, L.reflection_pad_forward(L.upsample2x_forward(small)[0], 1)[0])


# ----------------------------------------------------- the padded layout (applying a trained net)

def _padded_from(xp, x):
    """(C, H, W) -> the padded channels-last matrix, on the backend."""
    return L.to_padded(xp.asarray(x))


@pytest.mark.parametrize("H,W", [(5, 4), (2, 2), (3, 7)])
@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_fill_border_is_numpy_padding(xp, H, W, mode):
    x = rng(11).normal(size=(3, H, W))
    P = L.fill_border(_padded_from(xp, x), H, W, mode)
    want = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode=mode).transpose(1, 2, 0)
    close(L.padded_grid(P, H, W), want, 0)
    close(P[(H + 2) * (W + 2):], np.zeros((2, 3)), 0)          # the slack rows stay zero


@pytest.mark.parametrize("C,H,W", [(3, 5, 4), (4, 1, 1), (2, 6, 9)])
@pytest.mark.parametrize("relu", [False, True])
def test_instance_norm_padded_equals_the_batch_layer(xp, C, H, W, relu):
    r = rng(12)
    x = r.normal(size=(C, H, W)) * 3 + 2
    scale, shift = xp.asarray(r.normal(size=C)), xp.asarray(r.normal(size=C))
    want, _ = L.instance_norm_forward(xp.asarray(x[None]), scale, shift)
    if relu:
        want = xp.maximum(want, 0)
    P = L.instance_norm_padded_forward(_padded_from(xp, x), H, W, scale, shift, relu=relu)
    close(L.from_padded(P, H, W), want[0], 1e-12)
    grid = to_host(L.padded_grid(P, H, W))                     # the border is still zero
    assert not grid[0].any() and not grid[H + 1].any() and not grid[:, 0].any() and not grid[:, W + 1].any()


@pytest.mark.parametrize("C,K,H,W", [(3, 4, 4, 5), (5, 2, 1, 2), (2, 7, 3, 3)])
def test_upsample_conv_padded_equals_the_batch_layer(xp, C, K, H, W):
    r = rng(13)
    x, w, b = (xp.asarray(r.normal(size=s)) for s in ((C, H, W), (K, C, 3, 3), (K,)))
    want, _ = L.upsample_conv_forward(x[None], w, b)
    P = L.fill_border(L.to_padded(x), H, W, "edge")
    out = xp.full((L.padded_length(2 * H, 2 * W), K), np.nan)    # every value must be written
    L.upsample_conv_padded_forward(P, H, W, L.phase_taps(w), b, out)
    close(L.from_padded(out, 2 * H, 2 * W), want[0], 1e-12)
    grid = to_host(L.padded_grid(out, 2 * H, 2 * W))
    assert not grid[0].any() and not grid[-1].any() and not grid[:, 0].any() and not grid[:, -1].any()


@pytest.mark.parametrize("H,W,rows", [(5, 4, 4), (9, 3, 2), (1, 1, 4)])
def test_from_padded_into_writes_every_pixel(xp, H, W, rows):
    x = rng(14).normal(size=(3, H, W))
    buf = xp.full((3, H + 2, W + 6), np.nan)
    L.from_padded_into(_padded_from(xp, x), H, W, buf[:, 1:H + 1, 3:W + 3], rows=rows)
    close(buf[:, 1:H + 1, 3:W + 3], x, 0)
    assert np.isnan(to_host(buf)[:, 0]).all()                  # and nothing outside the view


# ------------------------------------------------------------ the stacked layout the residual blocks train in

def _stacked(xp, x):
    return L.to_stacked(xp.asarray(x))


@pytest.mark.parametrize("N,C,H,W", [(2, 3, 4, 5), (3, 2, 3, 2), (1, 4, 6, 6)])
def test_stacked_layout_round_trips_and_fills_rings_like_numpy(xp, N, C, H, W):
    x = rng(20).normal(size=(N, C, H, W))
    P = _stacked(xp, x)
    close(L.from_stacked(P, N, H, W), x, 0)
    pixels = L.image_pixels(P, N, H, W)
    if xp is np:
        assert np.shares_memory(pixels, P)                      # a view: writes to it land in P
    close(pixels.reshape(N, H, W, C), x.transpose(0, 2, 3, 1), 0)
    for n in range(N):                                          # one image's rows sum to its pixels' sum
        close(L.image_rows(P, N, H, W, n).sum(axis=0), x[n].sum(axis=(1, 2)), 1e-12)
    L.fill_rings(P, N, H, W)
    want = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect").transpose(0, 2, 3, 1)
    close(L.image_grids(P, N, H, W), want, 0)
    Hs, Ws = L.stacked_size(N, H, W)
    grid = to_host(L.padded_grid(P, Hs, Ws))                   # the stacked map's own border stays zero
    assert not grid[0].any() and not grid[Hs + 1].any() and not grid[:, 0].any() and not grid[:, Ws + 1].any()
    L.zero_rings(P, N, H, W)
    close(L.image_grids(P, N, H, W), np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))).transpose(0, 2, 3, 1), 0)


def test_fill_rings_backward_is_the_adjoint():
    # <F x, y> = <x, F^T y>: x lives on the pixels, y on the whole grids (rings included).
    N, C, H, W = 2, 3, 5, 4
    r = rng(21)
    x = _stacked(np, r.normal(size=(N, C, H, W)))
    y = _stacked(np, np.zeros((N, C, H, W)))
    L.image_grids(y, N, H, W)[...] = r.normal(size=(N, H + 2, W + 2, C))
    Fx = L.fill_rings(x.copy(), N, H, W)
    Fty = L.fill_rings_backward(y.copy(), N, H, W)
    assert np.isclose((Fx * y).sum(), (x * Fty).sum(), rtol=1e-12)
    ring = L.image_grids(Fty, N, H, W)                          # the adjoint leaves nothing on the rings
    assert not ring[:, 0].any() and not ring[:, -1].any() and not ring[:, :, 0].any() and not ring[:, :, -1].any()


@pytest.mark.parametrize("N,C,K,H,W", [(2, 3, 4, 4, 5), (3, 2, 3, 3, 2), (1, 4, 2, 6, 6)])
@pytest.mark.parametrize("winograd", [True, False], ids=["winograd", "direct"])
def test_stacked_convolution_equals_the_batch_layers(xp, N, C, K, H, W, winograd):
    # reflection pad 1 + 3x3 convolution as batch layers, forward and every gradient, against the
    # stacked map's convolution, ring fold and nine-product weight gradient
    r = rng(22)
    x, w, b = (xp.asarray(r.normal(size=s)) for s in ((N, C, H, W), (K, C, 3, 3), (K,)))
    xpad, pad_cache = L.reflection_pad_forward(x, 1)
    want, conv_cache = L.conv_batch_forward(xpad, w, b, 1)
    dout = xp.asarray(r.normal(size=want.shape))
    dxpad, dw_want, _ = L.conv_batch_backward(dout, conv_cache)
    dx_want = L.reflection_pad_backward(dxpad, pad_cache)

    Hs, Ws = L.stacked_size(N, H, W)
    X = L.fill_rings(L.to_stacked(x), N, H, W)
    taps = L.conv_taps(w)
    Y = xp.full_like(X[:, :1].repeat(K, axis=1), np.nan)      # every value must be written
    if winograd:
        L.conv3x3_winograd_forward(X, Hs, Ws, L.winograd_taps(taps), b, Y, relu=False)
    else:
        L.conv3x3_forward(X, Hs, Ws, taps, b, Y, relu=False)
    L.zero_rings(Y, N, H, W)
    close(L.from_stacked(Y, N, H, W), want)
    dY = L.to_stacked(dout)
    close(L.conv3x3_weight_gradient(X, dY, Hs, Ws), L.conv_taps(dw_want))
    close(L.conv3x3_winograd_weight_gradient(X, dY, Hs, Ws), L.conv_taps(dw_want))
    if winograd:
        dX = L.conv3x3_winograd_backward(dY, Hs, Ws, L.winograd_taps(taps), xp.empty_like(X))
    else:
        dX = L.conv3x3_backward(dY, Hs, Ws, taps, xp.zeros_like(X))
    close(L.from_stacked(L.fill_rings_backward(dX, N, H, W), N, H, W), dx_want)


@pytest.mark.parametrize("N,C,H,W", [(2, 3, 4, 5), (1, 2, 2, 3), (3, 4, 6, 2)])
@pytest.mark.parametrize("relu", [False, True])
def test_instance_norm_stacked_equals_the_batch_layer(xp, N, C, H, W, relu):
    r = rng(23)
    x = xp.asarray(r.normal(size=(N, C, H, W)) * 3 + 2)
    scale, shift = xp.asarray(r.normal(size=C)), xp.asarray(r.normal(size=C))
    want, cache = L.instance_norm_forward(x, scale, shift)
    dout = xp.asarray(r.normal(size=x.shape))
    if relu:
        dmasked = dout * (want > 0)
        want = xp.maximum(want, 0)
    else:
        dmasked = dout
    dx_want, dscale_want, dshift_want = L.instance_norm_backward(dmasked, cache)

    P = L.to_stacked(x)
    out, st_cache = L.instance_norm_stacked_forward(P, N, H, W, scale, shift, out=P, relu=relu)
    close(L.from_stacked(out, N, H, W), want)
    L.fill_rings(out, N, H, W)                                  # as the network does: the mask reads pixels only
    dx, dscale, dshift = L.instance_norm_stacked_backward(L.to_stacked(dout), st_cache, L.to_stacked(0 * x))
    close(L.from_stacked(dx, N, H, W), dx_want, 1e-10)
    close(dscale, dscale_want, 1e-10)
    close(dshift, dshift_want, 1e-10)


@pytest.mark.parametrize("N,C,K,H,W", [(2, 3, 4, 4, 5), (3, 2, 3, 1, 2), (1, 4, 2, 3, 3)])
def test_upsample_conv_stacked_equals_the_batch_layer(xp, N, C, K, H, W):
    r = rng(24)
    x, w, b = (xp.asarray(r.normal(size=s)) for s in ((N, C, H, W), (K, C, 3, 3), (K,)))
    want, cache = L.upsample_conv_forward(x, w, b)
    got, st_cache = L.upsample_conv_stacked_forward(x, w, b)
    close(got, want)
    dout = xp.asarray(r.normal(size=want.shape))
    for g, w_ in zip(L.upsample_conv_stacked_backward(dout, st_cache), L.upsample_conv_backward(dout, cache)):
        close(g, w_)
    assert L.upsample_conv_stacked_backward(dout, st_cache, need_dx=False)[0] is None


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_fill_rings_modes_match_numpy_and_their_adjoints(mode):
    N, C, H, W = 2, 3, 4, 3
    r = rng(25)
    x = r.normal(size=(N, C, H, W))
    P = L.fill_rings(L.to_stacked(x), N, H, W, mode)
    close(L.image_grids(P, N, H, W), np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode=mode).transpose(0, 2, 3, 1), 0)
    y = L.to_stacked(np.zeros_like(x))
    L.image_grids(y, N, H, W)[...] = r.normal(size=(N, H + 2, W + 2, C))
    assert np.isclose((P * y).sum(), (L.to_stacked(x) * L.fill_rings_backward(y.copy(), N, H, W, mode)).sum(), rtol=1e-12)
    with pytest.raises(ValueError, match="ring mode"):
        L.fill_rings(P, N, H, W, "wrap")


@pytest.mark.parametrize("C,K,H,W,chunked", [(3, 4, 5, 6, False), (4, 2, 6, 3, False), (5, 3, 9, 4, True)])
def test_winograd_weight_gradient_equals_the_nine_products(xp, C, K, H, W, chunked):
    # on a plain padded map, odd heights and one tile row per chunk included
    r = rng(26)
    P, dY = L.to_padded(xp.asarray(r.normal(size=(C, H, W)))), L.to_padded(xp.asarray(r.normal(size=(K, H, W))))
    scratch = None
    if chunked:
        scratch = [xp.full(s, np.nan) for s in L.winograd_scratch_shapes(H, W, C, K, chunk_bytes=1)]   # stale NaN
    close(L.conv3x3_winograd_weight_gradient(P, dY, H, W, scratch=scratch), L.conv3x3_weight_gradient(P, dY, H, W))
