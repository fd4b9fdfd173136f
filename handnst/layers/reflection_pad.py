"""Reflection padding of a batch (N, C, H, W) and its adjoint.

Zero padding makes a dark frame appear around every picture a convolutional network paints; the
transformation network pads by *reflecting* the map at its border instead, as PyTorch's
`ReflectionPad2d`, NumPy's `np.pad(mode="reflect")` and Johnson's and Ulyanov's networks do:

    index in the padded axis   q = 0 1 2 3 | 4 5 6 7 8 ... | ...        (pad p = 4, length n)
    index it is read from      r = 4 3 2 1 | 0 1 2 3 4 ... | n-2 n-3 ...

that is, r(q) = |q - p| reflected again at the far end: the border pixel itself is not repeated.
It needs p <= n - 1 (a map of height 1 has nothing to reflect).

Padding is linear, out = R x for a 0/1 matrix R that copies; so its backward pass is the adjoint
R^T: every pixel of x collects the gradient of each padded position that was copied from it (the
border rows and columns of dx receive their own gradient plus the gradient of their mirror images).
"""

from handnst.backend import array_module
from handnst.errors import InputError


def reflect_index(q, pad, n):
    """The index of x along an axis of length n that padded position q (0 <= q < n + 2 pad) reads."""
    r = q - pad
    if r < 0:
        r = -r
    if r > n - 1:
        r = 2 * (n - 1) - r
    return r


def _check(shape, pad):
    H, W = shape[-2:]
    if pad < 0 or (pad > 0 and (pad > H - 1 or pad > W - 1)):
        raise InputError(f"reflection padding by {pad} needs a map of at least {pad + 1} x {pad + 1} "
                         f"pixels, got {H} x {W}")


# ---------------------------------------------------------------------------------- naive loops

def reflection_pad_forward_naive(x, pad):
    """out[n, c, i, j] = x[n, c, r(i), r(j)] for every padded position (i, j), one position at a time.

    x: (N, C, H, W) -> out (N, C, H + 2 pad, W + 2 pad). The cache is the input's shape and pad.
    """
    xp = array_module(x)
    _check(x.shape, pad)
    N, C, H, W = x.shape
    out = xp.empty((N, C, H + 2 * pad, W + 2 * pad), dtype=x.dtype)
    for i in range(H + 2 * pad):
        for j in range(W + 2 * pad):
            out[:, :, i, j] = x[:, :, reflect_index(i, pad, H), reflect_index(j, pad, W)]
    return out, (x.shape, pad)


def reflection_pad_backward_naive(dout, cache):
    """The adjoint, one padded position at a time: dx[n, c, r(i), r(j)] += dout[n, c, i, j]."""
    shape, pad = cache
    xp = array_module(dout)
    N, C, H, W = shape
    dx = xp.zeros(shape, dtype=dout.dtype)
    for i in range(H + 2 * pad):
        for j in range(W + 2 * pad):
            dx[:, :, reflect_index(i, pad, H), reflect_index(j, pad, W)] += dout[:, :, i, j]
    return dx


# ------------------------------------------------------------------------------------- fast path

def reflection_pad_forward(x, pad, out=None):
    """Same contract as the naive version, with whole-slice copies: the interior in one copy, then
    each of the `pad` mirrored rows (top and bottom), then each mirrored column over the full padded
    height, which also fills the corners (a corner is the mirror of a mirrored row). The loops run
    over the pad width (at most 4 here), never over pixels. `out` may be given to reuse a buffer.
    """
    xp = array_module(x)
    _check(x.shape, pad)
    N, C, H, W = x.shape
    p = pad
    if out is None:
        out = xp.empty((N, C, H + 2 * p, W + 2 * p), dtype=x.dtype)
    out[:, :, p:p + H, p:p + W] = x
    for k in range(1, p + 1):
        out[:, :, p - k, p:p + W] = x[:, :, k]                 # row p - k mirrors row k of x
        out[:, :, p + H - 1 + k, p:p + W] = x[:, :, H - 1 - k]  # row H - 1 + k mirrors row H - 1 - k
    for k in range(1, p + 1):
        out[:, :, :, p - k] = out[:, :, :, p + k]
        out[:, :, :, p + W - 1 + k] = out[:, :, :, p + W - 1 - k]
    return out, (x.shape, pad)


def reflection_pad_backward(dout, cache):
    """The adjoint of reflection_pad_forward: undo its copies in reverse order, adding instead of
    copying. First every mirrored column adds into the column it was copied from (over the full
    padded height, corners included), then every mirrored row adds into its source row, and the
    interior is what remains. dout: (N, C, H + 2 pad, W + 2 pad) -> dx (N, C, H, W), a new array.
    """
    shape, pad = cache
    N, C, H, W = shape
    p = pad
    if p == 0:
        return dout.copy()
    d = dout[:, :, :, p:p + W].copy()             # the columns of x, over the full padded height
    for k in range(1, p + 1):
        d[:, :, :, k] += dout[:, :, :, p - k]
        d[:, :, :, W - 1 - k] += dout[:, :, :, p + W - 1 + k]
    dx = d[:, :, p:p + H].copy()
    for k in range(1, p + 1):
        dx[:, :, k] += d[:, :, p - k]
        dx[:, :, H - 1 - k] += d[:, :, p + H - 1 + k]
    return dx
