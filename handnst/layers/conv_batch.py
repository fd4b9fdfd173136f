"""Convolution of a batch (N, C, H, W) with any kernel size and stride, with input, weight and bias
gradients: the layer a network that is *trained* needs.

The convolution here is "valid": it reads only the pixels it is given, so a padded convolution is
a padding layer (for the transformation network, `reflection_pad`) followed by this one. With
filters w (K, C, kh, kw), biases b (K,) and stride s,

    out[n, k, i, j] = b[k] + sum_{c, u, v} w[k, c, u, v] * x[n, c, i*s + u, j*s + v]

    Ho = (H - kh) // s + 1,   Wo = (W - kw) // s + 1.

Its gradients, for an upstream gradient dout = dL/dout of shape (N, K, Ho, Wo):

    dL/dx[n, c, i*s + u, j*s + v]  +=  sum_k dout[n, k, i, j] * w[k, c, u, v]      (every window)
    dL/dw[k, c, u, v]   =  sum_{n, i, j} dout[n, k, i, j] * x[n, c, i*s + u, j*s + v]
    dL/db[k]            =  sum_{n, i, j} dout[n, k, i, j]

The naive functions are these sums as loops over the output positions. The fast ones are im2col on
the batch: the windows of a group of images are unfolded into the columns of one matrix
cols (C*kh*kw, g*Ho*Wo), and each pass is then one large matrix product,

    forward:   out   (K, g*Ho*Wo)     = w (K, C*kh*kw)   @ cols
    weights:   dw    (K, C*kh*kw)    += dout (K, g*Ho*Wo) @ cols^T
    input:     dcols (C*kh*kw, g*Ho*Wo) = w^T            @ dout,   then col2im adds dcols back
                                                                  onto the windows (the adjoint)

The unfolded matrix is kh*kw times bigger than the image (81 times for a 9x9 kernel), so it is
built for as many images as fit in `chunk` elements at a time (the whole training batch at the
inner layers) and, for a large photo, for a band of output rows at a time; each chunk is one
product. The chunks bound the memory (a 9x9 layer on a 1024x768 photo would need gigabytes at
once) but are large (64 MB): every product is a point where BLAS's threads wait for each other,
and on a busy machine a training step of many small products was measured 1.4 to 2.7 times
slower with two threads than the same step in fewer, larger ones. Nothing is kept between forward
and backward but the input: the backward pass unfolds it again.

For stride 1 with fewer output than input channels (conv4, conv5 and above all conv6, 9x9 from 32
channels to 3) it is cheaper to multiply first and unfold the *outputs* ("outputs" below): the
unfolded matrix then has kh*kw*K rows instead of kh*kw*C, ten times fewer for conv6.
"""

from handnst.backend import array_module, gemm

CHUNK_ELEMENTS = 1 << 24       # 64 MB of float32 unfolded windows per product
# Stride 2 gathers every other pixel into the windows: in chunks of 8 MB, which stay in the cache until
# the product reads them, conv2 of the width-32 network on a 512x384 photo took 29 ms against 41 ms in
# one 57 MB piece, conv3 21 against 26 (their backward passes in training 21 against 26 ms, 14 against
# 15); stride 1 runs as fast or faster in the larger chunks.
STRIDE2_CHUNK_ELEMENTS = 1 << 21


def default_chunk(stride):
    """The chunk size (unfolded elements per product) the fast path uses for this stride."""
    return STRIDE2_CHUNK_ELEMENTS if stride == 2 else CHUNK_ELEMENTS


def conv_batch_output_size(size, kernel, stride):
    """Output length of a valid convolution along one axis: (size - kernel) // stride + 1."""
    return (size - kernel) // stride + 1


def _sizes(x_shape, w_shape, stride):
    N, C, H, W = x_shape
    K, C2, kh, kw = w_shape
    if C2 != C:
        raise ValueError(f"input has {C} channels but the filters expect {C2}")
    Ho, Wo = conv_batch_output_size(H, kh, stride), conv_batch_output_size(W, kw, stride)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a {H}x{W} input")
    return N, C, H, W, K, kh, kw, Ho, Wo


# ---------------------------------------------------------------------------------- naive loops

def conv_batch_forward_naive(x, w, b, stride=1):
    """The definition, one output position (n, i, j) at a time: the window x[n, :, i*s:i*s+kh,
    j*s:j*s+kw] times every filter, summed over (c, u, v). Returns out (N, K, Ho, Wo), cache."""
    xp = array_module(x)
    N, C, H, W, K, kh, kw, Ho, Wo = _sizes(x.shape, w.shape, stride)
    out = xp.empty((N, K, Ho, Wo), dtype=x.dtype)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                window = x[n, :, i * stride:i * stride + kh, j * stride:j * stride + kw]   # (C, kh, kw)
                out[n, :, i, j] = (w * window).sum(axis=(1, 2, 3)) + b
    return out, (x, w, stride)


def conv_batch_backward_naive(dout, cache):
    """dx, dw, db by the three sums above, one output position at a time: the window that made
    out[n, :, i, j] receives sum_k dout[n, k, i, j] w[k], and w[k] receives dout[n, k, i, j] times it."""
    x, w, stride = cache
    xp = array_module(x)
    N, C, H, W, K, kh, kw, Ho, Wo = _sizes(x.shape, w.shape, stride)
    dx = xp.zeros_like(x)
    dw = xp.zeros_like(w)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                rows, cols = slice(i * stride, i * stride + kh), slice(j * stride, j * stride + kw)
                g = dout[n, :, i, j]                                     # (K,)
                dx[n, :, rows, cols] += (g[:, None, None, None] * w).sum(axis=0)
                dw += g[:, None, None, None] * x[n, :, rows, cols][None]
    db = dout.sum(axis=(0, 2, 3))
    return dx, dw, db


# -------------------------------------------------------------------------- fast path: im2col

def conv_batch_chunks(N, Ho, Wo, rows_per_column, chunk=CHUNK_ELEMENTS, min_band=1):
    """Split the outputs into pieces (n0, n1, r0, r1) whose unfolded windows have at most `chunk`
    elements (rows_per_column = C*kh*kw): whole images in groups while one image fits, else bands
    of output rows of one image (at least `min_band` rows)."""
    per_image = rows_per_column * Ho * Wo
    if per_image <= chunk:
        g = max(1, chunk // per_image)
        return [(n0, min(N, n0 + g), 0, Ho) for n0 in range(0, N, g)]
    band = max(1, min_band, chunk // (rows_per_column * Wo))
    return [(n, n + 1, r0, min(Ho, r0 + band)) for n in range(N) for r0 in range(0, Ho, band)]


def im2col_batch(x, kh, kw, stride, n0, n1, r0, r1, Wo, out=None):
    """Unfold the windows of output rows r0..r1-1 of images n0..n1-1 into cols (C*kh*kw, g*R*Wo).

    Row (c, u, v) of cols, column (n, i, j) holds x[n, c, i*s + u, j*s + v]: the loop runs over the
    kh*kw taps, and each step copies one strided slice of the batch.
    """
    xp = array_module(x)
    C = x.shape[1]
    g, R = n1 - n0, r1 - r0
    if out is None:
        out = xp.empty((C * kh * kw, g * R * Wo), dtype=x.dtype)
    cols = out.reshape(C, kh, kw, g, R, Wo)
    for u in range(kh):
        top = r0 * stride + u
        for v in range(kw):
            window = x[n0:n1, :, top:top + stride * (R - 1) + 1:stride, v:v + stride * (Wo - 1) + 1:stride]
            cols[:, u, v] = window.transpose(1, 0, 2, 3)
    return out


def col2im_batch(dcols, dx, kh, kw, stride, n0, n1, r0, r1, Wo):
    """The adjoint of im2col_batch: add every column back onto the window it was read from, in dx
    (N, C, H, W). Overlapping windows (and overlapping chunks) add up, which is the sum in dL/dx."""
    C = dx.shape[1]
    g, R = n1 - n0, r1 - r0
    cols = dcols.reshape(C, kh, kw, g, R, Wo)
    for u in range(kh):
        top = r0 * stride + u
        for v in range(kw):
            dx[n0:n1, :, top:top + stride * (R - 1) + 1:stride, v:v + stride * (Wo - 1) + 1:stride] += \
                cols[:, u, v].transpose(1, 0, 2, 3)
    return dx


# ------------------------------------------------- stride 1: the padded rows read as one long row
#
# With stride 1 there is a cheaper way to unfold. Flatten each channel of an image to one row of
# length H*W. Output (i, j) reads x[c, i + u, j + v] = flat[c, (i + u) W + j + v] = flat[c, q + o_uv]
# with q = i W + j and the tap's offset o_uv = u W + v. So if the outputs are computed on the wider
# grid (Ho, W) instead of (Ho, Wo), i.e. at every q in 0 .. Ho*W - 1, tap (u, v) reads the
# *contiguous* piece flat[c, o_uv : o_uv + Ho*W]: unfolding is kh*kw plain copies (no strided
# gather), and folding back is kh*kw plain additions. The kw - 1 extra columns j >= Wo read pixels
# that wrap around into the next row; they are junk, never copied to the output, and their upstream
# gradient is set to zero in the backward pass. (The last tap would read kw - 1 elements past the
# end for the junk at the very end; those are filled with zeros.)
#
# Two ways to use it, chosen by which unfolded matrix is smaller:
#
#   "rows":    unfold the *input*, as above: cols (C*kh*kw, Ho*W); out = w @ cols. Best when
#              C <= K (the 3-channel image, the residual blocks).
#   "outputs": multiply first, unfold the *outputs*: Z = wt @ x_flat with wt (kh*kw*K, C), a
#              product for every tap and output channel at every input position, and then
#              out[k, q] = sum_uv Z[(u, v, k), q + o_uv], kh*kw shifted additions of K rows. Its
#              unfolded matrix has kh*kw*K rows instead of kh*kw*C: for conv6 (9x9, 32 -> 3) that is
#              243 instead of 2592, ten times less memory traffic. Its backward pass unfolds the
#              upstream gradient the same way, dZ[(u, v, k), p] = dout[k, p - o_uv], and then
#              dx = wt^T @ dZ and dwt = dZ @ x^T are again single products.

#
# ---------------------------------------------------- stride 1, few input channels: WIDE outputs a column
#
# conv1 (9x9 from the 3-channel image to 32) unfolds 243 numbers per output pixel and multiplies
# them by only K = 32 filters: the product out (32, P) = w (32, 243) @ cols (243, P) is thin, so
# BLAS streams the huge cols through memory for very little arithmetic (measured: 50 GFLOP/s, a
# third of the machine's sgemm). "wide" lets every column serve s = WIDE neighbouring outputs of a
# row instead of one. Output (i, s jb + t), t = 0 .. s-1, reads x[c, i + u, s jb + t + v]; with
# v' = t + v in 0 .. kw + s - 2 the s outputs share one window kw + s - 1 wide:
#
#     cols[(c, u, v'), (i, jb)]  =  x[c, i + u, s jb + v']              (kw + s - 1 columns per row)
#     T[(t, k), (c, u, v')]      =  w[k, c, u, v' - t]  (0 outside 0 <= v' - t < kw)
#     out[k, i, s jb + t]        =  (T @ cols)[(t, k), (i, jb)]
#
# T is the filters written s times, each shifted one column further: a block-Toeplitz matrix with a
# quarter of zeros for 9x9 and s = 4. The product does 4/3 of the arithmetic, but has s K = 128
# rows and reads an unfolded matrix three times smaller (324 numbers per 4 outputs instead of
# 4 x 243): for half of a 512x384 photo 16 ms against 30 ms (125 against 50 GFLOP/s). Backward:
# dT = dout_wide @ cols^T, and dw[k, c, u, v] = sum_t dT[(t, k), (c, u, t + v)] folds the s shifted
# copies back onto the filters; dcols = T^T @ dout_wide is folded back onto x like im2col's.

WIDE = 4                          # outputs per unfolded column
WIDE_BELOW_CHANNELS = 8           # "wide" for stride-1 layers with fewer input channels (the image)

METHODS = ("strided", "rows", "outputs", "wide")


def conv_batch_method(C, K, stride):
    """The fast path's choice: "wide" for stride 1 from fewer than WIDE_BELOW_CHANNELS channels (the
    image), "outputs" for stride 1 when the layer has fewer output than input channels, else
    "strided" im2col. (Measured: "rows" is no faster than "strided" with NumPy's strided copies; it
    is kept as the simplest form of the flat-row reading "outputs" builds on.)"""
    if stride == 1 and C < WIDE_BELOW_CHANNELS and K >= C:
        return "wide"
    return "outputs" if stride == 1 and K < C else "strided"


def wide_filters(w, s=WIDE):
    """T (s*K, C*kh*(kw+s-1)): filters (K, C, kh, kw) written s times, copy t shifted t columns right."""
    xp = array_module(w)
    K, C, kh, kw = w.shape
    T = xp.zeros((s, K, C, kh, kw + s - 1), dtype=w.dtype)
    for t in range(s):
        T[t, :, :, :, t:t + kw] = w
    return T.reshape(s * K, -1)


def _wide_available(W, v, s, Wb):
    """How many of the Wb column blocks start a window whose column v' = v lies inside the W columns."""
    return max(0, min(Wb, (W - v + s - 1) // s))


def _unfold_wide(x, kh, span, s, n0, n1, r0, R, Wb, out):
    """cols (C, kh, span, g, R, Wb) of method "wide": cols[c, u, v, n, i, jb] = x[n, c, r0 + i + u, s jb + v]
    (zero past the right edge)."""
    W = x.shape[3]
    cols = out.reshape(x.shape[1], kh, span, n1 - n0, R, Wb)
    for u in range(kh):
        for v in range(span):
            a = _wide_available(W, v, s, Wb)
            cols[:, u, v, :, :, :a] = x[n0:n1, :, r0 + u:r0 + u + R, v:v + s * (a - 1) + 1:s].transpose(1, 0, 2, 3)
            cols[:, u, v, :, :, a:] = 0
    return out


def _fold_wide(dcols, dx, kh, span, s, n0, n1, r0, R, Wb):
    """The adjoint of _unfold_wide: every unfolded number is added back onto the pixel it was read from."""
    W = dx.shape[3]
    cols = dcols.reshape(dx.shape[1], kh, span, n1 - n0, R, Wb)
    for u in range(kh):
        for v in range(span):
            a = _wide_available(W, v, s, Wb)
            dx[n0:n1, :, r0 + u:r0 + u + R, v:v + s * (a - 1) + 1:s] += cols[:, u, v, :, :, :a].transpose(1, 0, 2, 3)


def _unfold_rows(xf, kh, kw, Wp, n0, n1, r0, R, out):
    """cols (C, kh, kw, g, R*Wp) for output rows r0 .. r0+R-1 of images n0 .. n1-1 (method "rows"):
    tap (u, v) is the contiguous piece xf[n, c, (r0 + u) Wp + v :][:R*Wp] of every flattened channel."""
    C, L = xf.shape[1], xf.shape[2]
    g, Lb = n1 - n0, R * Wp
    cols = out.reshape(C, kh, kw, g, Lb)
    for u in range(kh):
        for v in range(kw):
            start = (r0 + u) * Wp + v
            avail = min(Lb, L - start)
            cols[:, u, v, :, :avail] = xf[n0:n1, :, start:start + avail].transpose(1, 0, 2)
            if avail < Lb:
                cols[:, u, v, :, avail:] = 0
    return out


def _fold_rows(dcols, dxf, kh, kw, Wp, n0, n1, r0, R):
    """The adjoint of _unfold_rows: every tap's piece is added back where it was read from."""
    C, L = dxf.shape[1], dxf.shape[2]
    g, Lb = n1 - n0, R * Wp
    cols = dcols.reshape(C, kh, kw, g, Lb)
    for u in range(kh):
        for v in range(kw):
            start = (r0 + u) * Wp + v
            avail = min(Lb, L - start)
            dxf[n0:n1, :, start:start + avail] += cols[:, u, v, :, :avail].transpose(1, 0, 2)


def _band(x, n0, n1, r0, rows):
    """Input rows r0 .. r0+rows-1 of images n0 .. n1-1 as one contiguous (C, g*rows*W) matrix (a view
    when that is already the memory layout: one whole image)."""
    xp = array_module(x)
    return xp.ascontiguousarray(x[n0:n1, :, r0:r0 + rows].transpose(1, 0, 2, 3)).reshape(x.shape[1], -1)


def _upstream(dout, n0, n1, r0, r1, Wp):
    """The chunk's dout (g, K, R, Wo) as (K, g, R*Wp), contiguous, zero in the junk columns."""
    xp = array_module(dout)
    K, Wo = dout.shape[1], dout.shape[3]
    d = xp.zeros((K, n1 - n0, r1 - r0, Wp), dtype=dout.dtype)
    d[..., :Wo] = dout[n0:n1, :, r0:r1].transpose(1, 0, 2, 3)
    return d.reshape(K, n1 - n0, -1)


def _contiguous(xp, a):
    return a if a.flags.c_contiguous else xp.ascontiguousarray(a)


def conv_batch_forward(x, w, b, stride=1, chunk=None, method=None):
    """Same contract as conv_batch_forward_naive: one matrix product per chunk of the batch.

    `method` ("strided", "rows", "outputs"; see above) is chosen by conv_batch_method unless given.
    The product gives the chunk's outputs channel-first across the images, (K, g, R, Wo) (or Wp wide
    with junk columns); they are copied into out (N, K, Ho, Wo) with the bias added in the same pass.
    chunk: unfolded elements per product (default_chunk(stride) when None).
    """
    xp = array_module(x)
    chunk = chunk or default_chunk(stride)
    N, C, H, W, K, kh, kw, Ho, Wo = _sizes(x.shape, w.shape, stride)
    method = method or conv_batch_method(C, K, stride)
    if method != "strided" and stride != 1:
        raise ValueError(f"method {method!r} needs stride 1")
    x = _contiguous(xp, x)
    out = xp.empty((N, K, Ho, Wo), dtype=x.dtype)
    bias = b.reshape(1, K, 1, 1)
    if method == "strided":
        wm = _contiguous(xp, w.reshape(K, C * kh * kw))
        for n0, n1, r0, r1 in conv_batch_chunks(N, Ho, Wo, C * kh * kw, chunk):
            cols = im2col_batch(x, kh, kw, stride, n0, n1, r0, r1, Wo)
            prod = xp.empty((K, cols.shape[1]), dtype=x.dtype)
            gemm(wm, cols, prod)
            xp.add(prod.reshape(K, n1 - n0, r1 - r0, Wo).transpose(1, 0, 2, 3), bias, out=out[n0:n1, :, r0:r1])
    elif method == "rows":
        wm = _contiguous(xp, w.reshape(K, C * kh * kw))
        xf = x.reshape(N, C, H * W)
        for n0, n1, r0, r1 in conv_batch_chunks(N, Ho, W, C * kh * kw, chunk):
            g, R = n1 - n0, r1 - r0
            cols = _unfold_rows(xf, kh, kw, W, n0, n1, r0, R, xp.empty((C * kh * kw, g * R * W), dtype=x.dtype))
            prod = xp.empty((K, g * R * W), dtype=x.dtype)
            gemm(wm, cols.reshape(C * kh * kw, -1), prod)
            xp.add(prod.reshape(K, g, R, W)[..., :Wo].transpose(1, 0, 2, 3), bias, out=out[n0:n1, :, r0:r1])
    elif method == "outputs":
        wt = xp.ascontiguousarray(w.transpose(2, 3, 0, 1)).reshape(kh * kw * K, C)
        for n0, n1, r0, r1 in conv_batch_chunks(N, Ho, W, kh * kw * K, chunk, min_band=4 * (kh - 1)):
            g, R = n1 - n0, r1 - r0
            rows_in, Lb = R + kh - 1, R * W
            Lin = rows_in * W
            Z = xp.empty((kh * kw * K, g * Lin), dtype=x.dtype)
            gemm(wt, _band(x, n0, n1, r0, rows_in), Z)
            Z5 = Z.reshape(kh, kw, K, g, Lin)
            acc = xp.zeros((K, g, Lb), dtype=x.dtype)
            for u in range(kh):
                for v in range(kw):
                    o = u * W + v
                    avail = min(Lb, Lin - o)
                    acc[:, :, :avail] += Z5[u, v, :, :, o:o + avail]
            xp.add(acc.reshape(K, g, R, W)[..., :Wo].transpose(1, 0, 2, 3), bias, out=out[n0:n1, :, r0:r1])
    elif method == "wide":
        s, span = WIDE, kw + WIDE - 1
        Wb = -(-Wo // s)                                     # column blocks of s outputs
        T = wide_filters(w, s)
        for n0, n1, r0, r1 in conv_batch_chunks(N, Ho, Wb, C * kh * span, chunk):
            g, R = n1 - n0, r1 - r0
            cols = _unfold_wide(x, kh, span, s, n0, n1, r0, R, Wb, xp.empty((C * kh * span, g * R * Wb), dtype=x.dtype))
            prod = xp.empty((s * K, g * R * Wb), dtype=x.dtype)
            gemm(T, cols, prod)
            prod = prod.reshape(s, K, g, R, Wb)
            for t in range(min(s, Wo)):                      # outputs t, t + s, t + 2s, ... of every row
                xp.add(prod[t, :, :, :, :len(range(t, Wo, s))].transpose(1, 0, 2, 3), bias,
                       out=out[n0:n1, :, r0:r1, t::s])
    else:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    return out, (x, w, stride, method)


def conv_batch_backward(dout, cache, need_dx=True, chunk=None):
    """dx, dw, db of conv_batch_forward, one product for dw and one for dx per chunk.

    dout (N, K, Ho, Wo). With need_dx=False (the network's first layer, whose input is the image)
    dx is None and its product and folding are skipped. The method is the forward pass's.
    chunk: unfolded elements per product (default_chunk(stride) when None).
    """
    x, w, stride, method = cache
    chunk = chunk or default_chunk(stride)
    xp = array_module(x)
    N, C, H, W, K, kh, kw, Ho, Wo = _sizes(x.shape, w.shape, stride)
    dx = xp.zeros_like(x) if need_dx else None
    if method == "strided":
        wm = _contiguous(xp, w.reshape(K, C * kh * kw))
        dwm = xp.zeros((K, C * kh * kw), dtype=x.dtype)
        for n0, n1, r0, r1 in conv_batch_chunks(N, Ho, Wo, C * kh * kw, chunk):
            # the chunk's upstream gradient, channel-first across the images: (K, g*R*Wo), contiguous
            d = xp.ascontiguousarray(dout[n0:n1, :, r0:r1].transpose(1, 0, 2, 3)).reshape(K, -1)
            cols = im2col_batch(x, kh, kw, stride, n0, n1, r0, r1, Wo)
            gemm(d, cols, dwm, accumulate=True, trans_b=True)          # dw += dout @ cols^T
            if need_dx:
                gemm(wm, d, cols, trans_a=True)                          # dcols = w^T @ dout, into cols
                col2im_batch(cols, dx, kh, kw, stride, n0, n1, r0, r1, Wo)
        dw = dwm.reshape(w.shape)
    elif method == "rows":
        wm = _contiguous(xp, w.reshape(K, C * kh * kw))
        dwm = xp.zeros((K, C * kh * kw), dtype=x.dtype)
        xf = x.reshape(N, C, H * W)
        for n0, n1, r0, r1 in conv_batch_chunks(N, Ho, W, C * kh * kw, chunk):
            g, R = n1 - n0, r1 - r0
            d = _upstream(dout, n0, n1, r0, r1, W).reshape(K, -1)
            cols = _unfold_rows(xf, kh, kw, W, n0, n1, r0, R, xp.empty((C * kh * kw, g * R * W), dtype=x.dtype))
            gemm(d, cols, dwm, accumulate=True, trans_b=True)          # dw += dout @ cols^T
            if need_dx:
                gemm(wm, d, cols, trans_a=True)                          # dcols = w^T @ dout, into cols
                _fold_rows(cols, dx.reshape(N, C, H * W), kh, kw, W, n0, n1, r0, R)
        dw = dwm.reshape(w.shape)
    elif method == "wide":
        s, span = WIDE, kw + WIDE - 1
        Wb = -(-Wo // s)
        T = wide_filters(w, s)
        dT = xp.zeros_like(T)
        for n0, n1, r0, r1 in conv_batch_chunks(N, Ho, Wb, C * kh * span, chunk):
            g, R = n1 - n0, r1 - r0
            d = xp.zeros((s, K, g, R, Wb), dtype=x.dtype)    # dout_wide, zero for the blocks' junk outputs
            for t in range(min(s, Wo)):
                d[t, :, :, :, :len(range(t, Wo, s))] = dout[n0:n1, :, r0:r1, t::s].transpose(1, 0, 2, 3)
            d = d.reshape(s * K, -1)
            cols = _unfold_wide(x, kh, span, s, n0, n1, r0, R, Wb, xp.empty((C * kh * span, g * R * Wb), dtype=x.dtype))
            gemm(d, cols, dT, accumulate=True, trans_b=True)           # dT += dout_wide @ cols^T
            if need_dx:
                gemm(T, d, cols, trans_a=True)                           # dcols = T^T @ dout_wide, into cols
                _fold_wide(cols, dx, kh, span, s, n0, n1, r0, R, Wb)
        dT = dT.reshape(s, K, C, kh, span)
        dw = sum(dT[t, :, :, :, t:t + kw] for t in range(s))          # the s shifted copies of each filter
    else:   # "outputs"
        wt = xp.ascontiguousarray(w.transpose(2, 3, 0, 1)).reshape(kh * kw * K, C)
        dwt = xp.zeros((C, kh * kw * K), dtype=x.dtype)
        for n0, n1, r0, r1 in conv_batch_chunks(N, Ho, W, kh * kw * K, chunk, min_band=4 * (kh - 1)):
            g, R = n1 - n0, r1 - r0
            rows_in, Lb = R + kh - 1, R * W
            Lin = rows_in * W
            d = _upstream(dout, n0, n1, r0, r1, W)                       # (K, g, Lb)
            dZ = xp.zeros((kh, kw, K, g, Lin), dtype=x.dtype)            # dZ[(u, v, k), p] = dout[k, p - o_uv]
            for u in range(kh):
                for v in range(kw):
                    o = u * W + v
                    avail = min(Lb, Lin - o)
                    dZ[u, v, :, :, o:o + avail] = d[:, :, :avail]
            dZ = dZ.reshape(kh * kw * K, g * Lin)
            gemm(_band(x, n0, n1, r0, rows_in), dZ, dwt, accumulate=True, trans_b=True)   # dwt^T += x dZ^T
            if need_dx:
                dband = xp.empty((C, g * Lin), dtype=x.dtype)
                gemm(wt, dZ, dband, trans_a=True)                                        # wt^T @ dZ
                dx[n0:n1, :, r0:r0 + rows_in] += dband.reshape(C, g, rows_in, W).transpose(1, 0, 2, 3)
        dw = xp.ascontiguousarray(dwt.reshape(C, kh, kw, K).transpose(3, 0, 1, 2))
    db = dout.sum(axis=(0, 2, 3))
    return dx, dw, db
