"""The layers of VGG19, each as a forward pass and a hand-written backward pass.

Part 1 is the textbook: one image `x` of shape (C, H, W), in the style of CS231n's `layers.py`:

    out, cache = conv_forward(x, w, b, stride=1, pad=1)
    dx = conv_backward(dout, cache)              # what stylization needs
    dw, db = conv_weight_backward(dout, cache)   # what training would need (derived in the lessons)

Every layer comes twice: `*_naive` with explicit loops, to read next to the math, and a vectorized
version to run. The tests compare the two with each other and with finite differences.

Part 2 is the layout the network actually runs in, for speed: a feature map of C channels on an H x W
grid is stored *channels last* with a one-pixel zero border, flattened, as a matrix of shape
(padded_length(H, W), C). In that layout a 3x3 convolution is nine matrix products whose inputs are
plain contiguous row-slices of the same buffer (no im2col copy), and the backward pass is nine more.
See `conv3x3_forward` for the derivation.
"""

from handnst.backend import array_module, gemm

# =============================================================================================
# Part 1. The textbook layers, on (C, H, W) arrays
# =============================================================================================


def conv_output_size(size, kernel, stride, pad):
    """Output length of a convolution along one axis: floor((size + 2 pad - kernel) / stride) + 1."""
    return (size + 2 * pad - kernel) // stride + 1


# ---------------------------------------------------------------------------------- convolution

def conv_forward_naive(x, w, b, stride=1, pad=1):
    """2-D convolution (cross-correlation, as in every deep-learning library), with loops.

    x: (C, H, W) input, w: (K, C, kh, kw) filters, b: (K,) biases.
    out[k, i, j] = b[k] + sum_{c, u, v} w[k, c, u, v] * xpad[c, i*stride + u, j*stride + v]
    where xpad is x with `pad` zeros on each side. Returns out (K, Ho, Wo) and a cache for backward.
    """
    xp = array_module(x)
    C, H, W = x.shape
    K, _, kh, kw = w.shape
    Ho, Wo = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    xpad = xp.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    out = xp.zeros((K, Ho, Wo), dtype=x.dtype)
    for k in range(K):
        for i in range(Ho):
            for j in range(Wo):
                window = xpad[:, i * stride:i * stride + kh, j * stride:j * stride + kw]
                out[k, i, j] = (window * w[k]).sum() + b[k]
    return out, (x, w, b, stride, pad)


def conv_backward_naive(dout, cache):
    """Gradient of the loss with respect to the convolution's input, with loops.

    Every output out[k, i, j] used the window xpad[:, i*s:i*s+kh, j*s:j*s+kw] with weights w[k], so
    dL/dxpad[c, i*s+u, j*s+v] += dout[k, i, j] * w[k, c, u, v]; then the border is cut off again.
    dout: (K, Ho, Wo) -> dx: (C, H, W).
    """
    x, w, b, stride, pad = cache
    xp = array_module(x)
    C, H, W = x.shape
    K, _, kh, kw = w.shape
    _, Ho, Wo = dout.shape
    dxpad = xp.zeros((C, H + 2 * pad, W + 2 * pad), dtype=x.dtype)
    for k in range(K):
        for i in range(Ho):
            for j in range(Wo):
                dxpad[:, i * stride:i * stride + kh, j * stride:j * stride + kw] += dout[k, i, j] * w[k]
    return dxpad[:, pad:pad + H, pad:pad + W]


def conv_weight_backward_naive(dout, cache):
    """Gradients with respect to the filters and biases, with loops.

    dL/dw[k, c, u, v] = sum_{i, j} dout[k, i, j] * xpad[c, i*s+u, j*s+v],  dL/db[k] = sum_{i, j} dout[k, i, j].
    """
    x, w, b, stride, pad = cache
    xp = array_module(x)
    K, C, kh, kw = w.shape
    _, Ho, Wo = dout.shape
    xpad = xp.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    dw = xp.zeros_like(w)
    for k in range(K):
        for i in range(Ho):
            for j in range(Wo):
                dw[k] += dout[k, i, j] * xpad[:, i * stride:i * stride + kh, j * stride:j * stride + kw]
    db = dout.sum(axis=(1, 2))
    return dw, db


def im2col(x, kh, kw, stride, pad):
    """Unfold every kh x kw window of x (C, H, W) into a column: cols of shape (C*kh*kw, Ho*Wo).

    Row (c, u, v) of cols holds xpad[c, u + i*stride, v + j*stride] for all outputs (i, j), so the
    convolution becomes a single matrix product  out = w.reshape(K, C*kh*kw) @ cols.
    The loop runs over the kh*kw kernel taps only; each step copies one strided slice of the image.
    """
    xp = array_module(x)
    C, H, W = x.shape
    Ho, Wo = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    xpad = xp.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    cols = xp.empty((C, kh, kw, Ho, Wo), dtype=x.dtype)
    for u in range(kh):
        for v in range(kw):
            cols[:, u, v] = xpad[:, u:u + stride * Ho:stride, v:v + stride * Wo:stride]
    return cols.reshape(C * kh * kw, Ho * Wo)


def col2im(cols, x_shape, kh, kw, stride, pad):
    """The adjoint of im2col: add every column back onto the window it came from.

    Overlapping windows add up, which is exactly the sum in dL/dx. Looping over the kh*kw taps and
    adding whole strided slices needs no scatter-add (np.add.at), which is slow.
    """
    xp = array_module(cols)
    C, H, W = x_shape
    Ho, Wo = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    cols = cols.reshape(C, kh, kw, Ho, Wo)
    xpad = xp.zeros((C, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)
    for u in range(kh):
        for v in range(kw):
            xpad[:, u:u + stride * Ho:stride, v:v + stride * Wo:stride] += cols[:, u, v]
    return xpad[:, pad:pad + H, pad:pad + W]


def conv_forward(x, w, b, stride=1, pad=1):
    """Vectorized convolution: im2col, then one matrix product. Same contract as conv_forward_naive.

    out (K, Ho*Wo) = W (K, C*kh*kw) @ cols (C*kh*kw, Ho*Wo) + b
    """
    C, H, W = x.shape
    K, _, kh, kw = w.shape
    Ho, Wo = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    cols = im2col(x, kh, kw, stride, pad)
    out = w.reshape(K, -1) @ cols + b[:, None]
    return out.reshape(K, Ho, Wo), (x, w, b, stride, pad)


def conv_backward(dout, cache):
    """Vectorized dL/dx: dcols = W^T @ dout, then col2im folds the columns back onto the image.

    Because out = W @ cols, dL/dcols = W^T @ dL/dout (shapes (C*kh*kw, K) @ (K, Ho*Wo)), and cols is
    a copy of pieces of x, so dL/dx is the sum of dL/dcols over every place a pixel was copied to.
    """
    x, w, b, stride, pad = cache
    K, C, kh, kw = w.shape
    dcols = w.reshape(K, -1).T @ dout.reshape(K, -1)
    return col2im(dcols, x.shape, kh, kw, stride, pad)


def conv_weight_backward(dout, cache):
    """Vectorized dL/dw = dout @ cols^T (reshaped to the filter shape), dL/db = row sums of dout."""
    x, w, b, stride, pad = cache
    K, C, kh, kw = w.shape
    cols = im2col(x, kh, kw, stride, pad)
    dout2 = dout.reshape(K, -1)
    return (dout2 @ cols.T).reshape(w.shape), dout2.sum(axis=1)


# ------------------------------------------------------------------------------------------ ReLU

def relu_forward_naive(x):
    """out = max(x, 0), one element at a time."""
    xp = array_module(x)
    out = xp.empty_like(x)
    flat_in, flat_out = x.reshape(-1), out.reshape(-1)
    for n in range(flat_in.size):
        flat_out[n] = flat_in[n] if flat_in[n] > 0 else 0
    return out, out


def relu_backward_naive(dout, cache):
    """dx = dout where the output was positive, else 0. The cache is the *output*: out > 0 iff x > 0,
    so keeping the output (which the next layer needs anyway) is enough; the input can be freed."""
    xp = array_module(dout)
    out = cache
    dx = xp.empty_like(dout)
    flat_d, flat_out, flat_dx = dout.reshape(-1), out.reshape(-1), dx.reshape(-1)
    for n in range(flat_d.size):
        flat_dx[n] = flat_d[n] if flat_out[n] > 0 else 0
    return dx


def relu_forward(x):
    """out = max(x, 0). The cache is the output itself (see relu_backward_naive)."""
    xp = array_module(x)
    out = xp.maximum(x, 0)
    return out, out


def relu_backward(dout, cache):
    """dx = dout * [out > 0]. At exactly 0 we take the subgradient 0, as every framework does."""
    return dout * (cache > 0)


# --------------------------------------------------------------------------------------- pooling

def _pool_windows(x):
    """The four members of every 2x2 window of x (C, H, W) as strided views of shape (C, H//2, W//2).

    An odd last row or column belongs to no window and is dropped (floor), as in PyTorch and Keras.
    """
    C, H, W = x.shape
    H2, W2 = H // 2, W // 2
    return [x[:, u:2 * H2:2, v:2 * W2:2] for u in (0, 1) for v in (0, 1)]


def avg_pool_forward_naive(x):
    """2x2 average pooling with stride 2: out[c, i, j] = mean of x[c, 2i:2i+2, 2j:2j+2]."""
    xp = array_module(x)
    C, H, W = x.shape
    out = xp.zeros((C, H // 2, W // 2), dtype=x.dtype)
    for c in range(C):
        for i in range(H // 2):
            for j in range(W // 2):
                out[c, i, j] = x[c, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean()
    return out, x.shape


def avg_pool_backward_naive(dout, cache):
    """Each of the four inputs of a window contributed 1/4 of its output: dx = dout / 4 on each."""
    xp = array_module(dout)
    dx = xp.zeros(cache, dtype=dout.dtype)
    C, H2, W2 = dout.shape
    for c in range(C):
        for i in range(H2):
            for j in range(W2):
                dx[c, 2 * i:2 * i + 2, 2 * j:2 * j + 2] = dout[c, i, j] / 4
    return dx


def avg_pool_forward(x):
    """Vectorized 2x2/2 average pooling: the mean of the four strided views."""
    a, b, c, d = _pool_windows(x)
    return (a + b + c + d) * 0.25, x.shape


def avg_pool_backward(dout, cache):
    """Vectorized: write dout/4 into each of the four strided views of a zero dx."""
    xp = array_module(dout)
    dx = xp.zeros(cache, dtype=dout.dtype)
    for view in _pool_windows(dx):
        view[...] = dout * 0.25
    return dx


def max_pool_forward_naive(x):
    """2x2 max pooling with stride 2; the cache keeps x to find each window's winner again."""
    xp = array_module(x)
    C, H, W = x.shape
    out = xp.zeros((C, H // 2, W // 2), dtype=x.dtype)
    for c in range(C):
        for i in range(H // 2):
            for j in range(W // 2):
                out[c, i, j] = x[c, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max()
    return out, x


def max_pool_backward_naive(dout, cache):
    """The gradient goes to the window's maximum only (the first one in reading order on ties)."""
    xp = array_module(dout)
    x = cache
    dx = xp.zeros_like(x)
    C, H2, W2 = dout.shape
    for c in range(C):
        for i in range(H2):
            for j in range(W2):
                window = x[c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                u, v = divmod(int(window.argmax()), 2)
                dx[c, 2 * i + u, 2 * j + v] = dout[c, i, j]
    return dx


def max_pool_forward(x):
    """Vectorized 2x2/2 max pooling: elementwise maximum of the four strided views."""
    xp = array_module(x)
    a, b, c, d = _pool_windows(x)
    return xp.maximum(xp.maximum(a, b), xp.maximum(c, d)), x


def max_pool_backward(dout, cache):
    """Vectorized: route dout to the first view that attains the maximum (same tie rule as naive)."""
    xp = array_module(dout)
    x = cache
    out = max_pool_forward(x)[0]
    dx = xp.zeros_like(x)
    taken = xp.zeros(out.shape, dtype=bool)
    for view_x, view_dx in zip(_pool_windows(x), _pool_windows(dx)):
        winner = (view_x == out) & ~taken
        view_dx[...] = dout * winner
        taken |= winner
    return dx


# =============================================================================================
# Part 2. The layout the network runs in: padded, channels last, flattened
# =============================================================================================
#
# A map of C channels on an H x W grid lives in a matrix P of shape (padded_length(H, W), C):
# row r = y * (W + 2) + x is pixel (y, x) of the grid with a one-pixel zero border (so the image
# pixel (i, j) is row (i + 1) * (W + 2) + (j + 1)), and two extra zero rows at the end. The border
# rows are always zero: they *are* the padding of the next 3x3 convolution.


def padded_length(H, W):
    """Rows of a padded map: the (H+2) x (W+2) grid plus 2 rows of slack read by the last tap."""
    return (H + 2) * (W + 2) + 2


def padded_grid(P, H, W):
    """View of P's first (H+2)(W+2) rows as the (H+2, W+2, C) padded grid."""
    return P[:(H + 2) * (W + 2)].reshape(H + 2, W + 2, P.shape[1])


def to_padded(x, out=None):
    """(C, H, W) -> padded channels-last matrix (padded_length(H, W), C), zero border."""
    xp = array_module(x)
    C, H, W = x.shape
    if out is None:
        out = xp.zeros((padded_length(H, W), C), dtype=x.dtype)
    else:
        out[...] = 0
    padded_grid(out, H, W)[1:H + 1, 1:W + 1] = x.transpose(1, 2, 0)
    return out


def from_padded(P, H, W):
    """Padded channels-last matrix -> a new contiguous (C, H, W) array (always a copy: P is reused)."""
    # .copy(), not ascontiguousarray: for a 1x1 map the transposed view is already contiguous and
    # ascontiguousarray would hand back a view into the network's reused buffer.
    return padded_grid(P, H, W)[1:H + 1, 1:W + 1].transpose(2, 0, 1).copy()


def conv_taps(w):
    """Filters (K, C, 3, 3) -> taps (9, C, K): taps[3u + v] = w[:, :, u, v].T, contiguous.

    Tap t multiplies the input shifted by (u, v); this is the HWIO order Keras stores.
    """
    xp = array_module(w)
    K, C, kh, kw = w.shape
    return xp.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(kh * kw, C, K)


def _tap_offsets(W):
    # Reading the padded input at row r + 3-by-3 offsets (u, v) is reading row r + u*(W+2) + v.
    return [u * (W + 2) + v for u in range(3) for v in range(3)]


def conv3x3_forward(P, H, W, taps, bias, out, relu=True, im2col_below=16):
    """3x3 convolution, stride 1, padding 1 (+ ReLU), from padded map P (L, C) into `out` (L, K).

    Derivation. Let N = H (W + 2): compute the convolution at every row r of the padded grid that
    starts an output "row" of width W + 2, i.e. output pixel (i, j) sits at r = i (W + 2) + j. Its
    3x3 window in the padded input is rows r + u (W + 2) + v, for u, v in 0..2. So, with the input
    rows shifted by offset o_t = u (W + 2) + v,

        Y[r, :] = b + sum_t P[r + o_t, :] @ taps[t]         i.e.   Y = b + sum_t P[o_t : o_t + N] @ taps[t]

    nine matrix products whose left factors are *contiguous row slices* of P: no copy at all. Columns
    j = W and W + 1 of Y are junk (their window wrapped around the row), and they land exactly on
    the border rows of the next padded map when Y is written at offset W + 3, so we zero them there.
    With few input channels (the 3-channel image) nine thin products waste memory traffic, so below
    `im2col_below` channels the nine shifted slices are copied into one (9C, N) matrix (im2col, built
    channel-first so every copy is a contiguous row) for a single product.
    """
    xp = array_module(P)
    C = P.shape[1]
    K = taps.shape[2]
    N = H * (W + 2)
    start = W + 3                       # row of pixel (1, 1) in the padded output grid
    Y = out[start:start + N]
    out[:start] = 0
    out[start + N:] = 0
    Y[...] = bias                      # bias first, then every product accumulates into it
    offsets = _tap_offsets(W)
    if C < im2col_below:
        # im2col built channel-first: row (t, c) of colsT is channel c read at offset o_t, a
        # contiguous copy; then Y += colsT^T @ taps (BLAS reads colsT transposed, no copy).
        X = xp.ascontiguousarray(P.T)                           # (C, L), small for the image
        colsT = xp.empty((9 * C, N), dtype=P.dtype)
        for t, o in enumerate(offsets):
            colsT[t * C:(t + 1) * C] = X[:, o:o + N]
        gemm(colsT, taps.reshape(9 * C, K), Y, accumulate=True, trans_a=True)
    else:
        for t, o in enumerate(offsets):
            gemm(P[o:o + N], taps[t], Y, accumulate=True)
    Yg = Y.reshape(H, W + 2, K)
    Yg[:, W:] = 0                      # the junk columns are the next map's border: zero
    if relu:
        xp.maximum(Y, 0, out=Y)
    return out


def conv3x3_backward(dY, H, W, taps, out, im2col_below=16):
    """dL/dP for conv3x3_forward: the nine products run backwards. dY (L, K) -> out (L, C).

    Y = sum_t P[o_t : o_t + N] @ taps[t] is linear in each slice, so each slice receives
    dL/dY @ taps[t]^T, added into the rows it was read from. dY must be zero on the border rows
    (the ReLU mask takes care of that, because the forward output is zero there). The border rows
    of `out` end up holding gradients for the zero padding, which nobody uses; the caller's next
    ReLU mask (or `from_padded`) drops them.
    """
    xp = array_module(dY)
    C = taps.shape[1]
    N = H * (W + 2)
    start = W + 3
    dYr = dY[start:start + N]
    offsets = _tap_offsets(W)
    if C < im2col_below:
        # dcolsT (9C, N) = taps (9C, K) @ dY^T, then fold each row back onto its channel at its
        # offset (contiguous adds), and transpose the small C-channel result into `out`.
        dcolsT = xp.empty((9 * C, N), dtype=dY.dtype)
        gemm(taps.reshape(9 * C, -1), dYr, dcolsT, trans_b=True)
        dX = xp.zeros((C, out.shape[0]), dtype=dY.dtype)
        for t, o in enumerate(offsets):
            dX[:, o:o + N] += dcolsT[t * C:(t + 1) * C]
        out[...] = dX.T
        return out
    # The centre tap (u = v = 1) covers exactly rows start .. start + N: it initialises them, the
    # other eight accumulate, and only the rows outside need zeroing.
    centre = 4
    out[:start] = 0
    out[start + N:] = 0
    gemm(dYr, taps[centre], out[start:start + N], trans_b=True)
    for t, o in enumerate(offsets):
        if t != centre:
            gemm(dYr, taps[t], out[o:o + N], accumulate=True, trans_b=True)
    return out


# ---------------------------------------------------------------------------------------------
# Winograd F(2, 3) along the rows: the same convolution with a third fewer multiplications
# ---------------------------------------------------------------------------------------------
#
# Two neighbouring outputs of a 3-tap correlation, y0 = d0 g0 + d1 g1 + d2 g2 and
# y1 = d1 g0 + d2 g1 + d3 g2, cost 6 multiplications. Winograd's minimal filtering algorithm
# F(2, 3) gets them from 4:
#
#     m0 = (d0 - d2) g0                m1 = (d1 + d2) (g0 + g1 + g2) / 2
#     m3 = (d1 - d3) g2                m2 = (d2 - d1) (g0 - g1 + g2) / 2
#     y0 = m0 + m1 + m2                y1 = m1 - m2 - m3
#
# In matrix form y = A^T [(G g) * (B^T d)], with the three matrices below. The filter side G g is
# computed once per network, so each pair of outputs costs 4 products of a transformed input with a
# transformed filter. In a 3x3 convolution we apply it to the rows only: the filter's row index u
# becomes the Winograd index a (4 values instead of 3), and its column index v stays a plain shift
# along the flattened rows, exactly as in conv3x3_forward. Two output rows then take 4 x 3 = 12
# matrix products instead of 2 x 9 = 18, and the data transforms are additions of whole rows,
# which are cheap in this layout. The saving is worth it when the products are big: with 256 or more
# channels in and out (conv3_2 to conv5_4) it makes those layers 5-25% faster here; below that the
# extra additions cost more than they save. (Applied in both directions, F(2x2, 3x3) would save more
# products, but its column transforms read every other pixel and cost more than they save here.)

WINOGRAD_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))   # d -> B^T d     (4 x 4)
WINOGRAD_G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))      # g -> G g       (4 x 3)
WINOGRAD_AT = ((1, 1, 1, 0), (0, 1, -1, -1))                                # m -> A^T m     (2 x 4)


def winograd_f23(d, g):
    """The two outputs (y0, y1) of correlating 4 inputs d with 3 taps g, from 4 multiplications.

    The textbook form of the trick (works on numbers or arrays); conv3x3_winograd_forward does the
    same with rows of feature maps for d and matrices of filters for g.
    """
    d0, d1, d2, d3 = d
    g0, g1, g2 = g
    m0 = (d0 - d2) * g0
    m1 = (d1 + d2) * ((g0 + g1 + g2) / 2)
    m2 = (d2 - d1) * ((g0 - g1 + g2) / 2)
    m3 = (d1 - d3) * g2
    return m0 + m1 + m2, m1 - m2 - m3


def winograd_taps(taps):
    """Taps (9, C, K) -> transformed filters U: U[a][v] = sum_u G[a, u] taps[3u + v], each (C, K).

    U is a tuple of four (3, C, K) arrays. G's first and last rows just pick the filter's first and
    last rows, so U[0] and U[3] are views of `taps` (no copy: for conv3_2..conv5_1 that saves 22 MB);
    U[1] and U[2] are computed in float64 and rounded once, so they are as exact as the taps.
    """
    xp = array_module(taps)
    _, C, K = taps.shape
    rows = taps.reshape(3, 3, C, K)
    middle = xp.asarray(WINOGRAD_G[1:3], dtype=xp.float64) @ rows.reshape(3, -1).astype(xp.float64)
    middle = middle.astype(taps.dtype).reshape(2, 3, C, K)
    return rows[0], middle[0], middle[1], rows[2]


def winograd_scratch_shapes(H, W, C, K, chunk_bytes=8 << 20, itemsize=4):
    """Shapes of the two scratch buffers conv3x3_winograd_forward uses: Z (transformed input rows)
    and M (their products), for tile rows processed `rows` at a time so that each buffer stays
    under about `chunk_bytes` (the whole map at once when it fits)."""
    tiles = (H + 1) // 2
    Wp = W + 2
    rows = max(1, min(tiles, chunk_bytes // (4 * Wp * max(C, K) * itemsize)))
    return (4, rows * Wp + 2, C), (4, rows * Wp, K)


def winograd_taps_transposed(U):
    """The same transformed filters stored transposed: a tuple of four contiguous (3, K, C) arrays.

    Why keep a second copy: BLAS first packs each product's filter matrix into its own blocked
    format, and OpenBLAS packs a matrix it reads transposed about 10% faster when there are 512
    output channels (measured on 2 cores; no difference at 256 and below). The backward pass reads
    U transposed anyway; with this copy the forward pass does too (56 MB for conv4_1 .. conv5_1).
    """
    xp = array_module(U[0])
    return tuple(xp.ascontiguousarray(u.transpose(0, 2, 1)) for u in U)


def conv3x3_winograd_forward(P, H, W, U, bias, out, relu=True, scratch=None, transpose=False, U_t=None):
    """conv3x3_forward computed with Winograd F(2, 3) along the rows. U = winograd_taps(taps).

    Tile row i makes output rows 2i and 2i + 1 from padded input rows 2i .. 2i + 3 (d0..d3):

        Z[a] = sum_r B^T[a, r] P_grid[2i + r]                          (4 row additions)
        M[a] = sum_v Z[a][shifted by v] @ U[a][v]                      (12 products, as in conv3x3_forward)
        Y[2i] = M[0] + M[1] + M[2],   Y[2i + 1] = M[1] - M[2] - M[3]      (bias b: M[1] starts at b)

    with the same flattened-row bookkeeping as conv3x3_forward (each Z[a] is a (rows x (W + 2), C)
    matrix, so the v-shifts are row offsets 0, 1, 2 and the last two columns of every row are junk,
    zeroed at the end). An odd H has a last tile whose second output row is dropped and whose d3 is
    the zero row below the border. P's border must be zero, as everywhere in this layout.

    transpose=True computes the backward pass instead (bias must be None, relu False): dL/dP is the
    convolution of dY with the filters flipped in u and v and with C and K swapped, and the flip maps
    U onto itself: U_flipped[a][v] = U[3 - a if a in (0, 3) else a][2 - v]^T, because G's rows 0 and 3
    are each other's mirror images and rows 1 and 2 are symmetric. So the same U serves both passes.

    scratch: (Z, M) buffers of winograd_scratch_shapes(H, W, C_in, C_out) (allocated when None).
    U_t: optional, winograd_taps_transposed(U); the forward pass then reads its filters from there
    (same numbers, faster packing for 512 channels). The backward pass does not need it.
    """
    xp = array_module(P)
    C = P.shape[1]
    K = U[0].shape[1] if transpose else U[0].shape[2]
    Wp = W + 2
    if scratch is None:
        scratch = [xp.empty(shape, dtype=P.dtype) for shape in winograd_scratch_shapes(H, W, C, K, itemsize=P.itemsize)]
    Z, M = scratch
    rows = M.shape[1] // Wp
    Z[:, rows * Wp:] = 0               # slack read by the v = 1, 2 shifts of the last tile (junk columns only)
    grid = padded_grid(P, H, W)
    start = W + 3
    Y = out[start:start + H * Wp]
    Yg = Y.reshape(H, Wp, K)
    tiles = (H + 1) // 2
    for i0 in range(0, tiles, rows):
        n = min(rows, tiles - i0)
        d = [grid[2 * i0 + r: 2 * (i0 + n) + r: 2] for r in range(4)]      # d3 is one row short if H is odd
        z = [Z[a, :n * Wp].reshape(n, Wp, C) for a in range(4)]
        xp.subtract(d[0], d[2], out=z[0])
        xp.add(d[1], d[2], out=z[1])
        xp.subtract(d[2], d[1], out=z[2])
        k = d[3].shape[0]
        xp.subtract(d[1][:k], d[3], out=z[3][:k])
        if k < n:
            z[3][k:] = d[1][k:]                     # d3 = 0 below the bottom border
        if bias is not None:
            # m1 enters both outputs with weight +1, so a bias placed in it reaches both rows: the
            # products of a = 1 accumulate onto it, and no pass adds the bias to the outputs.
            M[1, :n * Wp] = bias
        for a in range(4):
            for v in range(3):
                accumulate = v > 0 or (a == 1 and bias is not None)
                if transpose:       # the flipped filters, read transposed
                    filters, trans = U[3 - a if a in (0, 3) else a][2 - v], True
                elif U_t is not None:   # U[a][v] again, from its transposed copy
                    filters, trans = U_t[a][v], True
                else:
                    filters, trans = U[a][v], False
                gemm(Z[a, v:v + n * Wp], filters, M[a, :n * Wp], accumulate=accumulate, trans_b=trans)
        m = [M[a, :n * Wp].reshape(n, Wp, K) for a in range(4)]
        even = Yg[2 * i0: 2 * (i0 + n): 2]
        odd = Yg[2 * i0 + 1: 2 * (i0 + n): 2]      # one row short if H is odd
        k = odd.shape[0]
        xp.add(m[0], m[1], out=even)
        even += m[2]
        xp.subtract(m[1][:k], m[2][:k], out=odd)
        odd -= m[3][:k]
    out[:start] = 0
    out[start + H * Wp:] = 0
    Yg[:, W:] = 0                      # the junk columns are the next map's border: zero
    if relu:
        xp.maximum(Y, 0, out=Y)
    return out


def conv3x3_winograd_backward(dY, H, W, U, out, scratch=None):
    """dL/dP for conv3x3_winograd_forward (or conv3x3_forward): dY (L, K) -> out (L, C).

    dY must be zero on its border (the ReLU mask sees to that). Unlike conv3x3_backward, the border
    rows of `out` come out zero.
    """
    return conv3x3_winograd_forward(dY, H, W, U, None, out, relu=False, scratch=scratch, transpose=True)


def zero_border(P, H, W):
    """Zero the one-pixel border and the slack rows of a padded map (its interior is untouched)."""
    grid = padded_grid(P, H, W)
    grid[0] = 0
    grid[H + 1] = 0
    grid[:, 0] = 0
    grid[:, W + 1] = 0
    P[(H + 2) * (W + 2):] = 0
    return P


def relu_mask_backward(dY, Y):
    """In place: dY *= [Y > 0], with Y the stored (post-ReLU) output. Zero borders stay zero."""
    xp = array_module(dY)
    xp.multiply(dY, Y > 0, out=dY)
    return dY


def _padded_pool_views(P, H, W):
    """The four members of each 2x2 window of a padded map, as views of shape (H//2, W//2, C)."""
    H2, W2 = H // 2, W // 2
    inner = padded_grid(P, H, W)[1:2 * H2 + 1, 1:2 * W2 + 1]
    return [inner[u::2, v::2] for u in (0, 1) for v in (0, 1)]


def pool_forward_padded(P, H, W, out, mode="avg"):
    """2x2/2 pooling (average or max) of padded map P (H x W grid) into padded `out` (H//2 x W//2)."""
    xp = array_module(P)
    H2, W2 = H // 2, W // 2
    a, b, c, d = _padded_pool_views(P, H, W)
    dest = padded_grid(out, H2, W2)[1:H2 + 1, 1:W2 + 1]
    if mode == "avg":
        xp.add(a, b, out=dest)
        dest += c
        dest += d
        dest *= 0.25
    else:
        xp.maximum(a, b, out=dest)
        xp.maximum(dest, c, out=dest)
        xp.maximum(dest, d, out=dest)
    return zero_border(out, H2, W2)


def pool_backward_padded(dout, P, H, W, out, mode="avg"):
    """Gradient of pool_forward_padded: dout (H//2 x W//2 map) -> out (H x W map).

    Average: each window member gets dout / 4. Max: the first member (reading order) equal to the
    window's maximum gets dout, as in max_pool_backward. A dropped odd row/column gets zero.
    """
    xp = array_module(dout)
    H2, W2 = H // 2, W // 2
    d_in = padded_grid(dout, H2, W2)[1:H2 + 1, 1:W2 + 1]
    if 2 * H2 != H or 2 * W2 != W:
        out[...] = 0
    else:
        zero_border(out, H, W)
    if mode == "avg":
        # Both rows of a window get the same values, so fill the top row of each window (every
        # value written twice, side by side) and copy it to the bottom row whole: two passes over
        # contiguous rows, a third faster than four strided writes of dout / 4.
        inner = padded_grid(out, H, W)[1:2 * H2 + 1, 1:2 * W2 + 1].reshape(H2, 2, W2, 2, -1)
        xp.multiply(d_in[:, :, None, :], 0.25, out=inner[:, 0])
        inner[:, 1] = inner[:, 0]
        return out
    views = _padded_pool_views(out, H, W)
    members = _padded_pool_views(P, H, W)
    top = xp.maximum(xp.maximum(members[0], members[1]), xp.maximum(members[2], members[3]))
    taken = xp.zeros(top.shape, dtype=bool)
    for member, view in zip(members, views):
        winner = (member == top) & ~taken
        xp.multiply(d_in, winner, out=view)
        taken |= winner
    return out
