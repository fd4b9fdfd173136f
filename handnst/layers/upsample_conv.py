"""Nearest-neighbour upsampling by 2 and a reflection-padded 3x3 convolution, as one layer that never
builds the upsampled map: four 2x2 convolutions of the small map, one for each output phase.

The transformation network's decoder (conv4, conv5) computes

    out = conv3x3(reflection_pad(upsample2x(x), 1), w, b)        x: (N, C, H, W) -> out: (N, K, 2H, 2W)

Written out for the output pixel (2i + p, 2j + q), with p, q in {0, 1} its *phase*:

    out[2i+p, 2j+q] = b + sum_{u, v in 0..2} w[u, v] . Up[2i+p+u, 2j+q+v]      (Up: the padded upsampled map)

Two facts make it cheap:

1. Reflecting the upsampled map by one pixel gives what upsampling the *edge-padded* small map gives.
   Up[0] reflects row 1 of the upsampled map, which is x[0]; Up[2H + 1] reflects row 2H - 2, which
   is x[H - 1]; inside, Up[r] = x[(r - 1) // 2]. With xe = x padded by repeating its edge pixels once
   (xe[s] = x[clip(s - 1, 0, H - 1)]), every case reads Up[r] = xe[(r + 1) // 2].

2. So output row 2i + p reads rows (2i + p + u + 1) // 2 = i + (p + u + 1) // 2 of xe, for u = 0, 1, 2:

       p = 0:  u = 0 -> xe row i,        u = 1, 2 -> xe row i + 1
       p = 1:  u = 0, 1 -> xe row i + 1, u = 2 -> xe row i + 2

   Only two different rows, i + p and i + p + 1: the taps that land on the same row can be added
   first. The same holds for the columns. Each phase is therefore a 2x2 convolution of xe,

       out[:, :, p::2, q::2] = conv2x2(xe[:, :, p:p+H+1, q:q+W+1], S_p w S_q^T) + b

   with S_0 = [[1, 0, 0], [0, 1, 1]] and S_1 = [[1, 1, 0], [0, 0, 1]] summing the taps (for every
   filter pair (k, c)). Four phases of 4 products instead of 9 products at four times as many
   pixels: 16 multiplications for a 2x2 block of outputs instead of 36, exactly (no rounding of
   its own, unlike Winograd), and the upsampled map (4 C H W numbers) is never written.

The backward pass runs each phase's convolution backwards: the phase's outputs' gradient gives that
phase's dL/dxe (added into the window it read) and dL/dw_pq, which the adjoint of the tap sums sends
back to the 3x3 filter, dL/dw += S_p^T dL/dw_pq S_q; the edge padding's adjoint then adds the border
of dL/dxe onto the edge pixels it copied.

Three fast forms: the batch layers (`upsample_conv_forward`, each phase a `conv_batch` product);
one image in the padded layout for applying (`upsample_conv_padded_forward`); and a training batch
as one stacked map (`upsample_conv_stacked_forward` and its backward pass), where every phase's
products, input gradient and weight gradient read contiguous row slices (measured for a batch of 4,
forward and backward: conv4 77 -> 49 ms, conv5 76 -> 63 ms at width 32).
"""

from handnst.backend import array_module, gemm
from handnst.layers.conv_batch import conv_batch_backward, conv_batch_backward_naive, conv_batch_forward, \
    conv_batch_forward_naive
from handnst.layers.padded import interior, zero_border
from handnst.layers.stacked import fill_rings, fill_rings_backward, from_stacked, stacked_size, to_stacked
from handnst.layers.reflection_pad import reflection_pad_backward_naive, reflection_pad_forward_naive
from handnst.layers.upsample import upsample2x_backward_naive, upsample2x_forward_naive

# S[p] (2 x 3): which of the three taps along an axis land on the two rows (columns) phase p reads.
PHASE_SUMS = (((1, 0, 0), (0, 1, 1)),
              ((1, 1, 0), (0, 0, 1)))


# ---------------------------------------------------------------------------------- naive version

def upsample_conv_forward_naive(x, w, b):
    """The definition, layer after layer: upsample (loops), reflection-pad by 1 (loops), convolve
    (loops). x (N, C, H, W), w (K, C, 3, 3), b (K,) -> out (N, K, 2H, 2W), cache."""
    up, up_cache = upsample2x_forward_naive(x)
    padded, pad_cache = reflection_pad_forward_naive(up, 1)
    out, conv_cache = conv_batch_forward_naive(padded, w, b, 1)
    return out, (up_cache, pad_cache, conv_cache)


def upsample_conv_backward_naive(dout, cache):
    """dx, dw, db through the three naive layers in reverse order."""
    up_cache, pad_cache, conv_cache = cache
    dpadded, dw, db = conv_batch_backward_naive(dout, conv_cache)
    return upsample2x_backward_naive(reflection_pad_backward_naive(dpadded, pad_cache), up_cache), dw, db


# ------------------------------------------------------------------------------------ fast version

def edge_pad_forward(x):
    """x (N, C, H, W) -> (N, C, H + 2, W + 2), its edge pixels repeated once (corners included)."""
    xp = array_module(x)
    N, C, H, W = x.shape
    out = xp.empty((N, C, H + 2, W + 2), dtype=x.dtype)
    out[:, :, 1:H + 1, 1:W + 1] = x
    out[:, :, 1:H + 1, 0] = x[:, :, :, 0]
    out[:, :, 1:H + 1, W + 1] = x[:, :, :, W - 1]
    out[:, :, 0] = out[:, :, 1]
    out[:, :, H + 1] = out[:, :, H]
    return out


def edge_pad_backward(dout):
    """The adjoint of edge_pad_forward: the border rows add onto the first and last rows, then the
    border columns (corners included, now folded into them) onto the first and last columns."""
    H, W = dout.shape[2] - 2, dout.shape[3] - 2
    d = dout[:, :, 1:H + 1].copy()                 # (N, C, H, W + 2)
    d[:, :, 0] += dout[:, :, 0]
    d[:, :, H - 1] += dout[:, :, H + 1]
    dx = d[:, :, :, 1:W + 1].copy()
    dx[:, :, :, 0] += d[:, :, :, 0]
    dx[:, :, :, W - 1] += d[:, :, :, W + 1]
    return dx


def _phase_sums(xp, dtype):
    return [xp.asarray(s, dtype=dtype) for s in PHASE_SUMS]


def phase_filters(w, p, q):
    """The 2x2 filters (K, C, 2, 2) of output phase (p, q): S_p w S_q^T, the taps that read the same
    pixel of the edge-padded small map added together."""
    xp = array_module(w)
    S = _phase_sums(xp, w.dtype)
    return xp.ascontiguousarray(xp.einsum("au,kcuv,bv->kcab", S[p], w, S[q]))


def upsample_conv_forward(x, w, b):
    """Same contract as upsample_conv_forward_naive, by the four phase convolutions (module docstring).

    Each phase is one `conv_batch_forward` (2x2 kernel, stride 1) of a window of the edge-padded
    map, written into every other row and column of the output. The cache holds the four phases'
    caches (their inputs: together as large as the upsampled map) for the backward pass.
    """
    xp = array_module(x)
    N, C, H, W = x.shape
    K = w.shape[0]
    xe = edge_pad_forward(x)
    out = xp.empty((N, K, 2 * H, 2 * W), dtype=x.dtype)
    caches = []
    for p in (0, 1):
        for q in (0, 1):
            y, conv_cache = conv_batch_forward(xe[:, :, p:p + H + 1, q:q + W + 1], phase_filters(w, p, q), b)
            out[:, :, p::2, q::2] = y
            caches.append((p, q, conv_cache))
    return out, (x.shape, w.shape, caches)


def upsample_conv_backward(dout, cache, need_dx=True):
    """dx, dw, db of upsample_conv_forward: each phase backwards, its filter gradient sent through the
    adjoint of the tap sums (S_p^T dw_pq S_q), its input gradient added into the window it read, and
    the edge padding's adjoint at the end. dout (N, K, 2H, 2W); dx is None when need_dx is False."""
    (N, C, H, W), w_shape, caches = cache
    xp = array_module(dout)
    S = _phase_sums(xp, dout.dtype)
    dxe = xp.zeros((N, C, H + 2, W + 2), dtype=dout.dtype) if need_dx else None
    dw = xp.zeros(w_shape, dtype=dout.dtype)
    db = None
    for p, q, conv_cache in caches:
        dxp, dwp, dbp = conv_batch_backward(dout[:, :, p::2, q::2], conv_cache, need_dx=need_dx)
        dw += xp.einsum("au,kcab,bv->kcuv", S[p], dwp, S[q])
        db = dbp if db is None else db + dbp
        if need_dx:
            dxe[:, :, p:p + H + 1, q:q + W + 1] += dxp
    return (edge_pad_backward(dxe) if need_dx else None), dw, db


# ------------------------------------------------------------------- padded layout (applying only)

def phase_taps(w):
    """Filters (K, C, 3, 3) -> (2, 2, 4, C, K): [p, q, 2a + c] = phase_filters(w, p, q)[:, :, a, c].T,
    the (C, K) matrix that phase (p, q) applies to the edge-padded small map shifted by (a, c)."""
    xp = array_module(w)
    K, C = w.shape[:2]
    S = _phase_sums(xp, w.dtype)
    hwio = xp.ascontiguousarray(w.transpose(2, 3, 1, 0))                  # (3, 3, C, K)
    taps = xp.empty((2, 2, 4, C, K), dtype=w.dtype)
    for p in (0, 1):
        rows = xp.tensordot(S[p], hwio, axes=(1, 0))                       # (2, 3, C, K): sum over u
        for q in (0, 1):                                                   # ... then over v
            taps[p, q] = xp.tensordot(S[q], rows, axes=(1, 1)).transpose(1, 0, 2, 3).reshape(4, C, K)
    return taps


def _phase_product(P, row, taps, p, q, bias, Y):
    """Y = bias + sum_{a, c} P[o : o + len(Y)] @ taps[p, q, 2a + c] with o = (p + a) row + (q + c):
    phase (p, q) of the edge-padded map P, whose grid rows are `row` long, on contiguous row slices."""
    Y[...] = bias
    for a in (0, 1):
        for c in (0, 1):
            o = (p + a) * row + (q + c)
            gemm(P[o:o + Y.shape[0]], taps[p, q, 2 * a + c], Y, accumulate=True)
    return Y


def upsample_conv_padded_forward(P, H, W, taps, bias, out, scratch=None):
    """upsample_conv_forward for one image in the padded channels-last layout (handnst.layers.padded).

    P (padded_length(H, W), C): the small map, its border filled by edge padding (fill_border(...,
    "edge")), which is the xe of the module docstring. taps = phase_taps(w), bias (K,). out
    (padded_length(2H, 2W), K) receives the 2H x 2W result with a zero border.

    Phase (p, q) is a 2x2 convolution of xe: output (i, j) reads xe rows i + p + a and columns
    j + q + c for a, c in {0, 1}. As in conv3x3_forward, computing it at every row r = i (W + 2) + j
    of the padded grid makes each of the four taps one product with a contiguous row-slice of P,

        Y = b + sum_{a, c} P[o : o + N] @ taps[p, q, 2a + c],    o = (p + a)(W + 2) + (q + c),  N = H (W + 2),

    whose two junk columns per row are dropped when Y goes into every other pixel of `out`.
    scratch: an (N, K) buffer for Y (allocated when None).
    """
    xp = array_module(P)
    K = taps.shape[-1]
    N = H * (W + 2)
    Y = xp.empty((N, K), dtype=P.dtype) if scratch is None else scratch
    big = interior(out, 2 * H, 2 * W)
    for p in (0, 1):
        for q in (0, 1):
            _phase_product(P, W + 2, taps, p, q, bias, Y)
            big[p::2, q::2] = Y.reshape(H, W + 2, K)[:, :W]
    return zero_border(out, 2 * H, 2 * W)


# ---------------------------------------------------------- stacked layout (training, a whole batch)

def _phase_rows(Y, N, H, W):
    """View (N, H, W, K) of the outputs of one phase in Y, the product rows of
    upsample_conv_stacked_forward: image n's output (i, j) is row (1 + n (H + 2) + i) (W + 4) + 1 + j."""
    return Y.reshape(N, H + 2, W + 4, Y.shape[1])[:, 1:H + 1, 1:W + 1]


def upsample_conv_stacked_forward(x, w, b):
    """Same contract as upsample_conv_forward, for a training batch: the edge-padded small maps are
    one stacked map (handnst.layers.stacked; the edge padding is each image's ring), and each phase
    is four products on its row slices, as upsample_conv_padded_forward does for one image:

        Y_pq = b + sum_{a, c} X[o : o + R] @ taps[p, q, 2a + c],   o = (p + a)(Ws + 2) + (q + c),

    R = Hs (Ws + 2) rows, of which every image's H x W outputs are picked into out[:, :, p::2, q::2].
    The cache keeps the stacked input (a quarter of the upsampled map's size) and the phase taps.
    """
    xp = array_module(x)
    N, C, H, W = x.shape
    K = w.shape[0]
    Hs, Ws = stacked_size(N, H, W)
    R = Hs * (Ws + 2)
    X = fill_rings(to_stacked(x), N, H, W, "edge")
    taps = phase_taps(w)
    Y = xp.empty((R, K), dtype=x.dtype)
    out = xp.empty((N, K, 2 * H, 2 * W), dtype=x.dtype)
    for p in (0, 1):
        for q in (0, 1):
            _phase_product(X, Ws + 2, taps, p, q, b, Y)
            out[:, :, p::2, q::2] = _phase_rows(Y, N, H, W).transpose(0, 3, 1, 2)
    return out, (X, taps, x.shape)


def upsample_conv_stacked_backward(dout, cache, need_dx=True):
    """dx, dw, db of upsample_conv_stacked_forward. Each phase's product runs backwards on the same
    row slices: the phase taps receive X[o : o + R]^T @ dY_pq, the slices dY_pq @ taps^T (added up in
    the stacked map, ring included); the adjoint of the tap sums sends the taps' gradients back onto
    the 3x3 filter (dL/dw += S_p^T dL/dw_pq S_q) and the ring's adjoint (edge padding) folds the
    ring onto the pixels it repeats. dx is None when need_dx is False."""
    X, taps, (N, C, H, W) = cache
    xp = array_module(dout)
    K = taps.shape[-1]
    Hs, Ws = stacked_size(N, H, W)
    R = Hs * (Ws + 2)
    S = _phase_sums(xp, dout.dtype)
    dY = xp.zeros((R, K), dtype=dout.dtype)                 # zero wherever Y was junk
    dX = xp.zeros_like(X) if need_dx else None
    dtaps = xp.empty((4, C, K), dtype=dout.dtype)
    dw = xp.zeros((K, C, 3, 3), dtype=dout.dtype)
    for p in (0, 1):
        for q in (0, 1):
            _phase_rows(dY, N, H, W)[...] = dout[:, :, p::2, q::2].transpose(0, 2, 3, 1)
            for a in (0, 1):
                for c in (0, 1):
                    o = (p + a) * (Ws + 2) + (q + c)
                    gemm(X[o:o + R], dY, dtaps[2 * a + c], trans_a=True)
                    if need_dx:
                        gemm(dY, taps[p, q, 2 * a + c], dX[o:o + R], accumulate=True, trans_b=True)
            dw += xp.einsum("au,abck,bv->kcuv", S[p], dtaps.reshape(2, 2, C, K), S[q])
    db = dout.sum(axis=(0, 2, 3))
    dx = from_stacked(fill_rings_backward(dX, N, H, W, "edge"), N, H, W) if need_dx else None
    return dx, dw, db

