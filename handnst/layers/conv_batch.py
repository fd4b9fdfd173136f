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
once) and keep the unfolded matrix in cache while the product reads it. Nothing is kept between
forward and backward but the input: the backward pass unfolds it again.
"""

from handnst.backend import array_module, gemm

CHUNK_ELEMENTS = 1 << 22       # 16 MB of float32 unfolded windows per product


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

def conv_batch_chunks(N, Ho, Wo, rows_per_column, chunk=CHUNK_ELEMENTS):
    """Split the outputs into pieces (n0, n1, r0, r1) whose unfolded windows have at most `chunk`
    elements (rows_per_column = C*kh*kw): whole images in groups while one image fits, else bands
    of output rows of one image (at least one row)."""
    per_image = rows_per_column * Ho * Wo
    if per_image <= chunk:
        g = max(1, chunk // per_image)
        return [(n0, min(N, n0 + g), 0, Ho) for n0 in range(0, N, g)]
    band = max(1, chunk // (rows_per_column * Wo))
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


def conv_batch_forward(x, w, b, stride=1, chunk=CHUNK_ELEMENTS):
    """Same contract as conv_batch_forward_naive: one matrix product per chunk of the batch.

    The product gives the chunk's outputs channel-first across the images, (K, g, R, Wo); they are
    copied into out (N, K, Ho, Wo) with the bias added in the same pass.
    """
    xp = array_module(x)
    N, C, H, W, K, kh, kw, Ho, Wo = _sizes(x.shape, w.shape, stride)
    wm = w.reshape(K, C * kh * kw)
    if not wm.flags.c_contiguous:
        wm = xp.ascontiguousarray(wm)
    out = xp.empty((N, K, Ho, Wo), dtype=x.dtype)
    bias = b.reshape(1, K, 1, 1)
    for n0, n1, r0, r1 in conv_batch_chunks(N, Ho, Wo, C * kh * kw, chunk):
        cols = im2col_batch(x, kh, kw, stride, n0, n1, r0, r1, Wo)
        prod = xp.empty((K, cols.shape[1]), dtype=x.dtype)
        gemm(wm, cols, prod)
        xp.add(prod.reshape(K, n1 - n0, r1 - r0, Wo).transpose(1, 0, 2, 3), bias, out=out[n0:n1, :, r0:r1])
    return out, (x, w, stride)


def conv_batch_backward(dout, cache, need_dx=True, chunk=CHUNK_ELEMENTS):
    """dx, dw, db of conv_batch_forward, one product for dw and one for dcols per chunk.

    dout (N, K, Ho, Wo). With need_dx=False (the network's first layer, whose input is the image)
    dx is None and its product and col2im are skipped.
    """
    x, w, stride = cache
    xp = array_module(x)
    N, C, H, W, K, kh, kw, Ho, Wo = _sizes(x.shape, w.shape, stride)
    wm = w.reshape(K, C * kh * kw)
    if not wm.flags.c_contiguous:
        wm = xp.ascontiguousarray(wm)
    dwm = xp.zeros((K, C * kh * kw), dtype=x.dtype)
    dx = xp.zeros_like(x) if need_dx else None
    for n0, n1, r0, r1 in conv_batch_chunks(N, Ho, Wo, C * kh * kw, chunk):
        # the chunk's upstream gradient, channel-first across the images: (K, g*R*Wo), contiguous
        d = xp.ascontiguousarray(dout[n0:n1, :, r0:r1].transpose(1, 0, 2, 3)).reshape(K, -1)
        cols = im2col_batch(x, kh, kw, stride, n0, n1, r0, r1, Wo)
        gemm(d, cols, dwm, accumulate=True, trans_b=True)          # dw += dout @ cols^T
        if need_dx:
            gemm(wm, d, cols, trans_a=True)                          # dcols = w^T @ dout, into cols
            col2im_batch(cols, dx, kh, kw, stride, n0, n1, r0, r1, Wo)
    db = dout.sum(axis=(0, 2, 3))
    return dx, dwm.reshape(w.shape), db
