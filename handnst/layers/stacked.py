"""A batch of reflection-padded maps stacked into one padded map: how the residual blocks train.

The residual blocks of the transformation network are 3x3 convolutions of a small map (32 x 32 for
a 128 x 128 crop) with 128 channels, ten of them per pass. As batch layers (conv_batch) each one
unfolds its windows (im2col) and folds the gradients back (col2im); in the padded layout of
handnst.layers.padded a 3x3 convolution is a few large products on row slices of the map, with no
copy (and Winograd F(2, 3) takes a third of the products away). To train in that layout we need the
gradient of the *padding* too, since reflection padding passes it back onto the pixels it mirrors.
So each image's reflection-padded grid, (H + 2) x (W + 2), is stored whole as the *interior* of
one bigger padded map, the images one below the other:

    stacked map: Hs = N (H + 2) rows, Ws = W + 2 columns, with its own zero border (padded layout)

    image n's padded grid = rows n (H + 2) .. n (H + 2) + H + 1 of the stacked interior
    its pixels            = the grid without its outermost ring (the "ring" is the padding)

A convolution of the stacked map (conv3x3_forward or the Winograd one, unchanged) computes every
image's outputs at once, plus junk at the ring positions, which read across images or the zero
border: `zero_rings` clears them. Its backward pass, run on a gradient that is zero on the rings,
gives the gradient of every grid position, ring included, and `fill_rings_backward` adds each ring
value onto the pixel it was copied from. The weight gradient is nine products on row slices:
dL/dtaps[t] = X[o_t : o_t + N]^T @ dY[rows of the outputs] (conv3x3_weight_gradient).

The price is the junk: (H + 2)(W + 4) rows per image instead of H W pixels, a fifth more for
32 x 32, and still far cheaper than unfolding. Instance normalization works on each image's
pixels as rows of W C numbers (as instance_norm_padded_forward), keeping x_hat for its backward pass.
"""

from handnst.backend import array_module, column_sums, gemm
from handnst.layers.instance_norm import EPS
from handnst.layers.padded import fill_grid_border, fill_grid_border_backward, padded_grid, padded_length


def stacked_size(N, H, W):
    """(Hs, Ws): the stacked map's interior size for N images of H x W pixels."""
    return N * (H + 2), W + 2


def image_grids(P, N, H, W):
    """View (N, H + 2, W + 2, C) of every image's padded grid in stacked map P."""
    Hs, Ws = stacked_size(N, H, W)
    return padded_grid(P, Hs, Ws)[1:Hs + 1, 1:Ws + 1].reshape(N, H + 2, W + 2, P.shape[1])


def image_pixels(P, N, H, W):
    """View (N, H, W * C) of every image's pixels: row i of image n is one contiguous run of W C numbers."""
    return image_grids(P, N, H, W)[:, 1:H + 1, 1:W + 1].reshape(N, H, W * P.shape[1])


def image_rows(P, N, H, W, n):
    """Rows of P (2-D, contiguous) holding image n's whole grid, with the stacked map's zero border
    columns: sums over them are sums over the image's pixels when its ring is zero."""
    Hs, Ws = stacked_size(N, H, W)
    top = (1 + n * (H + 2)) * (Ws + 2)
    return P[top:top + (H + 2) * (Ws + 2)]


def empty_stacked(N, H, W, C, xp, dtype):
    """A zero stacked map for N images of C channels."""
    return xp.zeros((padded_length(*stacked_size(N, H, W)), C), dtype=dtype)


def to_stacked(x, out=None):
    """x (N, C, H, W) -> stacked map with every image's pixels in place and zero elsewhere."""
    xp = array_module(x)
    N, C, H, W = x.shape
    if out is None:
        out = empty_stacked(N, H, W, C, xp, x.dtype)
    grids = image_grids(out, N, H, W)
    for n in range(N):
        grids[n, 1:H + 1, 1:W + 1] = x[n].transpose(1, 2, 0)
    return out


def from_stacked(P, N, H, W):
    """Stacked map -> a new (N, C, H, W) array of the pixels."""
    return image_grids(P, N, H, W)[:, 1:H + 1, 1:W + 1].transpose(0, 3, 1, 2).copy()


def zero_rings(P, N, H, W):
    """Zero every image's ring (the junk a convolution of the stacked map leaves there)."""
    g = image_grids(P, N, H, W)
    g[:, 0] = 0
    g[:, H + 1] = 0
    g[:, :, 0] = 0
    g[:, :, W + 1] = 0
    return P


def fill_rings(P, N, H, W, mode="reflect"):
    """Pad every image by 1 in place, its ring filled from its pixels: "reflect" mirrors the second
    row and column (reflection padding; H, W >= 2), "edge" repeats the first and last (edge
    padding); padded.fill_grid_border on every image's grid."""
    fill_grid_border(image_grids(P, N, H, W), mode, what="ring")
    return P


def fill_rings_backward(dP, N, H, W, mode="reflect"):
    """The adjoint of fill_rings, in place: each ring value is added onto the pixel it was copied
    from, and the ring is cleared (padded.fill_grid_border_backward)."""
    fill_grid_border_backward(image_grids(dP, N, H, W), mode, what="ring")
    return dP


def conv3x3_weight_gradient(X, dY, Hs, Ws, out=None):
    """dL/dtaps (9, C, K) of a 3x3 convolution in the padded layout (conv3x3_forward), from its input
    X (L, C) and the gradient of its output dY (L, K), zero wherever the output was junk or border.

    conv3x3_forward computes Y[start + r] = b + sum_t X[o_t + r] @ taps[t] for r < N = Hs (Ws + 2),
    so tap t receives X[o_t : o_t + N]^T @ dY[start : start + N]: nine products on row slices."""
    xp = array_module(X)
    N = Hs * (Ws + 2)
    start = Ws + 3
    if out is None:
        out = xp.empty((9, X.shape[1], dY.shape[1]), dtype=X.dtype)
    for t in range(9):
        u, v = divmod(t, 3)
        o = u * (Ws + 2) + v
        gemm(X[o:o + N], dY[start:start + N], out[t], trans_a=True)
    return out


def instance_norm_stacked_forward(P, N, H, W, scale, shift, out, relu=False, eps=EPS):
    """Instance normalization (+ ReLU) of every image of stacked map P into the pixels of stacked
    map `out` (which may be P). P's rings must be zero. Same mean, biased variance and eps as
    instance_norm_forward. Returns out, cache = (x_hat (N, H, W C), 1 / sigma (N, C), scale, relu, out).

    Per image, on rows of W C numbers (the per-channel vectors tiled W times, see
    instance_norm_padded_forward): mu from a BLAS column sum, x_hat = (x - mu) / sigma, y = scale
    x_hat + shift."""
    xp = array_module(P)
    C = P.shape[1]
    M = H * W
    src, dst = image_pixels(P, N, H, W), image_pixels(out, N, H, W)
    xhat = xp.empty((N, H, W * C), dtype=P.dtype)
    inv = xp.empty((N, C), dtype=P.dtype)
    scale_rows, shift_rows = xp.tile(scale, W), xp.tile(shift, W)
    for n in range(N):
        mu = column_sums(image_rows(P, N, H, W, n)) / M
        xp.subtract(src[n], xp.tile(mu, W), out=xhat[n])
        var = xp.einsum("hk,hk->k", xhat[n], xhat[n]).reshape(W, C).sum(axis=0) / M
        inv[n] = 1 / xp.sqrt(var + eps)
        xhat[n] *= xp.tile(inv[n], W)
        xp.multiply(xhat[n], scale_rows, out=dst[n])
        dst[n] += shift_rows
        if relu:
            xp.maximum(dst[n], 0, out=dst[n])
    return out, (xhat, inv, scale, relu, out)


def instance_norm_stacked_backward(dP, cache, out):
    """dL/dx into the pixels of stacked map `out` (its rings left zero) for upstream dP (stacked,
    zero rings), with dL/dscale and dL/dshift: the formulas of instance_norm_backward, per image,
    after the ReLU mask when the forward pass had one. Returns out, dscale, dshift."""
    xhat, inv, scale, relu, y = cache
    xp = array_module(dP)
    N, H, WC = xhat.shape
    C = inv.shape[1]
    W = WC // C
    M = H * W
    g_all, y_all, dst = image_pixels(dP, N, H, W), image_pixels(y, N, H, W), image_pixels(out, N, H, W)
    dscale = xp.zeros(C, dtype=xp.float64)
    dshift = xp.zeros(C, dtype=xp.float64)
    g = xp.empty((H, WC), dtype=dP.dtype)
    for n in range(N):
        if relu:
            xp.multiply(g_all[n], y_all[n] > 0, out=g)       # the ReLU's mask first
        else:
            g[...] = g_all[n]
        sum_g = g.sum(axis=0).reshape(W, C).sum(axis=0)
        sum_gh = xp.einsum("hk,hk->k", g, xhat[n]).reshape(W, C).sum(axis=0)
        dshift += sum_g
        dscale += sum_gh
        a = xp.tile((scale * inv[n]).astype(dP.dtype, copy=False), W)
        d = dst[n]
        xp.multiply(xhat[n], xp.tile((-sum_gh / M).astype(dP.dtype, copy=False), W), out=d)
        d += g
        d -= xp.tile((sum_g / M).astype(dP.dtype, copy=False), W)
        d *= a
    return out, dscale.astype(dP.dtype), dshift.astype(dP.dtype)
