"""Nearest-neighbour upsampling by 2 of a batch (N, C, H, W), and its adjoint.

    out[n, c, i, j] = x[n, c, i // 2, j // 2]          out: (N, C, 2H, 2W)

Every input pixel is copied onto a 2x2 block, so the backward pass (the adjoint of the copy) sums
the gradient over each 2x2 block:

    dx[n, c, i, j] = sum_{a, b in {0, 1}} dout[n, c, 2i + a, 2j + b]

Johnson's network upsampled with fractionally strided (transposed) convolutions; upsampling first
and then convolving, as here, avoids their checkerboard artifacts (Odena, Dumoulin & Olah, 2016).
"""

from handnst.backend import array_module


def upsample2x_forward_naive(x):
    """One output pixel at a time: out[:, :, i, j] = x[:, :, i // 2, j // 2]. Returns out, cache."""
    xp = array_module(x)
    N, C, H, W = x.shape
    out = xp.empty((N, C, 2 * H, 2 * W), dtype=x.dtype)
    for i in range(2 * H):
        for j in range(2 * W):
            out[:, :, i, j] = x[:, :, i // 2, j // 2]
    return out, x.shape


def upsample2x_backward_naive(dout, cache):
    """One output pixel at a time: dx[:, :, i // 2, j // 2] += dout[:, :, i, j]."""
    xp = array_module(dout)
    N, C, H, W = cache
    dx = xp.zeros((N, C, H, W), dtype=dout.dtype)
    for i in range(2 * H):
        for j in range(2 * W):
            dx[:, :, i // 2, j // 2] += dout[:, :, i, j]
    return dx


def upsample2x_forward(x, out=None):
    """The same copy as one broadcast assignment: out seen as (N, C, H, 2, W, 2) receives x seen as
    (N, C, H, 1, W, 1). `out` may be given: any (N, C, 2H, 2W) array, such as the interior of the next
    layer's padded input (then the four (a, b) phases are written one after the other)."""
    xp = array_module(x)
    N, C, H, W = x.shape
    if out is None:
        out = xp.empty((N, C, 2 * H, 2 * W), dtype=x.dtype)
    blocks = out.view()
    try:
        blocks.shape = (N, C, H, 2, W, 2)       # a view (setting the shape never copies), or an error
    except AttributeError:
        for a in (0, 1):
            for b in (0, 1):
                out[:, :, a::2, b::2] = x
        return out, x.shape
    blocks[...] = x.reshape(N, C, H, 1, W, 1)
    return out, x.shape


def upsample2x_backward(dout, cache):
    """The sum over each 2x2 block: dout seen as (N, C, H, 2, W, 2), its four (a, b) slices added."""
    N, C, H, W = cache
    d = dout.reshape(N, C, H, 2, W, 2)
    dx = d[:, :, :, 0, :, 0] + d[:, :, :, 0, :, 1]
    dx += d[:, :, :, 1, :, 0]
    dx += d[:, :, :, 1, :, 1]
    return dx
