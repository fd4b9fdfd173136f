"""Convolution, the textbook way, on one image x of shape (C, H, W).

Every function comes twice: `*_naive` with explicit loops, to read next to the math, and a vectorized
version (im2col and one matrix product) to run. The tests compare the two with each other and with
finite differences.
"""

from handnst.backend import array_module


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
