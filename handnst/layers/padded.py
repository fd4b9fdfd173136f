"""The layout VGG19 actually runs in, for speed: padded, channels last, flattened.

A feature map of C channels on an H x W grid is stored *channels last* with a one-pixel zero border,
flattened, as a matrix of shape (padded_length(H, W), C). In that layout a 3x3 convolution is nine
matrix products whose inputs are plain contiguous row-slices of the same buffer (no im2col copy), and
the backward pass is nine more. See `conv3x3_forward` for the derivation.
"""

from handnst.backend import array_module, gemm, split_run


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
    pixels = padded_grid(out, H, W)[1:H + 1, 1:W + 1]
    for r in range(0, H, 4):              # four rows at a time: see from_padded_into
        pixels[r:r + 4] = x[:, r:r + 4].transpose(1, 2, 0)
    return out


def from_padded(P, H, W):
    """Padded channels-last matrix -> a new contiguous (C, H, W) array (always a copy: P is reused)."""
    # .copy(), not ascontiguousarray: for a 1x1 map the transposed view is already contiguous and
    # ascontiguousarray would hand back a view into the network's reused buffer.
    return padded_grid(P, H, W)[1:H + 1, 1:W + 1].transpose(2, 0, 1).copy()


def from_padded_into(P, H, W, out, rows=4):
    """Write padded map P's pixels into `out` (C, H, W), any strided view (the interior of a
    channel-first buffer), `rows` image rows at a time: the transposing copy then works on blocks
    that stay in cache (measured for 32 channels at 384 x 512: 7 ms, against 19 ms in one piece)."""
    pixels = interior(P, H, W)
    for r in range(0, H, rows):
        out[:, r:r + rows] = pixels[r:r + rows].transpose(2, 0, 1)
    return out


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
    `im2col_below` channels the nine shifted slices are copied into one (9C, n) matrix (im2col, built
    channel-first so every copy is a contiguous row) for a single product, band by band (_im2col_forward).
    """
    xp = array_module(P)
    C = P.shape[1]
    K = taps.shape[2]
    N = H * (W + 2)
    start = W + 3                       # row of pixel (1, 1) in the padded output grid
    Y = out[start:start + N]
    out[:start] = 0
    out[start + N:] = 0
    if C < im2col_below:
        _im2col_forward(P, W, taps, bias, Y, relu)
        return out
    Y[...] = bias                      # bias first, then every product accumulates into it
    for t, o in enumerate(_tap_offsets(W)):
        gemm(P[o:o + N], taps[t], Y, accumulate=True)
    Yg = Y.reshape(H, W + 2, K)
    Yg[:, W:] = 0                      # the junk columns are the next map's border: zero
    if relu:
        relu_inplace(Y)
    return out


# Bands of the im2col path (the 3-channel image), measured at 512x384 on 2 cores: the forward pass
# fuses bias and ReLU into each band, 20.5-20.6 ms against 22.9-27.6 for the whole map at once (24 ms
# with 4 MB bands); the backward pass gains no time from bands (its product wants them big) but no
# longer makes its (27, N) matrix at once, the highest peak of a 512x512 evaluation (28 MB on top of
# the maps).
IM2COL_CHUNK_BYTES = 1 << 20
IM2COL_BACKWARD_CHUNK_BYTES = 8 << 20


def _im2col_forward(P, W, taps, bias, Y, relu):
    """conv3x3_forward's Y for a few input channels (the image's 3), through im2col, a band of whole
    padded rows at a time, into the N rows of Y (bias, junk columns and ReLU included).

    Row (t, c) of the band's colsT is channel c read at offset o_t (a contiguous copy); one more
    row of ones meets the bias as one more row of the filters, so Y = colsT^T @ [taps; b] is one
    product with nothing to add afterwards (BLAS reads colsT transposed, no copy). Each band's
    junk columns are zeroed and its ReLU taken while it is still in cache (see IM2COL_CHUNK_BYTES).
    """
    xp = array_module(P)
    C, K, N, Wp = P.shape[1], taps.shape[2], Y.shape[0], W + 2
    X = xp.ascontiguousarray(P.T)                                   # (C, L), small for the image
    weights = xp.concatenate([taps.reshape(9 * C, K), bias.reshape(1, K).astype(taps.dtype)])
    rows = max(1, IM2COL_CHUNK_BYTES // ((9 * C + 1) * P.itemsize * Wp)) * Wp    # whole padded rows
    flat = xp.empty((9 * C + 1) * min(rows, N), dtype=P.dtype)
    offsets = _tap_offsets(W)
    for r0 in range(0, N, rows):
        n = min(rows, N - r0)
        colsT = flat[:(9 * C + 1) * n].reshape(9 * C + 1, n)         # contiguous, also for the last band
        for t, o in enumerate(offsets):
            colsT[t * C:(t + 1) * C] = X[:, r0 + o:r0 + o + n]
        colsT[9 * C] = 1
        band = Y[r0:r0 + n]
        gemm(colsT, weights, band, trans_a=True)
        band.reshape(-1, Wp, K)[:, W:] = 0
        if relu:
            xp.maximum(band, 0, out=band)


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
        # dcolsT (9C, n) = taps (9C, K) @ dY^T for a band of n rows at a time (so that no (9C, N)
        # matrix is made: 28 MB at 512x512), then fold each row back onto its channel at its offset
        # (contiguous adds), and transpose the small C-channel result into `out`.
        Wp = W + 2
        rows = max(1, IM2COL_BACKWARD_CHUNK_BYTES // (9 * C * dY.itemsize * Wp)) * Wp
        flat = xp.empty(9 * C * min(rows, N), dtype=dY.dtype)
        dX = xp.zeros((C, out.shape[0]), dtype=dY.dtype)
        for r0 in range(0, N, rows):
            n = min(rows, N - r0)
            dcolsT = flat[:9 * C * n].reshape(9 * C, n)
            gemm(taps.reshape(9 * C, -1), dYr[r0:r0 + n], dcolsT, trans_b=True)
            for t, o in enumerate(offsets):
                dX[:, r0 + o:r0 + o + n] += dcolsT[t * C:(t + 1) * C]
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


def zero_border(P, H, W):
    """Zero the one-pixel border and the slack rows of a padded map (its interior is untouched)."""
    grid = padded_grid(P, H, W)
    grid[0] = 0
    grid[H + 1] = 0
    grid[:, 0] = 0
    grid[:, W + 1] = 0
    P[(H + 2) * (W + 2):] = 0
    return P


def fill_border(P, H, W, mode="reflect"):
    """Fill the one-pixel border of padded map P from its interior, in place, for a convolution that
    pads by 1 some other way than with zeros (the transformation network's layers):

        "reflect": the border mirrors the second row and column (reflection padding; H, W >= 2)
        "edge":    the border repeats the first and last row and column (edge padding)

    The slack rows are left as they are (zero): only junk outputs read them.
    """
    fill_grid_border(padded_grid(P, H, W), mode)
    return P


def _border_sources(H, W, mode, what):
    """(top, bottom, left, right): the grid row and column each side of the border copies."""
    if mode not in ("reflect", "edge"):
        raise ValueError(f"unknown {what} mode {mode!r}")
    return (2, H - 1, 2, W - 1) if mode == "reflect" else (1, H, 1, W)


def fill_grid_border(grid, mode="reflect", what="border"):
    """Fill the outermost ring of grid (..., H + 2, W + 2, C) from the H x W inside, in place (see
    fill_border): rows first, then columns over the full height, so the corners come out as padding
    both ways gives. Leading axes are separate grids (the images of handnst.layers.stacked)."""
    H, W = grid.shape[-3] - 2, grid.shape[-2] - 2
    top, bottom, left, right = _border_sources(H, W, mode, what)
    grid[..., 0, :, :] = grid[..., top, :, :]
    grid[..., H + 1, :, :] = grid[..., bottom, :, :]
    grid[..., :, 0, :] = grid[..., :, left, :]
    grid[..., :, W + 1, :] = grid[..., :, right, :]
    return grid


def fill_grid_border_backward(grid, mode="reflect", what="border"):
    """The adjoint of fill_grid_border, in place: each ring value is added onto the pixel it was
    copied from, in the reverse order (columns, then rows), and the ring is cleared."""
    H, W = grid.shape[-3] - 2, grid.shape[-2] - 2
    top, bottom, left, right = _border_sources(H, W, mode, what)
    grid[..., :, left, :] += grid[..., :, 0, :]
    grid[..., :, right, :] += grid[..., :, W + 1, :]
    grid[..., :, 0, :] = 0
    grid[..., :, W + 1, :] = 0
    grid[..., top, :, :] += grid[..., 0, :, :]
    grid[..., bottom, :, :] += grid[..., H + 1, :, :]
    grid[..., 0, :, :] = 0
    grid[..., H + 1, :, :] = 0
    return grid


def interior(P, H, W):
    """View of the H x W image pixels of padded map P, shape (H, W, C)."""
    return padded_grid(P, H, W)[1:H + 1, 1:W + 1]


# relu_mask_backward's block: 64 Ki elements, a 64 KB mask. Measured on the 64-channel map of a
# 512x384 image (50 MB): 6.5 ms against 8.6 with the whole mask at once.
MASK_BLOCK_ELEMENTS = 1 << 16


def relu_mask_backward(dY, Y, threads=2, block=MASK_BLOCK_ELEMENTS):
    """In place: dY *= [Y > 0], with Y the stored (post-ReLU) output. Zero borders stay zero.
    The rows are split between `threads` threads (backend.split_run), and each thread works through
    its rows `block` elements at a time, so that the mask [Y > 0] is a small temporary that stays in
    cache instead of a map-sized one that the system must hand out and zero afresh on every call."""
    xp = array_module(dY)
    step = max(1, block // max(1, dY.shape[1]))

    def part(lo, hi):
        for r in range(lo, hi, step):
            s = slice(r, min(r + step, hi))
            xp.multiply(dY[s], Y[s] > 0, out=dY[s])
    split_run(part, dY.shape[0], threads, work=dY.size, xp=xp)
    return dY


def relu_inplace(Y, threads=2):
    """In place: Y = max(Y, 0), the rows split between `threads` threads."""
    xp = array_module(Y)

    def part(lo, hi):
        xp.maximum(Y[lo:hi], 0, out=Y[lo:hi])
    split_run(part, Y.shape[0], threads, work=Y.size, xp=xp)
    return Y


def _padded_pool_views(P, H, W):
    """The four members of each 2x2 window of a padded map, as views of shape (H//2, W//2, C)."""
    H2, W2 = H // 2, W // 2
    inner = padded_grid(P, H, W)[1:2 * H2 + 1, 1:2 * W2 + 1]
    return [inner[u::2, v::2] for u in (0, 1) for v in (0, 1)]


# pool_forward_padded's block: 2 output rows. Measured for the 64-channel 512x384 map: 4.1 ms
# against 5.6 for four strided passes over the whole map (and 5.1 with blocks of 8 rows).
POOL_BLOCK_ROWS = 2


def pool_forward_padded(P, H, W, out, mode="avg", rows=POOL_BLOCK_ROWS):
    """2x2/2 pooling (average or max) of padded map P (H x W grid) into padded `out` (H//2 x W//2).

    Each window's two rows are combined first (whole image rows, contiguous), then the two columns
    of that: (a + b) + (c + d), or max(max(a, b), max(c, d)). It runs `rows` output rows at a time,
    so the row combination is a small temporary still in cache when the columns read it.
    """
    xp = array_module(P)
    H2, W2 = H // 2, W // 2
    inner = padded_grid(P, H, W)[1:2 * H2 + 1, 1:2 * W2 + 1]
    window = padded_grid(out, H2, W2)[1:H2 + 1, 1:W2 + 1]
    combine = xp.add if mode == "avg" else xp.maximum

    def part(lo, hi):            # output rows lo .. hi (split between two threads)
        for r in range(lo, hi, rows):
            n = min(rows, hi - r)
            pair = combine(inner[2 * r:2 * (r + n):2], inner[2 * r + 1:2 * (r + n):2])    # (n, 2 W2, C)
            dest = window[r:r + n]
            combine(pair[:, 0::2], pair[:, 1::2], out=dest)
            if mode == "avg":
                dest *= 0.25
    split_run(part, H2, work=P.size, xp=xp)
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

        def part(lo, hi):
            xp.multiply(d_in[lo:hi, :, None, :], 0.25, out=inner[lo:hi, 0])
            inner[lo:hi, 1] = inner[lo:hi, 0]
        split_run(part, H2, work=out.size, xp=xp)
        return out
    views = _padded_pool_views(out, H, W)
    members = _padded_pool_views(P, H, W)

    def part(lo, hi):
        m = [member[lo:hi] for member in members]
        top = xp.maximum(xp.maximum(m[0], m[1]), xp.maximum(m[2], m[3]))
        taken = xp.zeros(top.shape, dtype=bool)
        for member, view in zip(m, views):
            winner = (member == top) & ~taken
            xp.multiply(d_in[lo:hi], winner, out=view[lo:hi])
            taken |= winner
    split_run(part, H2, work=out.size, xp=xp)
    return out


def _windows_written(dout, out, H, W):
    """(dout's interior (H2, W2, C), out's 2x2 windows (H2, 2, W2, 2, C)) for a pool's backward pass
    written into the padded H x W map `out`, whose odd row or column, which no window covers, is zeroed."""
    H2, W2 = H // 2, W // 2
    grid = padded_grid(out, H, W)
    if 2 * H2 != H:
        grid[H] = 0                      # image row H - 1
    if 2 * W2 != W:
        grid[:, W] = 0
    return (padded_grid(dout, H2, W2)[1:H2 + 1, 1:W2 + 1],
            grid[1:2 * H2 + 1, 1:2 * W2 + 1].reshape(H2, 2, W2, 2, -1))


def _window_row(P, H, W, u):
    """Row u (0: top, 1: bottom) of every 2x2 window of padded map P, as a (H//2, 2 (W//2), C) view:
    whole image rows, so that an elementwise pass over them runs along 2 (W//2) C numbers at a time."""
    H2, W2 = H // 2, W // 2
    return padded_grid(P, H, W)[1 + u:1 + u + 2 * H2:2, 1:2 * W2 + 1]


def _quarter_spread(d):
    """(n, W2, C) -> (n, 2 W2, C): every value of d, divided by 4, written twice side by side (the
    average pool's gradient along one row of its windows). Multiplying it with a mask row is then a
    pass along whole rows; multiplying d broadcast against the mask instead runs in pieces of C
    numbers. The mask is read as uint8 (the same bytes, 0 or 1): NumPy converts uint8 to float32
    faster than bool. Measured for the 64-channel 512x384 map, pool_relu_backward_from_mask: 14.7 ms
    broadcast against bool, 12.6 with whole rows, about 10.7 with whole rows and uint8."""
    xp = array_module(d)
    return xp.repeat(xp.multiply(d, 0.25), 2, axis=1)


def pool_relu_backward_in_place(dout, Y, H, W, mode="avg", rows=8):
    """The gradient through a 2x2/2 pooling and the ReLU before it, written over the ReLU's output Y.

    Y: the padded H x W map that pool_forward_padded read (a convolution's output after its ReLU);
    dout: the gradient at the pool's output (an H//2 x W//2 padded map). Each window member y gets

        average:  dout / 4 * [y > 0]
        max:      dout * [y > 0] if y is the first member (reading order) equal to the window's
                  maximum, else 0

    i.e. pool_backward_padded followed by relu_mask_backward with Y's mask. Every window is read
    before it is written and no two windows overlap, so Y itself can take the result: the network
    needs no buffer for the gradient of the map (68 MB after conv1_2 at 512x512) and makes one pass
    over it instead of two. Y is used up: it holds the gradient afterwards. A dropped odd row or
    column gets zero, and the border stays zero. The windows are done `rows` window rows at a time,
    so that the temporaries stay in cache.
    """
    xp = array_module(dout)
    H2 = H // 2
    d_in, inner = _windows_written(dout, Y, H, W)

    def part(lo, hi):
        for r in range(lo, hi, rows):
            s = slice(r, min(r + rows, hi))
            if mode == "avg":
                spread = _quarter_spread(d_in[s])
                for u in (0, 1):
                    y = _window_row(Y, H, W, u)[s]
                    xp.multiply(spread, (y > 0).view(xp.uint8), out=y)
                continue
            members = [inner[s, u, :, v] for u in (0, 1) for v in (0, 1)]
            top = xp.maximum(xp.maximum(members[0], members[1]), xp.maximum(members[2], members[3]))
            d = d_in[s] * (top > 0)      # the winner's ReLU mask: it is the maximum
            taken = xp.zeros(top.shape, dtype=bool)
            for y in members:
                winner = (y == top) & ~taken     # read y before it is overwritten
                taken |= winner
                xp.multiply(d, winner, out=y)
    split_run(part, H2, work=Y.size, xp=xp)
    return Y


def pool_relu_backward_from_mask(dout, mask, H, W, out, rows=4):
    """Average pooling's gradient through the ReLU before it, from that ReLU's stored mask, into `out`.

    mask: [Y > 0] of the padded H x W map Y that pool_forward_padded read (bool, same shape as Y);
    out: any padded H x W map, whatever it holds. Every window member gets dout / 4 * [y > 0], the
    values pool_relu_backward_in_place(dout, Y, H, W, "avg") writes over Y; the border, the slack
    rows and a dropped odd row or column of `out` are zeroed. The network uses it where it kept only
    the mask of a map and needs room for the map's gradient elsewhere (VGG19, MASK_ONLY).
    """
    xp = array_module(dout)
    H2, W2 = H // 2, W // 2
    zero_border(out, H, W)
    d_in, _ = _windows_written(dout, out, H, W)
    kept = [_window_row(mask, H, W, u) for u in (0, 1)]
    written = [_window_row(out, H, W, u) for u in (0, 1)]

    def part(lo, hi):
        for r in range(lo, hi, rows):
            s = slice(r, min(r + rows, hi))
            spread = _quarter_spread(d_in[s])
            for u in (0, 1):
                xp.multiply(spread, kept[u][s].view(xp.uint8), out=written[u][s])
    split_run(part, H2, work=out.size, xp=xp)
    return out


def conv_in_place_by_bands(conv, P, H, W, band, scratch):
    """Run a 3x3 convolution (padding 1) of padded map P with as many channels out as in, writing the
    result over P itself, `band` image rows at a time (the network's backward pass does this to
    need no second buffer of the map's size).

    conv(Pb, h, out) must compute the convolution of the h-row padded map Pb into `out`
    (padded_length(h, W) rows) reading Pb's top and bottom border rows as data, as the Winograd
    kernels do (conv3x3_backward does not: it scatters from the interior rows only).

    Why it works: output rows a .. b-1 need the input rows a-1 .. b, i.e. padded rows a .. b+1.
    P's rows a .. b+1 *are* a padded map of height b - a whose border rows are those two
    neighbouring rows, so the band's convolution gives exactly the whole map's rows a .. b-1. Its
    result goes to `scratch` (a flat array of at least padded_length(band, W) * C elements) and is
    copied back at once, except its last row: the next band still reads that row (padded row b) as
    its top border, so it is held aside and written after the next band has run.
    """
    Wp, C = W + 2, P.shape[1]
    grid = padded_grid(P, H, W)
    pending = None                                      # (padded row, the band's last output row)
    for a in range(0, H, band):
        b = min(a + band, H)
        h = b - a
        out = scratch[:padded_length(h, W) * C].reshape(-1, C)
        conv(P[a * Wp:(b + 2) * Wp + 2], h, out)
        if pending is not None:
            grid[pending[0]] = pending[1]
        result = padded_grid(out, h, W)
        grid[a + 1:b] = result[1:h]
        pending = (b, result[h].copy())
    if pending is not None:
        grid[pending[0]] = pending[1]
    return P
