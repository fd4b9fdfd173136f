"""ReLU, forward and backward, naive and vectorized, on arrays of any shape."""

from handnst.backend import array_module


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
