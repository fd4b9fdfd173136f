"""2x2 pooling with stride 2 (average and max), forward and backward, naive and vectorized, on (C, H, W)."""

from handnst.backend import array_module


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
