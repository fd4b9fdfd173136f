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
    """Same contract as the naive version, with four block copies after the interior: the mirrored
    columns of the interior rows (left: x columns pad .. 1, reversed; right: W-2 .. W-1-pad), then
    the mirrored rows over the full padded width, which also fills the corners (a corner is the
    mirror of a mirrored column). Nothing loops over pixels; `out` may be given to reuse a buffer.
    """
    xp = array_module(x)
    _check(x.shape, pad)
    N, C, H, W = x.shape
    p = pad
    if out is None:
        out = xp.empty((N, C, H + 2 * p, W + 2 * p), dtype=x.dtype)
    out[:, :, p:p + H, p:p + W] = x
    return reflect_border(out, pad), (x.shape, pad)


def reflect_border(out, pad):
    """Fill the border of a padded buffer (N, C, H + 2 pad, W + 2 pad) whose interior already holds x,
    in place: reflection padding without the copy of the interior, for a layer that wrote its output
    straight into the next convolution's padded input. Returns `out`."""
    p = pad
    if p == 0:
        return out
    H, W = out.shape[2] - 2 * p, out.shape[3] - 2 * p
    _check((H, W), pad)
    x = out[:, :, p:p + H, p:p + W]
    out[:, :, p:p + H, :p] = x[:, :, :, 1:p + 1][..., ::-1]                 # column p - k mirrors k
    out[:, :, p:p + H, p + W:] = x[:, :, :, W - 1 - p:W - 1][..., ::-1]     # p + W - 1 + k mirrors W - 1 - k
    out[:, :, :p] = out[:, :, p + 1:2 * p + 1][:, :, ::-1]                  # row p - k mirrors row p + k
    out[:, :, p + H:] = out[:, :, H - 1:H - 1 + p][:, :, ::-1]              # row p + H - 1 + k mirrors p + H - 1 - k
    return out


def reflection_pad_backward(dout, cache):
    """The adjoint of reflection_pad_forward: every padded position adds its gradient into the pixel
    it was copied from. The interior is copied once; the mirrored rows (top and bottom strips, without
    the corners) add into rows 1 .. pad and H-1-pad .. H-2; the two column strips, taken over the full
    padded height, are first folded along their rows (which sends the corners where they belong) and
    then add into columns 1 .. pad and W-1-pad .. W-2. dout: (N, C, H + 2 pad, W + 2 pad) -> dx (N, C, H, W).
    """
    shape, pad = cache
    N, C, H, W = shape
    p = pad
    if p == 0:
        return dout.copy()

    def fold_rows(strip):               # (..., H + 2p, k) -> (..., H, k): rows added onto their mirrors
        f = strip[:, :, p:p + H].copy()
        f[:, :, 1:p + 1] += strip[:, :, :p][:, :, ::-1]
        f[:, :, H - 1 - p:H - 1] += strip[:, :, p + H:][:, :, ::-1]
        return f

    dx = dout[:, :, p:p + H, p:p + W].copy()
    dx[:, :, 1:p + 1] += dout[:, :, :p, p:p + W][:, :, ::-1]
    dx[:, :, H - 1 - p:H - 1] += dout[:, :, p + H:, p:p + W][:, :, ::-1]
    dx[:, :, :, 1:p + 1] += fold_rows(dout[:, :, :, :p])[..., ::-1]
    dx[:, :, :, W - 1 - p:W - 1] += fold_rows(dout[:, :, :, p + W:])[..., ::-1]
    return dx
