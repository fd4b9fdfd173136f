"""Instance normalization (Ulyanov, Vedaldi & Lempitsky, 2016) of a batch (N, C, H, W), forward and
backward.

Each channel of each image is normalized on its own, over its M = H*W positions, then scaled and
shifted by learned per-channel parameters:

    mu    = 1/M sum_p x_p                          (one mean per image and channel)
    var   = 1/M sum_p (x_p - mu)^2                 (biased variance, as PyTorch's InstanceNorm2d)
    xhat  = (x - mu) / sigma,    sigma = sqrt(var + eps),   eps = 1e-5
    y     = scale * xhat + shift

Backward. Let g = dL/dy for one image and channel (a vector over p). The parameters are easy:

    dL/dshift = sum_{n, p} g,        dL/dscale = sum_{n, p} g * xhat

The input is not, because mu and sigma depend on *every* x_q. Write gh = scale * g = dL/dxhat. From
xhat_p = (x_p - mu) / sigma, with d mu / d x_q = 1/M and

    d var / d x_q = 2/M sum_p (x_p - mu) (delta_pq - 1/M) = 2/M (x_q - mu)      (the sum of x_p - mu is 0)
    d sigma / d x_q = (d var / d x_q) / (2 sigma) = xhat_q / M,

the Jacobian of the normalization is

    d xhat_p / d x_q = (delta_pq - 1/M) / sigma - (x_p - mu) / sigma^2 * xhat_q / M
                     = 1/sigma * (delta_pq - 1/M - xhat_p xhat_q / M),

a symmetric matrix. So dL/dx_q = sum_p gh_p d xhat_p / d x_q gives

    dL/dx = 1/sigma * (gh - mean(gh) - xhat * mean(gh * xhat))

(means over the M positions). Two consequences the tests check: dL/dx sums to zero over each
channel (adding a constant to x changes nothing), and it is orthogonal to xhat (scaling x changes
nothing). The first is why a convolution's bias in front of instance normalization gets a gradient
of exactly zero: the bias adds a constant to its output channel, and the mean takes it away again.

The naive version builds the M x M Jacobian above for every image and channel and multiplies by it;
the fast one is the closed form, vectorized over the whole batch, with the two means computed as
reductions over the last two axes.
"""

from handnst.backend import array_module, column_sums
from handnst.layers.padded import interior

EPS = 1e-5


# ---------------------------------------------------------------------------------- naive loops

def instance_norm_forward_naive(x, scale, shift, eps=EPS):
    """The definition, one image and channel at a time. Returns y (N, C, H, W) and a cache."""
    xp = array_module(x)
    N, C, H, W = x.shape
    M = H * W
    y = xp.empty_like(x)
    xhat = xp.empty_like(x)
    sigma = xp.empty((N, C), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            v = x[n, c].reshape(M)
            mu = v.sum() / M
            var = ((v - mu) ** 2).sum() / M
            sigma[n, c] = (var + eps) ** 0.5
            xhat[n, c] = ((v - mu) / sigma[n, c]).reshape(H, W)
            y[n, c] = scale[c] * xhat[n, c] + shift[c]
    return y, (xhat, sigma, scale)


def instance_norm_backward_naive(dout, cache):
    """dx, dscale, dshift with the explicit Jacobian J[p, q] = (delta_pq - 1/M - xhat_p xhat_q / M) / sigma
    of every image and channel: dx = J^T (scale * dout)."""
    xhat, sigma, scale = cache
    xp = array_module(dout)
    N, C, H, W = dout.shape
    M = H * W
    dx = xp.empty_like(dout)
    dscale = xp.zeros(C, dtype=dout.dtype)
    dshift = xp.zeros(C, dtype=dout.dtype)
    eye = xp.eye(M, dtype=dout.dtype)
    for n in range(N):
        for c in range(C):
            h = xhat[n, c].reshape(M)
            g = dout[n, c].reshape(M)
            dshift[c] += g.sum()
            dscale[c] += (g * h).sum()
            J = (eye - 1.0 / M - h[:, None] * h[None, :] / M) / sigma[n, c]
            dx[n, c] = (J.T @ (scale[c] * g)).reshape(H, W)
    return dx, dscale, dshift


# ------------------------------------------------------------------------------------- fast path

def instance_norm_forward(x, scale, shift, eps=EPS, out=None, overwrite_x=False):
    """Same contract as the naive version, vectorized over the batch.

    The cache keeps xhat (the backward pass needs it) and 1/sigma per image and channel. `out`, if
    given, receives y (any array of x's shape, such as the interior of the next layer's padded input).
    With overwrite_x, xhat is computed in x's memory (a network whose convolution output is needed
    by nobody else saves one map).
    """
    xp = array_module(x)
    N, C, H, W = x.shape
    mu = x.mean(axis=(2, 3), keepdims=True)
    xhat = xp.subtract(x, mu, out=x if overwrite_x else None)
    var = xp.einsum("ncp,ncp->nc", xhat.reshape(N, C, -1), xhat.reshape(N, C, -1)) / (H * W)
    inv = 1.0 / xp.sqrt(var + eps)
    inv = inv.astype(x.dtype, copy=False).reshape(N, C, 1, 1)
    xhat *= inv
    y = xp.multiply(xhat, scale.reshape(1, C, 1, 1), out=out)
    y += shift.reshape(1, C, 1, 1)
    return y, (xhat, inv, scale)


def instance_norm_backward(dout, cache):
    """dx = 1/sigma * (gh - mean(gh) - xhat * mean(gh * xhat)) with gh = scale * dout; dscale, dshift.

    Per image and channel, mean(gh) = scale * mean(dout) and mean(gh * xhat) = scale * mean(dout * xhat),
    so the two reductions are taken on dout once and also give the parameter gradients.
    """
    xhat, inv, scale = cache
    xp = array_module(dout)
    N, C, H, W = dout.shape
    M = H * W
    d2, h2 = dout.reshape(N, C, M), xhat.reshape(N, C, M)
    sum_g = d2.sum(axis=2)                                   # (N, C): sum_p dout
    sum_gh = xp.einsum("ncp,ncp->nc", d2, h2)                # (N, C): sum_p dout * xhat
    dshift = sum_g.sum(axis=0)
    dscale = sum_gh.sum(axis=0)
    s = scale.reshape(1, C, 1, 1)
    a = (s * inv)                                            # scale / sigma, (N, C, 1, 1)
    # dx = a * (dout - mean(dout) - xhat * mean(dout * xhat))
    dx = xhat * (-(sum_gh / M).reshape(N, C, 1, 1))
    dx += dout
    dx -= (sum_g / M).reshape(N, C, 1, 1)
    dx *= a
    return dx, dscale, dshift


# ------------------------------------------------------------------- padded layout (applying only)

def instance_norm_padded_forward(P, H, W, scale, shift, eps=EPS, relu=False, rows=16):
    """Instance normalization (+ ReLU) of one image in the padded channels-last layout of
    handnst.layers.padded, in place and with no cache: the path that applies a trained network.

    P (L, C) holds an H x W map whose border and slack rows are zero, as a convolution leaves them,
    so sums over all L rows are sums over the M = H W pixels. Same mean, biased variance and eps as
    instance_norm_forward, and the same result to rounding:

        mu  = 1/M P^T ones                          (BLAS, column_sums: summed more accurately
                                                     than a column-wise NumPy sum, and faster)
        var = 1/M sum_pixels (x - mu)^2             (centred, as the batch layer: no cancellation)
        y   = a x + (shift - a mu),   a = scale / sqrt(var + eps),   then max(y, 0) if relu

    Two things make it fast. Each image row of the map is one contiguous run of W C numbers, so the
    per-channel vectors are tiled W times and every operation runs on whole rows (broadcasting a
    (C,) vector instead makes NumPy's inner loop only C long). And the map goes `rows` image rows at
    a time, so that the subtraction and the squares, or the scaling, the shift and the ReLU, find
    their block in cache after the first one has read it. The border stays zero.
    """
    xp = array_module(P)
    M = H * W
    C = P.shape[1]
    mu = column_sums(P) / M
    pixels = interior(P, H, W).reshape(H, W * C)         # image row i: one contiguous run of W C
    mu_rows = xp.tile(mu, W)
    centred = xp.empty((min(rows, H), W * C), dtype=P.dtype)
    sq = xp.zeros(W * C, dtype=xp.float64)                 # per (column, channel), added in float64
    for r in range(0, H, rows):
        block = pixels[r:r + rows]
        c = centred[:block.shape[0]]
        xp.subtract(block, mu_rows, out=c)
        sq += xp.einsum("hk,hk->k", c, c)
    var = sq.reshape(W, C).sum(axis=0) / M
    a = (scale / xp.sqrt(var + eps)).astype(P.dtype, copy=False)
    a_rows = xp.tile(a, W)
    b_rows = xp.tile((shift - a * mu).astype(P.dtype, copy=False), W)
    for r in range(0, H, rows):
        block = pixels[r:r + rows]
        block *= a_rows
        block += b_rows
        if relu:
            xp.maximum(block, 0, out=block)
    return P
