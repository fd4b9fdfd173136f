"""3x3 convolution in the padded layout with Winograd F(4x4, 3x3): 36 products for 4x4 outputs.

The same idea as winograd2d.py with bigger tiles. Four outputs of a 3-tap correlation along a line
take 6 inputs and, with Lavin and Gray's F(4, 3) (interpolation points 0, 1, -1, 2, -2 and
infinity), 6 multiplications instead of 12:

    y (4) = A^T [ (G g) * (B^T d) ]       B^T: 6 x 6,  G: 6 x 3,  A^T: 4 x 6   (matrices below)

Along both axes a 4x4 block of outputs needs the 6x6 patch of input around it, and

    Y (4 x 4) = A^T [ (G g G^T) * (B^T d B) ] A          (* elementwise over the 6 x 6 indices)

costs 36 products for 16 outputs: 2.25 per output, against 4 for F(2x2, 3x3) and 9 for the direct
convolution. Over a whole map every (a, b) of the 36 is one matrix product
M[a, b] (tiles, K) = Z[a, b] (tiles, C) @ U[a, b] (C, K), as in winograd2d.py.

The price is in the transforms. B^T and A^T hold 4, 5, 2 and 8 besides +-1, so each 6 x 6 transform
takes about three times the additions of F(2x2)'s, and the matrices are less well conditioned:
measured against float64, the float32 error of a layer is about 20 times that of F(2x2, 3x3)
(6.4e-6 of the largest output against 3.3e-7; the tests hold it under 2e-5). So this pays only
where the products dominate:
many channels (the transforms cost O(C) per pixel, the products O(C K)) and maps big enough that
the products still have hundreds of rows (VGG19.algorithm decides, from measurements).

The backward pass. dL/dP is the correlation of dY with the filters flipped in both directions (C and
K swapped). F(4, 3)'s points are not closed under the flip (2 would map to 1/2), so the transformed
filters do not simply map onto themselves as in F(2x2). Instead the *maps* are flipped: correlating
with a flipped filter is flipping the input, correlating with the filter, and flipping the result,
and flipping a map in this layout is a view with negative strides. So the backward pass runs the
forward algorithm on reversed views of dY and of the output, with the same U read transposed.

Maps whose sides are not multiples of 4 end in part tiles. On the right, the row transform's buffer
has zero columns past the border, so the last tiles read zeros there; at the bottom, the rows of
the last tile row are copied into a small grid of six rows with zeros below the border. A part
tile's outputs beyond the map are simply not written.
"""

from handnst.backend import array_module, gemm, split_run
from handnst.layers.padded import padded_grid, relu_inplace, zero_border
from handnst.layers.winograd2d import filter_transform

WINOGRAD4_BT = ((4, 0, -5, 0, 1, 0),
                (0, -4, -4, 1, 1, 0),
                (0, 4, -4, -1, 1, 0),
                (0, -2, -1, 2, 1, 0),
                (0, 2, -1, -2, 1, 0),
                (0, 4, 0, -5, 0, 1))                  # d -> B^T d     (6 x 6)
WINOGRAD4_G = ((1 / 4, 0, 0),
               (-1 / 6, -1 / 6, -1 / 6),
               (-1 / 6, 1 / 6, -1 / 6),
               (1 / 24, 1 / 12, 1 / 6),
               (1 / 24, -1 / 12, 1 / 6),
               (0, 0, 1))                             # g -> G g       (6 x 3)
WINOGRAD4_AT = ((1, 1, 1, 1, 1, 0),
                (0, 1, -1, 2, -2, 0),
                (0, 1, 1, 4, 4, 0),
                (0, 1, -1, 8, -8, 1))                 # m -> A^T m     (4 x 6)


def winograd_f43(d, g):
    """The four outputs of correlating 6 inputs d with 3 taps g, from 6 multiplications (textbook form)."""
    z = [sum(c * x for c, x in zip(row, d) if c) for row in WINOGRAD4_BT]
    u = [sum(c * x for c, x in zip(row, g) if c) for row in WINOGRAD4_G]
    m = [zi * ui for zi, ui in zip(z, u)]
    return tuple(sum(c * x for c, x in zip(row, m) if c) for row in WINOGRAD4_AT)


def winograd4x4_taps(taps):
    """Taps (9, C, K) -> U (36, C, K): U[6a + b] = sum_uv G[a, u] G[b, v] taps[3u + v] (filter_transform)."""
    return filter_transform(taps, WINOGRAD4_G)


# Scratch buffers that may share memory (by their index in winograd4x4_scratch_shapes): the row
# transform R lives inside the products M where it fits (12.8 MB less at 512x512 on conv3_x).
SCRATCH_SHARED = ((0, 2),)


def winograd4x4_scratch_shapes(H, W, C, K, chunk_bytes=24 << 20, itemsize=4):
    """Shapes of the scratch buffers (R, Z, M, T, tail) of conv3x3_winograd4x4_forward: the row
    transform (4 ceil(W / 4) + 2 columns, the last ones zero past the border), the transformed input,
    the products, one temporary and the six-row grid of a part tile row at the bottom, for tile rows
    processed `rows` at a time so that Z and M stay under about `chunk_bytes` each. The chunks of
    whole tile rows are made equal (the products of a short last chunk run slower), and big: a
    product needs a few hundred rows to run at full speed."""
    whole, tiles_w = H // 4, -(-W // 4)
    most = max(1, min(whole, chunk_bytes // (36 * tiles_w * max(C, K) * itemsize)))
    chunks = max(1, -(-whole // most))
    rows = max(1, -(-whole // chunks))
    return ((6, rows, 4 * tiles_w + 2, C), (36, rows * tiles_w, C), (36, rows * tiles_w, K),
            (rows, 4 * tiles_w + 2, max(C, K)), (6, W + 2, C))


def _bt6(d, z, t):
    """z[0..5] = B^T d for six arrays d (F(4, 3)'s input transform), through one temporary t.

    With e = d4 - d2 and f = d3 - d1 the six rows of B^T read
        z0 = 4 (d0 - d2) + e             z3 = e + 2 f            z5 = (d5 - d3) - 4 f
        z1 = (d4 - 4 d2) + (d3 - 4 d1)   z4 = e - 2 f
        z2 = (d4 - 4 d2) - (d3 - 4 d1)
    17 passes over arrays of one output's size.
    """
    xp = array_module(t)
    d0, d1, d2, d3, d4, d5 = d
    z0, z1, z2, z3, z4, z5 = z
    xp.subtract(d4, d2, out=z3)                 # e
    xp.subtract(d0, d2, out=z0)
    z0 *= 4
    z0 += z3                                    # z0
    xp.subtract(d3, d1, out=z4)                 # f
    xp.add(z4, z4, out=t)                       # 2 f
    xp.subtract(z3, t, out=z4)                  # z4 = e - 2 f
    z3 += t                                     # z3 = e + 2 f
    xp.subtract(d5, d3, out=z5)
    t *= 2
    z5 -= t                                     # z5
    xp.multiply(d2, 4, out=z1)
    xp.subtract(d4, z1, out=z1)                 # p = d4 - 4 d2
    xp.multiply(d1, 4, out=t)
    xp.subtract(d3, t, out=t)                   # q = d3 - 4 d1
    xp.subtract(z1, t, out=z2)                  # z2 = p - q
    z1 += t                                     # z1 = p + q


def _at6(m, y, t):
    """y[0..3] = A^T m for six (rows, tiles, K) arrays m (F(4, 3)'s output transform); m[1..4] are
    overwritten. An output y may hold fewer rows or tiles than m (part tiles at the map's edge).

    With s = m1 + m2, r = m1 - m2, s' = m3 + m4, r' = m3 - m4:
        y0 = m0 + s + s'    y1 = r + 2 r'    y2 = s + 4 s'    y3 = r + 8 r' + m5
    y may be (m0, m1, m4, m2) themselves (the rows pass keeps its results in place): 13 passes."""
    xp = array_module(t)
    m0, m1, m2, m3, m4, m5 = m
    y0, y1, y2, y3 = y

    def part(a, y):       # the leading rows and columns of a that y holds (fewer at a part tile)
        return a if a.shape == y.shape else a[:y.shape[0], :y.shape[1]]
    xp.subtract(m1, m2, out=t)                  # r
    m1 += m2                                    # s
    xp.subtract(m3, m4, out=m2)                 # r'
    m3 += m4                                    # s'
    xp.multiply(part(m3, y2), 4, out=y2)        # (m4 is used up: y2 may be m4)
    y2 += part(m1, y2)                          # y2
    xp.add(part(m0, y0), part(m1, y0), out=y0)
    y0 += part(m3, y0)                          # y0
    xp.add(part(m2, y1), part(m2, y1), out=y1)
    y1 += part(t, y1)                           # y1 = r + 2 r'  (m1 is no longer needed)
    m2 *= 8
    xp.add(part(m2, y3), part(t, y3), out=y3)
    y3 += part(m5, y3)                          # y3


def _input_transform(grid, W, R, Z, T, i0, lo, hi):
    """Z[:, tiles of tile rows i0 + lo .. i0 + hi] = B^T d B, through R (the row transform)."""
    tw = -(-W // 4)
    C = grid.shape[2]
    m = hi - lo
    a0, a1 = 4 * (i0 + lo), 4 * (i0 + hi)
    d = [grid[a0 + r: a1 + r: 4] for r in range(6)]          # (m, W + 2, C): input rows 4i + r
    R[:, lo:hi, W + 2:] = 0                                  # past column W + 1: zero, for part tiles
    r = [R[a, lo:hi] for a in range(6)]
    _bt6(d, [x[:, :W + 2] for x in r], T[lo:hi, :W + 2, :C])   # along the rows
    t = T[lo:hi].reshape(-1)[:m * tw * C].reshape(m, tw, C)
    for a in range(6):                                       # ... and along the columns, every 4th pixel
        c = [r[a][:, s: s + 4 * tw: 4] for s in range(6)]
        z = [Z[6 * a + b, lo * tw: hi * tw].reshape(m, tw, C) for b in range(6)]
        _bt6(c, z, t)


def _output_transform(M, Yg, W, T, i0, lo, hi):
    """Y[output rows of tile rows i0 + lo .. i0 + hi] = A^T M A (M is overwritten on the way)."""
    tw = -(-W // 4)
    K = M.shape[2]
    m = hi - lo
    mm = [M[k, lo * tw: hi * tw].reshape(m, tw, K) for k in range(36)]
    t = T[lo:hi].reshape(-1)[:m * tw * K].reshape(m, tw, K)
    rows_of = []
    for b in range(6):                                       # along the rows: 6 values of a -> 4 output rows
        col = [mm[6 * a + b] for a in range(6)]
        y = [col[0], col[1], col[4], col[2]]                 # where _at6 leaves rows 0..3 (no copies)
        _at6(col, y, t)
        rows_of.append(y)
    for p in range(4):                                       # along the columns, into every 4th output pixel
        out_rows = Yg[4 * (i0 + lo) + p: 4 * (i0 + hi): 4]  # (m, W, K), fewer rows in a part tile
        y = [out_rows[:, q::4] for q in range(4)]           # one tile fewer where 4j + q >= W
        _at6([rows_of[b][p] for b in range(6)], y, t)


def _tile_rows(grid, Yg, U, bias, scratch, i0, n, transpose, threads):
    """Outputs of tile rows i0 .. i0 + n - 1 of Yg (H, W, K) from grid (H + 2, W + 2, C), one chunk."""
    xp = array_module(grid)
    R, Z, M, T = scratch[:4]
    W, C, K = Yg.shape[1], grid.shape[2], Yg.shape[2]
    tw = -(-W // 4)
    split_run(lambda lo, hi: _input_transform(grid, W, R, Z, T, i0, lo, hi), n, threads,
              work=9 * n * W * C, xp=xp)
    if bias is not None:
        M[7, :n * tw] = bias
    for k in range(36):
        gemm(Z[k, :n * tw], U[k], M[k, :n * tw], accumulate=(k == 7 and bias is not None), trans_b=transpose)
    split_run(lambda lo, hi: _output_transform(M, Yg, W, T, i0, lo, hi), n, threads,
              work=4 * n * W * K, xp=xp)


def conv3x3_winograd4x4_forward(P, H, W, U, bias, out, relu=True, scratch=None, transpose=False, threads=2):
    """conv3x3_forward computed with Winograd F(4x4, 3x3). U = winograd4x4_taps(taps).

    Tile (i, j) makes outputs (4i .. 4i + 3, 4j .. 4j + 3) from padded input rows 4i .. 4i + 5 and
    columns 4j .. 4j + 5 (the map's zero border is the padding):

        R[a]    = sum_r B^T[a, r] P_grid[4i + r]                     (row transform, per tile row)
        Z[a, b] = sum_s B^T[b, s] R[a][:, 4j + s]                    (column transform, every 4th pixel)
        M[a, b] = Z[a, b] @ U[a, b]                                  (36 products; bias b: M[1, 1] starts at b)
        Y       = A^T M A

    Column 1 of A^T is all ones, so m[1][1] reaches all 16 outputs with weight +1 and carries the bias.
    transpose=True computes the backward pass (bias None, relu False; see the module docstring): the
    same steps on reversed views of P and out, with every U[a, b] read transposed.
    scratch: the buffers of winograd4x4_scratch_shapes(H, W, C_in, C_out) (allocated when None).
    R may share M's memory (SCRATCH_SHARED): each chunk is done with R before its products write M.
    """
    xp = array_module(P)
    C = P.shape[1]
    K = U.shape[1] if transpose else U.shape[2]
    if scratch is None:
        scratch = [xp.empty(s, dtype=P.dtype) for s in winograd4x4_scratch_shapes(H, W, C, K, itemsize=P.itemsize)]
    R, tail = scratch[0], scratch[4]
    rows = R.shape[1]
    grid = padded_grid(P, H, W)
    Yg = padded_grid(out, H, W)[1:H + 1, 1:W + 1]
    if transpose:
        grid, Yg = grid[::-1, ::-1], Yg[::-1, ::-1]
    whole = H // 4
    for i0 in range(0, whole, rows):
        _tile_rows(grid, Yg, U, bias, scratch, i0, min(rows, whole - i0), transpose, threads)
    if H > 4 * whole:                  # a part tile row: its rows and the border row, then zero rows
        have = H + 2 - 4 * whole
        tail[:have] = grid[4 * whole:]
        tail[have:] = 0
        _tile_rows(tail, Yg[4 * whole:], U, bias, scratch, 0, 1, transpose, threads)
    zero_border(out, H, W)
    if relu:
        relu_inplace(out[W + 3: W + 3 + H * (W + 2)], threads)
    return out


def conv3x3_winograd4x4_backward(dY, H, W, U, out, scratch=None, threads=2):
    """dL/dP for conv3x3_winograd4x4_forward (or conv3x3_forward): dY (L, K) -> out (L, C), zero border.

    dY must be zero on its border (the ReLU mask sees to that)."""
    return conv3x3_winograd4x4_forward(dY, H, W, U, None, out, relu=False, scratch=scratch, transpose=True,
                                       threads=threads)
