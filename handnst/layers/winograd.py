"""3x3 convolution in the padded layout with Winograd F(2, 3) along the rows."""

import functools
import math

from handnst.backend import array_module, gemm, split_run
from handnst.layers.padded import padded_grid


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


def _transform_input(grid, Z, i0, n, threads=2):
    """Z[a] = sum_r B^T[a, r] grid[2i + r] for tile rows i = i0 .. i0 + n - 1 (4 row additions per
    tile row; d3 is the zero row below the border when H is odd)."""
    xp = array_module(Z)
    Wp, C = grid.shape[1], grid.shape[2]
    d = [grid[2 * i0 + r: 2 * (i0 + n) + r: 2] for r in range(4)]      # d3 is one row short if H is odd
    z = [Z[a, :n * Wp].reshape(n, Wp, C) for a in range(4)]

    def part(lo, hi):
        xp.subtract(d[0][lo:hi], d[2][lo:hi], out=z[0][lo:hi])
        xp.add(d[1][lo:hi], d[2][lo:hi], out=z[1][lo:hi])
        xp.subtract(d[2][lo:hi], d[1][lo:hi], out=z[2][lo:hi])
        k = min(hi, d[3].shape[0])
        if k > lo:
            xp.subtract(d[1][lo:k], d[3][lo:k], out=z[3][lo:k])
        if k < hi:
            z[3][max(k, lo):hi] = d[1][max(k, lo):hi]       # d3 = 0 below the bottom border
    split_run(part, n, threads, work=n * Wp * C, xp=xp)


@functools.lru_cache(maxsize=None)
def _at_matrix(xp, dtype):
    """A^T (2 x 4) as an array of backend xp and the maps' dtype (made once)."""
    return xp.asarray(WINOGRAD_AT, dtype=dtype)


def _output_room(Z, shape):
    """Room for the chunk's two output rows, A^T M: inside the scratch Z when it is big enough (always,
    with at most twice as many channels out as in), else a new array."""
    xp = array_module(Z)
    size = math.prod(shape)
    if Z.size >= size:
        return Z.reshape(-1)[:size].reshape(shape)
    return xp.empty(shape, dtype=Z.dtype)


def conv3x3_winograd_forward(P, H, W, U, bias, out, relu=True, scratch=None, transpose=False, U_t=None,
                             threads=2):
    """conv3x3_forward computed with Winograd F(2, 3) along the rows. U = winograd_taps(taps).

    Tile row i makes output rows 2i and 2i + 1 from padded input rows 2i .. 2i + 3 (d0..d3):

        Z[a] = sum_r B^T[a, r] P_grid[2i + r]                          (4 row additions)
        M[a] = sum_v Z[a][shifted by v] @ U[a][v]                      (12 products, as in conv3x3_forward)
        Y[2i] = M[0] + M[1] + M[2],   Y[2i + 1] = M[1] - M[2] - M[3]      (bias b: M[1] starts at b)

    with the same flattened-row bookkeeping as conv3x3_forward (each Z[a] is a (rows x (W + 2), C)
    matrix, so the v-shifts are row offsets 0, 1, 2 and the last two columns of every row are junk,
    zeroed at the end). An odd H has a last tile whose second output row is dropped and whose d3 is
    the zero row below the border. P's border must be zero, as everywhere in this layout.

    The last line is Y = A^T M, and it runs as one matrix product for the whole chunk, (2 x 4) times
    the four M[a] as the rows of a (4, rows x (W + 2) x K) matrix: BLAS reads M once, on every core,
    where four NumPy additions read it twice on one (conv1_2 at 512x384, forward and backward: 124 ms
    against 140). The two output rows are then copied into place, rectified on the way.

    transpose=True computes the backward pass instead (bias must be None, relu False): dL/dP is the
    convolution of dY with the filters flipped in u and v and with C and K swapped, and the flip maps
    U onto itself: U_flipped[a][v] = U[3 - a if a in (0, 3) else a][2 - v]^T, because G's rows 0 and 3
    are each other's mirror images and rows 1 and 2 are symmetric. So the same U serves both passes.

    scratch: (Z, M) buffers of winograd_scratch_shapes(H, W, C_in, C_out) (allocated when None).
    U_t: optional, winograd_taps_transposed(U); the forward pass then reads its filters from there
    (same numbers, faster packing for 512 channels). The backward pass does not need it.
    threads: the input row additions of each chunk are split between this many threads (backend.split_run).
    """
    xp = array_module(P)
    C = P.shape[1]
    K = U[0].shape[1] if transpose else U[0].shape[2]
    Wp = W + 2
    if scratch is None:
        scratch = [xp.empty(shape, dtype=P.dtype) for shape in winograd_scratch_shapes(H, W, C, K, itemsize=P.itemsize)]
    Z, M = scratch
    rows = M.shape[1] // Wp
    grid = padded_grid(P, H, W)
    start = W + 3
    Y = out[start:start + H * Wp]
    Yg = Y.reshape(H, Wp, K)
    tiles = (H + 1) // 2
    for i0 in range(0, tiles, rows):
        n = min(rows, tiles - i0)
        _transform_input(grid, Z, i0, n, threads)
        Z[:, n * Wp:] = 0              # the slack read by the v = 1, 2 shifts of the last tile (junk columns only)
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
        # Y = A^T M for every pixel and channel of the chunk: one product (2 x 4) @ (4, n (W + 2) K),
        # written into Z (dead once the products are done), then its two rows put in place.
        two = _output_room(Z, (2, n, Wp, K))
        gemm(_at_matrix(xp, P.dtype), M[:, :n * Wp].reshape(4, -1), two.reshape(2, -1))
        even = Yg[2 * i0: 2 * (i0 + n): 2]
        odd = Yg[2 * i0 + 1: 2 * (i0 + n): 2]      # one row short if H is odd
        for rows_out, y in ((even, two[0]), (odd, two[1][:odd.shape[0]])):
            if relu:
                xp.maximum(y, 0, out=rows_out)
            else:
                rows_out[...] = y
    out[:start] = 0
    out[start + H * Wp:] = 0
    Yg[:, W:] = 0                      # the junk columns are the next map's border: zero
    return out


def conv3x3_winograd_backward(dY, H, W, U, out, scratch=None, threads=2):
    """dL/dP for conv3x3_winograd_forward (or conv3x3_forward): dY (L, K) -> out (L, C).

    dY must be zero on its border (the ReLU mask sees to that). Unlike conv3x3_backward, the border
    rows of `out` come out zero.
    """
    return conv3x3_winograd_forward(dY, H, W, U, None, out, relu=False, scratch=scratch, transpose=True,
                                    threads=threads)


def conv3x3_winograd_weight_gradient(P, dY, H, W, scratch=None):
    """dL/dtaps (9, C, K) of conv3x3_winograd_forward from its input P (L, C) and dY = dL/dY (L, K),
    zero on the border and the junk columns: the weight gradient with a third fewer products than
    the nine of the direct form (conv3x3_weight_gradient in handnst.layers.stacked).

    The forward pass computed M[a] = sum_v Z[a][shifted by v] @ U[a][v] and Y = A^T M, so

        dM[0] = dY[2i],  dM[1] = dY[2i] + dY[2i + 1],  dM[2] = dY[2i] - dY[2i + 1],  dM[3] = -dY[2i + 1]
        dU[a][v] = Z[a][shifted by v]^T @ dM[a]                       (12 products)
        dtaps[3u + v] = sum_a G[a, u] dU[a][v]                        (U[a][v] = sum_u G[a, u] taps[3u + v])

    with Z recomputed from P as in the forward pass (cheap: four row additions per tile row). dM[3]
    is kept as +dY[2i + 1] and its sign applied in the last line. scratch: (Z, M) of
    winograd_scratch_shapes(H, W, C, K) (allocated when None)."""
    xp = array_module(P)
    C, K = P.shape[1], dY.shape[1]
    Wp = W + 2
    if scratch is None:
        scratch = [xp.empty(shape, dtype=P.dtype) for shape in winograd_scratch_shapes(H, W, C, K, itemsize=P.itemsize)]
    Z, M = scratch
    rows = M.shape[1] // Wp
    grid = padded_grid(P, H, W)
    Yg = dY[W + 3: W + 3 + H * Wp].reshape(H, Wp, K)
    dU = xp.zeros((4, 3, C, K), dtype=P.dtype)
    tiles = (H + 1) // 2
    for i0 in range(0, tiles, rows):
        n = min(rows, tiles - i0)
        _transform_input(grid, Z, i0, n)
        Z[:, n * Wp: n * Wp + 2] = 0       # read by the shifts v = 1, 2 against the zero junk columns: no stale NaN
        even = Yg[2 * i0: 2 * (i0 + n): 2]
        odd = Yg[2 * i0 + 1: 2 * (i0 + n): 2]                 # one row short if H is odd
        m = [M[a, :n * Wp].reshape(n, Wp, K) for a in range(4)]
        k = odd.shape[0]
        m[0][...] = even
        m[3][:k] = odd
        m[3][k:] = 0
        xp.add(m[0], m[3], out=m[1])
        xp.subtract(m[0], m[3], out=m[2])
        for a in range(4):
            for v in range(3):
                gemm(Z[a, v:v + n * Wp], M[a, :n * Wp], dU[a, v], accumulate=True, trans_a=True)
    dtaps = xp.empty((3, 3, C, K), dtype=P.dtype)
    xp.add(dU[0], (dU[1] + dU[2]) * 0.5, out=dtaps[0])
    xp.multiply(dU[1] - dU[2], 0.5, out=dtaps[1])
    xp.subtract((dU[1] + dU[2]) * 0.5, dU[3], out=dtaps[2])
    return dtaps.reshape(9, C, K)

