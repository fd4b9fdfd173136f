"""3x3 convolution in the padded layout with Winograd F(2x2, 3x3): 16 products for 2x2 outputs.

F(2, 3) of winograd.py, applied along the rows *and* along the columns. A 2x2 block of outputs
needs the 4x4 patch of input around it; transformed on both sides,

    Y (2 x 2) = A^T [ (G g G^T) * (B^T d B) ] A            (* elementwise, over the 4 x 4 indices)

so each block costs 16 products of a transformed input with a transformed filter instead of 36 (direct)
or 24 (F(2, 3) along the rows only). Over a whole map every (a, b) of the 16 is one matrix product

    M[a, b] (tiles, K) = Z[a, b] (tiles, C) @ U[a, b] (C, K),

with Z[a, b] the (a, b) entry of B^T d B for every 2x2 tile (one row per tile) and U = G g G^T computed
once per network. The transforms are additions of whole rows and of every other pixel of a row: in the
channels-last layout every term is a contiguous run of C numbers, so they stream. All of B, G and A
hold only 0, +-1 and +-1/2, so the float32 error stays that of the direct convolution (measured in
the tests: well below 1e-5 relative per layer).

The backward pass is the same algorithm: dL/dP is the convolution of dY with the filters flipped
in both directions and with C and K swapped, and the flip maps U onto itself, transposed:
U_flipped[a, b] = U[f(a), f(b)]^T with f swapping 0 and 3 (rows 0 and 3 of G mirror each other,
rows 1 and 2 are symmetric). So one set of 16 (C, K) matrices serves both passes.

Maps of odd height or width end in half tiles, which read zeros beyond the border and drop the
outputs that fall outside the map.
"""

from handnst.backend import array_module, gemm, split_run
from handnst.layers.padded import padded_grid, relu_inplace, zero_border
from handnst.layers.winograd import WINOGRAD_G

_FLIP = (3, 1, 2, 0)
# The filter transforms run in float64 over this many (C, K) pairs at a time, so that a 512 x 512
# layer never holds a float64 copy of all its transformed filters (75 MB for F(4x4, 3x3)).
TAPS_CHUNK = 1 << 16


def filter_transform(taps, G):
    """Taps (9, C, K) -> U (n * n, C, K) for a Winograd filter matrix G (n x 3):
    U[n a + b] = sum_uv G[a, u] G[b, v] taps[3u + v] (G g G^T per channel pair), computed in float64
    and rounded once, so it is as exact as the taps; in slices of TAPS_CHUNK (C, K) pairs."""
    xp = array_module(taps)
    _, C, K = taps.shape
    G = xp.asarray(G, dtype=xp.float64)
    T = xp.kron(G, G)                                           # (n n, 9): [n a + b, 3u + v] = G[a, u] G[b, v]
    flat = taps.reshape(9, -1)
    U = xp.empty((T.shape[0], C * K), dtype=taps.dtype)
    for j in range(0, C * K, TAPS_CHUNK):     # in slices: no float64 copy of all the filters at once
        U[:, j:j + TAPS_CHUNK] = T @ flat[:, j:j + TAPS_CHUNK].astype(xp.float64)
    return U.reshape(T.shape[0], C, K)


def winograd2d_taps(taps):
    """Taps (9, C, K) -> U (16, C, K): U[4a + b] = sum_uv G[a, u] G[b, v] taps[3u + v] (filter_transform)."""
    return filter_transform(taps, WINOGRAD_G)


def winograd2d_scratch_shapes(H, W, C, K, chunk_bytes=8 << 20, itemsize=4):
    """Shapes of the scratch buffers of conv3x3_winograd2d_forward (R, Z, M), for tile rows processed
    `rows` at a time so that Z and M stay under about `chunk_bytes` each (the whole map when it fits).
    R, the row transform, has 2 * ceil(W / 2) + 2 columns: one more than the padded row when W is odd."""
    tiles_h, tiles_w = (H + 1) // 2, (W + 1) // 2
    rows = max(1, min(tiles_h, chunk_bytes // (16 * tiles_w * max(C, K) * itemsize)))
    return (4, rows, 2 * tiles_w + 2, C), (16, rows * tiles_w, C), (16, rows * tiles_w, K)


def _input_transform(P, H, W, R, Z, i0, n, lo, hi):
    """Z[:, tiles of tile rows i0 + lo .. i0 + hi] = B^T d B, through R (the row transform)."""
    xp = array_module(P)
    grid = padded_grid(P, H, W)
    tw = (W + 1) // 2
    C = P.shape[1]
    a0, a1 = 2 * (i0 + lo), 2 * (i0 + hi)
    d = [grid[a0 + r: a1 + r: 2] for r in range(4)]      # d3 is one row short when H is odd
    r = [R[a, lo:hi, :W + 2] for a in range(4)]
    xp.subtract(d[0], d[2], out=r[0])           # B^T d along the rows: d0 - d2, d1 + d2, d2 - d1, d1 - d3
    xp.add(d[1], d[2], out=r[1])
    xp.subtract(d[2], d[1], out=r[2])
    k = d[3].shape[0]
    xp.subtract(d[1][:k], d[3], out=r[3][:k])
    if k < hi - lo:
        r[3][k:] = d[1][k:]                      # d3 = 0 below the bottom border
    m = hi - lo
    for a in range(4):                           # ... and along the columns, every other pixel
        c = [R[a, lo:hi, s: s + 2 * tw: 2] for s in range(4)]
        z = [Z[4 * a + b, lo * tw: hi * tw].reshape(m, tw, C) for b in range(4)]
        xp.subtract(c[0], c[2], out=z[0])
        xp.add(c[1], c[2], out=z[1])
        xp.subtract(c[2], c[1], out=z[2])
        xp.subtract(c[1], c[3], out=z[3])


def _output_transform(M, Yg, W, i0, n, lo, hi):
    """Y[output rows of tile rows i0 + lo .. i0 + hi] = A^T M A (M is overwritten on the way)."""
    xp = array_module(M)
    tw = (W + 1) // 2
    K = M.shape[2]
    m = hi - lo
    mm = [M[k, lo * tw: hi * tw].reshape(m, tw, K) for k in range(16)]
    for b in range(4):                           # along the rows: T0 = M0 + M1 + M2 -> M[0, b], T1 = M1 - M2 - M3 -> M[1, b]
        m0, m1, m2, m3 = mm[b], mm[4 + b], mm[8 + b], mm[12 + b]
        m0 += m1
        m0 += m2
        m1 -= m2
        m1 -= m3
    for p in range(2):                           # along the columns, into every other output pixel
        rows = Yg[2 * (i0 + lo) + p: 2 * (i0 + hi): 2]          # one short for p = 1 when H is odd
        h = rows.shape[0]
        t = [x[:h] for x in mm[4 * p: 4 * p + 4]]
        even, odd = rows[:, 0::2], rows[:, 1::2]                # odd is one column short when W is odd
        w = odd.shape[1]
        xp.add(t[0], t[1], out=even)
        even += t[2]
        xp.subtract(t[1][:, :w], t[2][:, :w], out=odd)
        odd -= t[3][:, :w]


def conv3x3_winograd2d_forward(P, H, W, U, bias, out, relu=True, scratch=None, transpose=False, threads=2):
    """conv3x3_forward computed with Winograd F(2x2, 3x3). U = winograd2d_taps(taps).

    Tile (i, j) makes outputs (2i .. 2i + 1, 2j .. 2j + 1) from padded input rows 2i .. 2i + 3 and
    columns 2j .. 2j + 3 (the map's zero border is the padding):

        R[a]    = sum_r B^T[a, r] P_grid[2i + r]                       (4 row additions per tile row)
        Z[a, b] = sum_s B^T[b, s] R[a][:, 2j + s]                      (16 additions of every other pixel)
        M[a, b] = Z[a, b] @ U[a, b]                                    (16 products; bias b: M[1, 1] starts at b)
        Y       = A^T M A                                              (16 + 8 additions)

    m[1][1] reaches all four outputs with weight +1, so a bias placed in it needs no pass of its own.
    An odd H or W makes the last tiles half tiles: they read zeros past the border and their second
    row or column of outputs is dropped.
    transpose=True computes the backward pass (bias None, relu False; see the module docstring).
    The transforms of each chunk of tile rows are split between `threads` threads (NumPy lets go of
    the GIL in them); the products use BLAS's own threads.
    scratch: (R, Z, M) of winograd2d_scratch_shapes(H, W, C_in, C_out) (allocated when None).
    """
    xp = array_module(P)
    C = P.shape[1]
    K = U.shape[1] if transpose else U.shape[2]
    if scratch is None:
        scratch = [xp.empty(s, dtype=P.dtype) for s in winograd2d_scratch_shapes(H, W, C, K, itemsize=P.itemsize)]
    R, Z, M = scratch
    rows = R.shape[1]
    tw = (W + 1) // 2
    R[:, :, W + 2:] = 0                # an odd W: the last tile reads one column past the border, as zero
    Yg = padded_grid(out, H, W)[1:H + 1, 1:W + 1]
    tiles_h = (H + 1) // 2
    for i0 in range(0, tiles_h, rows):
        n = min(rows, tiles_h - i0)
        split_run(lambda lo, hi: _input_transform(P, H, W, R, Z, i0, n, lo, hi), n, threads,
                  work=4 * n * W * C, xp=xp)
        if bias is not None:
            M[5, :n * tw] = bias
        for k in range(16):
            a, b = divmod(k, 4)
            if transpose:
                filters, trans = U[4 * _FLIP[a] + _FLIP[b]], True
            else:
                filters, trans = U[k], False
            gemm(Z[k, :n * tw], filters, M[k, :n * tw], accumulate=(k == 5 and bias is not None), trans_b=trans)
        split_run(lambda lo, hi: _output_transform(M, Yg, W, i0, n, lo, hi), n, threads,
                  work=4 * n * W * K, xp=xp)
    zero_border(out, H, W)
    if relu:
        relu_inplace(out[W + 3: W + 3 + H * (W + 2)], threads)
    return out


def conv3x3_winograd2d_backward(dY, H, W, U, out, scratch=None, threads=2):
    """dL/dP for conv3x3_winograd2d_forward (or conv3x3_forward): dY (L, K) -> out (L, C), zero border.

    dY must be zero on its border (the ReLU mask sees to that)."""
    return conv3x3_winograd2d_forward(dY, H, W, U, None, out, relu=False, scratch=scratch, transpose=True,
                                      threads=threads)
