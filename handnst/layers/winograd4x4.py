"""3x3 convolution in the padded layout with Winograd F(4x4, 3x3): 36 products for 4x4 outputs.

The same idea as winograd2d.py with bigger tiles. Four outputs of a 3-tap correlation along a line
take 6 inputs and, with Toom-Cook's construction at the interpolation points 0, 1, -1, 1/2, -2
and infinity (Lavin and Gray's F(4, 3) used 2 where this uses 1/2: see the matrices), 6
multiplications instead of 12:

    y (4) = A^T [ (G g) * (B^T d) ]       B^T: 6 x 6,  G: 6 x 3,  A^T: 4 x 6   (matrices below)

Along both axes a 4x4 block of outputs needs the 6x6 patch of input around it, and

    Y (4 x 4) = A^T [ (G g G^T) * (B^T d B) ] A          (* elementwise over the 6 x 6 indices)

costs 36 products for 16 outputs: 2.25 per output, against 4 for F(2x2, 3x3) and 9 for the direct
convolution. Over a whole map every (a, b) of the 36 is one matrix product
M[a, b] (tiles, K) = Z[a, b] (tiles, C) @ U[a, b] (C, K), as in winograd2d.py.

The price is in the transforms. B^T, G and A^T hold 5/2, 1/15, 1/8 and 8 besides +-1, so each
6 x 6 transform takes about three times the additions of F(2x2)'s, and the matrices are less well
conditioned: measured against float64, the float32 error of a layer is about 7 times that of
F(2x2, 3x3) (2.3e-6 of the largest output against 3.3e-7; 6.1e-6 with Lavin and Gray's points;
the tests hold it under 5e-6). So this pays only where the products dominate:
many channels (the transforms cost O(C) per pixel, the products O(C K)) and maps big enough that
the products still have hundreds of rows (VGG19.algorithm decides, from measurements).

How the transforms run. Read as 36 numbers, B^T d B is one matrix, kron(B^T, B^T) (36 x 36), times
the 36 numbers of the patch d; and A^T m A is kron(A^T, A^T) (16 x 36) times the 36 numbers of m.
So the 36 numbers of every tile's patch are gathered (36 copies of every 4th pixel of every 4th
row: D, one row per tile), and each transform is one matrix product over all tiles and channels
at once. Written as additions, B^T d B takes about 30 NumPy passes over arrays of the map's size,
each a trip through memory on one core (a second thread did not help); the product makes one trip,
on every core. Measured at 512x384 on 2 cores, conv3_2 forward: 35 ms with the additions, 24 ms as
products. The product sums the 36 terms in order instead of taking differences first, and the
float32 result stays as accurate: on VGG19's conv2_2 and conv3_1 responses to a noise image, 1.8e-7
and 2.1e-7 of the largest Z against 1.4e-7 and 1.2e-7 with the additions; a whole layer, forward or
backward, 1.3e-6 to 3.3e-6 of float64, either way.

The backward pass. dL/dP is the correlation of dY with the filters flipped in both directions (C and
K swapped). F(4, 3)'s points are not closed under the flip (1/2 would map to 2), so the transformed
filters do not simply map onto themselves as in F(2x2). Instead the *maps* are flipped: correlating
with a flipped filter is flipping the input, correlating with the filter, and flipping the result,
and flipping a map in this layout is a view with negative strides. So the backward pass runs the
forward algorithm on reversed views of dY and of the output, with the same U read transposed.

Maps whose sides are not multiples of 4 end in part tiles. On the right, the patches of the last
tiles get zeros where they reach past the border; at the bottom, the rows of the last tile row are
copied into a small grid of six rows with zeros below the border. A part tile's outputs beyond
the map are simply not written.
"""

import functools

from handnst.backend import array_module, gemm
from handnst.layers.padded import padded_grid, zero_border
from handnst.layers.winograd2d import filter_transform

# Interpolation points 0, 1, -1, 1/2, -2 and infinity. Lavin and Gray's 0, +-1, +-2 work as well
# in exact arithmetic; with 1/2 in place of 2, float32 keeps more digits (measured on VGG-like
# statistics, one 4x4 tile layer of 128 channels: 2.7e-6 of the largest output against 7.3e-6, rms
# 1.1e-6 against 1.7e-6; Barabasz et al. found the same choice in "Error analysis and improving the
# accuracy of Winograd convolution for deep neural networks", 2020). The transforms run as dense
# matrix products (below), so their fractions cost nothing.
WINOGRAD4_BT = ((1, -3 / 2, -2, 3 / 2, 1, 0),
                (0, -1, 1 / 2, 5 / 2, 1, 0),
                (0, 1, -5 / 2, 1 / 2, 1, 0),
                (0, -2, -1, 2, 1, 0),
                (0, 1 / 2, -1, -1 / 2, 1, 0),
                (0, 1, -3 / 2, -2, 3 / 2, 1))         # d -> B^T d     (6 x 6)
WINOGRAD4_G = ((1, 0, 0),
               (1 / 3, 1 / 3, 1 / 3),
               (-1 / 3, 1 / 3, -1 / 3),
               (-16 / 15, -8 / 15, -4 / 15),
               (1 / 15, -2 / 15, 4 / 15),
               (0, 0, 1))                             # g -> G g       (6 x 3)
WINOGRAD4_AT = ((1, 1, 1, 1, 1, 0),
                (0, 1, -1, 1 / 2, -2, 0),
                (0, 1, 1, 1 / 4, 4, 0),
                (0, 1, -1, 1 / 8, -8, 1))             # m -> A^T m     (4 x 6)


def winograd_f43(d, g):
    """The four outputs of correlating 6 inputs d with 3 taps g, from 6 multiplications (textbook form)."""
    z = [sum(c * x for c, x in zip(row, d) if c) for row in WINOGRAD4_BT]
    u = [sum(c * x for c, x in zip(row, g) if c) for row in WINOGRAD4_G]
    m = [zi * ui for zi, ui in zip(z, u)]
    return tuple(sum(c * x for c, x in zip(row, m) if c) for row in WINOGRAD4_AT)


def winograd4x4_taps(taps):
    """Taps (9, C, K) -> U (36, C, K): U[6a + b] = sum_uv G[a, u] G[b, v] taps[3u + v] (filter_transform)."""
    return filter_transform(taps, WINOGRAD4_G)


# Both transforms as matrices acting on a whole tile at once: B^T d B, read as 36 numbers, is
# kron(B^T, B^T) times the 36 numbers of d, and A^T m A is kron(A^T, A^T) times those of m.
WINOGRAD4_BT2 = tuple(tuple(a * b for a in ra for b in rb) for ra in WINOGRAD4_BT for rb in WINOGRAD4_BT)  # (36, 36)
WINOGRAD4_AT2 = tuple(tuple(a * b for a in ra for b in rb) for ra in WINOGRAD4_AT for rb in WINOGRAD4_AT)  # (16, 36)

# Scratch buffers that may share memory (by their index in winograd4x4_scratch_shapes), because they
# are never in use at the same time: the gathered patches D and the products M (the input transform
# is done with D before the products write M), and the outputs Y and the transformed input Z (the
# products are done with Z before Y is written). The smaller of each pair lives inside the other.
SCRATCH_SHARED = ((0, 2), (3, 1))


def winograd4x4_scratch_shapes(H, W, C, K, chunk_bytes=24 << 20, itemsize=4):
    """Shapes of the scratch buffers (D, Z, M, Y, tail) of conv3x3_winograd4x4_forward: the 6x6 input
    patches of every tile, the transformed input, the products, the 4x4 outputs of every tile and
    the six-row grid of a part tile row at the bottom, for tile rows processed `rows` at a time so
    that Z and M stay under about `chunk_bytes` each. The chunks of whole tile rows are made equal
    (the products of a short last chunk run slower), and big: a product needs a few hundred rows to
    run at full speed."""
    whole, tiles_w = H // 4, -(-W // 4)
    most = max(1, min(whole, chunk_bytes // (36 * tiles_w * max(C, K) * itemsize)))
    chunks = max(1, -(-whole // most))
    rows = max(1, -(-whole // chunks))
    n = rows * tiles_w
    return (36, n, C), (36, n, C), (36, n, K), (16, n, K), (6, W + 2, C)


@functools.lru_cache(maxsize=None)
def _kron_matrices(xp, dtype):
    """kron(B^T, B^T) and kron(A^T, A^T) as arrays of backend xp and the maps' dtype (made once)."""
    return xp.asarray(WINOGRAD4_BT2, dtype=dtype), xp.asarray(WINOGRAD4_AT2, dtype=dtype)


def _carve(buffer, n, cols):
    """The leading (rows, n, cols) of a scratch buffer as one contiguous array (a chunk of n tiles)."""
    rows = buffer.shape[0]
    return buffer.reshape(-1)[:rows * n * cols].reshape(rows, n, cols)


def _gather_patches(grid, D, i0, n, tw):
    """D[6r + s] (n * tw, C) = input pixel (4i + r, 4j + s) of every tile (i, j) of tile rows
    i0 .. i0 + n - 1: the 36 numbers of each tile's 6x6 patch, one row per tile. A part tile on the
    right reads zeros past the grid."""
    C = grid.shape[2]
    a0, a1 = 4 * i0, 4 * (i0 + n)
    for r in range(6):
        rows = grid[a0 + r: a1 + r: 4]                        # (n, W + 2, C): input rows 4i + r
        for s in range(6):
            src = rows[:, s::4][:, :tw]
            dst = D[6 * r + s].reshape(n, tw, C)
            have = src.shape[1]
            dst[:, :have] = src
            if have < tw:
                dst[:, have:] = 0


def _scatter_outputs(Y, Yg, i0, n, tw, relu):
    """Output (4i + p, 4j + q) of Yg = Y[4p + q] of tile (i, j), for tile rows i0 .. i0 + n - 1
    (rectified when `relu`); outputs of part tiles beyond the map are not written."""
    xp = array_module(Y)
    K = Y.shape[2]
    for p in range(4):
        out_rows = Yg[4 * i0 + p: 4 * (i0 + n): 4]          # (n, W, K), fewer rows in a part tile
        for q in range(4):
            dst = out_rows[:, q::4]                         # one tile fewer where 4j + q >= W
            src = Y[4 * p + q].reshape(n, tw, K)[:dst.shape[0], :dst.shape[1]]
            if relu:
                xp.maximum(src, 0, out=dst)
            else:
                dst[...] = src


def _tile_rows(grid, Yg, U, bias, scratch, i0, n, transpose, relu):
    """Outputs of tile rows i0 .. i0 + n - 1 of Yg (H, W, K) from grid (H + 2, W + 2, C), one chunk."""
    xp = array_module(grid)
    W, C, K = Yg.shape[1], grid.shape[2], Yg.shape[2]
    tw = -(-W // 4)
    BT2, AT2 = _kron_matrices(xp, grid.dtype)
    D, Z, M, Y = (_carve(b, n * tw, cols) for b, cols in zip(scratch[:4], (C, C, K, K)))
    _gather_patches(grid, D, i0, n, tw)
    gemm(BT2, D.reshape(36, -1), Z.reshape(36, -1))          # Z = B^T d B, every tile and channel at once
    if bias is not None:
        M[7] = bias
    for k in range(36):
        gemm(Z[k], U[k], M[k], accumulate=(k == 7 and bias is not None), trans_b=transpose)
    gemm(AT2, M.reshape(36, -1), Y.reshape(16, -1))          # Y = A^T M A
    _scatter_outputs(Y, Yg, i0, n, tw, relu)


def conv3x3_winograd4x4_forward(P, H, W, U, bias, out, relu=True, scratch=None, transpose=False, threads=2):
    """conv3x3_forward computed with Winograd F(4x4, 3x3). U = winograd4x4_taps(taps).

    Tile (i, j) makes outputs (4i .. 4i + 3, 4j .. 4j + 3) from padded input rows 4i .. 4i + 5 and
    columns 4j .. 4j + 5 (the map's zero border is the padding). For a chunk of tile rows:

        D[6r + s] = P_grid[4i + r, 4j + s]             (the 36 numbers of every tile's patch, gathered)
        Z         = kron(B^T, B^T) @ D                 (B^T d B of every tile and channel: one product)
        M[a, b]   = Z[a, b] @ U[a, b]                  (36 products; bias b: M[1, 1] starts at b)
        Y         = kron(A^T, A^T) @ M                 (A^T m A: one product)
        Yg[4i + p, 4j + q] = Y[4p + q]                 (scattered, rectified on the way when relu)

    Column 1 of A^T is all ones, so m[1][1] reaches all 16 outputs with weight +1 and carries the bias.
    The transforms run as matrix products because NumPy would otherwise make a pass over memory
    for every addition (about 30 for B^T d B); BLAS makes one, and uses both cores.
    transpose=True computes the backward pass (bias None, relu False; see the module docstring): the
    same steps on reversed views of P and out, with every U[a, b] read transposed.
    scratch: the buffers of winograd4x4_scratch_shapes(H, W, C_in, C_out) (allocated when None).
    D and M may share memory, and so may Y and Z (SCRATCH_SHARED). `threads` is accepted for the
    common signature of the kernels; here BLAS does the parallel work.
    """
    xp = array_module(P)
    C = P.shape[1]
    K = U.shape[1] if transpose else U.shape[2]
    if scratch is None:
        scratch = [xp.empty(s, dtype=P.dtype) for s in winograd4x4_scratch_shapes(H, W, C, K, itemsize=P.itemsize)]
    tail = scratch[4]
    rows = scratch[0].shape[1] // -(-W // 4)
    grid = padded_grid(P, H, W)
    Yg = padded_grid(out, H, W)[1:H + 1, 1:W + 1]
    if transpose:
        grid, Yg = grid[::-1, ::-1], Yg[::-1, ::-1]
    whole = H // 4
    for i0 in range(0, whole, rows):
        _tile_rows(grid, Yg, U, bias, scratch, i0, min(rows, whole - i0), transpose, relu)
    if H > 4 * whole:                  # a part tile row: its rows and the border row, then zero rows
        have = H + 2 - 4 * whole
        tail[:have] = grid[4 * whole:]
        tail[have:] = 0
        _tile_rows(tail, Yg[4 * whole:], U, bias, scratch, 0, 1, transpose, relu)
    zero_border(out, H, W)
    return out


def conv3x3_winograd4x4_backward(dY, H, W, U, out, scratch=None, threads=2):
    """dL/dP for conv3x3_winograd4x4_forward (or conv3x3_forward): dY (L, K) -> out (L, C), zero border.

    dY must be zero on its border (the ReLU mask sees to that)."""
    return conv3x3_winograd4x4_forward(dY, H, W, U, None, out, relu=False, scratch=scratch, transpose=True,
                                       threads=threads)
