"""Gradient checks of the feed-forward half: the transformation network's layers on a batch, the
stacked layout its residual blocks train in, and the whole network (see handnst.gradcheck for how a
check works; `handnst gradcheck` runs these with the others)."""

import numpy as np

from handnst import layers as L
from handnst.backend import get_xp, to_host
from handnst.gradcheck import LAYER_TOLERANCE, OBJECTIVE_TOLERANCE, _layer_check, check_gradient


def transform_layer_checks(backend="numpy", seed=0):
    """The layers of the transformation network on a batch (N, C, H, W), naive and fast: reflection
    padding, batched convolution (9x9 and 3x3, stride 1 and 2, each method of the fast path; input,
    weight and bias gradients), instance normalization (input, scale and shift), nearest-neighbour
    upsampling, upsampling + convolution by output phases (input, weight and bias), the residual sum.

    Every layer here except instance normalization is linear in the variable being checked, so the
    central difference has no truncation error at all and a large step (1e-3) keeps its rounding
    error small even for the small entries of the gradient; instance normalization uses 1e-4. Each
    family draws from its own generator, so that adding a check never changes another one's data.
    """
    from handnst.networks.transform import residual_backward, residual_forward
    xp = get_xp(backend)
    linear, nonlinear = 1e-3, 1e-4

    def draw(offset, *shapes):
        rng = np.random.default_rng(seed + offset)
        return [xp.asarray(rng.normal(size=shape)) for shape in shapes]

    checks = []
    for label, fwd, bwd in (("naive", L.reflection_pad_forward_naive, L.reflection_pad_backward_naive),
                            ("fast", L.reflection_pad_forward, L.reflection_pad_backward)):
        for pad in (1, 4):
            (xi,) = draw(20 + pad, (2, 3, 6, 5))
            checks.append((f"reflection pad {label} p{pad}", lambda f=fwd, g=bwd, p=pad, z=xi: _layer_check(
                lambda v: f(v, p), g, z, seed, h=linear), LAYER_TOLERANCE))

    for label, fwd, bwd in (("naive", L.conv_batch_forward_naive, L.conv_batch_backward_naive),
                            ("fast", L.conv_batch_forward, L.conv_batch_backward)):
        for i, (k, stride, C, K) in enumerate(((3, 1, 3, 4), (3, 2, 3, 4), (9, 1, 2, 3), (9, 1, 4, 2))):
            xi, w, b = draw(30 + i, (2, C, 11, 10), (K, C, k, k), (K,))
            method = f" {L.conv_batch_method(C, K, stride)}" if label == "fast" else ""
            tag = f"conv batch {label}{method} {k}x{k} s{stride} {C}->{K}"
            checks.append((f"{tag} dx", lambda f=fwd, g=bwd, s=stride, xi=xi, w=w, b=b: _layer_check(
                lambda z: f(z, w, b, s), lambda r, c: g(r, c)[0], xi, seed, h=linear), LAYER_TOLERANCE))
            checks.append((f"{tag} dw", lambda f=fwd, g=bwd, s=stride, xi=xi, w=w, b=b: _layer_check(
                lambda z: f(xi, z, b, s), lambda r, c: g(r, c)[1], w, seed, h=linear), LAYER_TOLERANCE))
            checks.append((f"{tag} db", lambda f=fwd, g=bwd, s=stride, xi=xi, w=w, b=b: _layer_check(
                lambda z: f(xi, w, z, s), lambda r, c: g(r, c)[2], b, seed, h=linear), LAYER_TOLERANCE))

    x, scale, shift = draw(40, (2, 3, 7, 6), (3,), (3,))
    for label, fwd, bwd in (("naive", L.instance_norm_forward_naive, L.instance_norm_backward_naive),
                            ("fast", L.instance_norm_forward, L.instance_norm_backward)):
        tag = f"instance norm {label}"
        checks.append((f"{tag} dx", lambda f=fwd, g=bwd: _layer_check(
            lambda z: f(z, scale, shift), lambda r, c: g(r, c)[0], x, seed, h=nonlinear), LAYER_TOLERANCE))
        checks.append((f"{tag} dscale", lambda f=fwd, g=bwd: _layer_check(
            lambda z: f(x, z, shift), lambda r, c: g(r, c)[1], scale, seed, h=linear), LAYER_TOLERANCE))
        checks.append((f"{tag} dshift", lambda f=fwd, g=bwd: _layer_check(
            lambda z: f(x, scale, z), lambda r, c: g(r, c)[2], shift, seed, h=linear), LAYER_TOLERANCE))

    (xu,) = draw(50, (2, 3, 4, 5))
    for label, fwd, bwd in (("naive", L.upsample2x_forward_naive, L.upsample2x_backward_naive),
                            ("fast", L.upsample2x_forward, L.upsample2x_backward)):
        checks.append((f"upsample 2x {label}", lambda f=fwd, g=bwd: _layer_check(f, g, xu, seed, h=linear),
                       LAYER_TOLERANCE))

    xc, wc, bc = draw(55, (2, 3, 4, 5), (4, 3, 3, 3), (4,))
    for label, fwd, bwd in (("naive", L.upsample_conv_forward_naive, L.upsample_conv_backward_naive),
                            ("fast", L.upsample_conv_forward, L.upsample_conv_backward)):
        for part, what in enumerate(("dx", "dw", "db")):
            def check(f=fwd, g=bwd, part=part):
                args = [xc, wc, bc]

                def forward(z):
                    return f(*[z if i == part else a for i, a in enumerate(args)])
                return _layer_check(forward, lambda r, c: g(r, c)[part], args[part], seed, h=linear)
            checks.append((f"upsample + conv 3x3 {label} {what}", check, LAYER_TOLERANCE))

    checks += _stacked_checks(xp, draw(58, (2, 3, 4, 6), (4, 3, 3, 3), (4,)), (x, scale, shift), seed)

    xs, branch = draw(60, (2, 3, 4, 5), (2, 3, 4, 5))
    checks.append(("residual sum (skip)", lambda: _layer_check(
        lambda z: residual_forward(z, branch), lambda r, c: residual_backward(r, c)[0], xs, seed, h=linear),
        LAYER_TOLERANCE))
    checks.append(("residual sum (branch)", lambda: _layer_check(
        lambda z: residual_forward(branch, z), lambda r, c: residual_backward(r, c)[1], xs, seed, h=linear),
        LAYER_TOLERANCE))
    return checks


def transform_net_checks(backend="numpy", seed=0):
    """The whole transformation network (width 4, 2 residual blocks, a 2 x 3 x 12 x 8 batch) in
    float64: f = sum(net(x) * r), its gradient with respect to the input and to all parameters at
    once (seen as one long vector), per coordinate and along random directions.

    A sample whose central difference would straddle a ReLU kink (some ReLU input changes sign
    between x - h e and x + h e) is replaced by another: across a kink a difference quotient
    measures nothing. The parameters whose gradient vanishes identically (the biases in front of an
    instance normalization, and the shifts of each residual block's second normalization, whose
    constant reaches only normalizations through linear paths) are checked on their own: their
    finite differences are rounding noise, so both numbers are compared with the largest gradient
    entry of the network, which they must be below by the tolerance.
    """
    from handnst.networks.transform import TransformNet
    xp = get_xp(backend)
    rng = np.random.default_rng(seed + 13)
    net = TransformNet(width=4, residual_blocks=2, seed=seed, backend=backend, dtype="float64")
    for name, value in net.params.items():     # scales and shifts away from their initial 1 and 0
        if name.endswith("/scale") or name.endswith("/shift"):
            net.params[name] = value + xp.asarray(rng.normal(scale=0.3, size=value.shape))
    x = xp.asarray(rng.normal(size=(2, 3, 12, 8)))
    r = xp.asarray(rng.normal(size=x.shape))
    names = list(net.params)
    vanishing = [n for n in names if (n.endswith("/bias") and n != "conv6/bias")
                 or (n.startswith("res") and n.endswith("/norm2/shift"))]
    free = [n for n in names if n not in vanishing]
    sizes = [int(net.params[n].size) for n in free]
    step = 1e-5

    def f_input(z):
        return float((net.forward(z, cache=False) * r).sum())

    def signs(params, z):
        """The signs of every ReLU input of the network at parameters `params` and input z."""
        saved = dict(net.params)
        net.params.update(params)
        try:
            net.forward(z)
            tape, net._tape = net._tape, None
        finally:
            net.params.update(saved)
        return xp.concatenate([cache[1].reshape(-1) > 0 for kind, _, cache in tape
                               if kind == "norm" and cache[1] is not None])

    def unflatten(theta):
        out, start = {}, 0
        for name, size in zip(free, sizes):
            out[name] = theta[start:start + size].reshape(net.params[name].shape)
            start += size
        return out

    def f_params(theta):
        saved = dict(net.params)
        net.params.update(unflatten(theta))
        try:
            return float((net.forward(x, cache=False) * r).sum())
        finally:
            net.params.update(saved)

    def gradients():
        net.forward(x)
        return net.backward(r)

    def check_input():
        dx, _ = gradients()
        return check_gradient(f_input, x, dx, entries=20, directions=4, h=step, seed=seed,
                              pattern=lambda z: signs({}, z))

    def check_params():
        _, grads = gradients()
        theta = xp.concatenate([net.params[n].reshape(-1) for n in free])
        g = xp.concatenate([grads[n].reshape(-1) for n in free])
        return check_gradient(f_params, theta, g, entries=40, directions=4, h=step, seed=seed,
                              pattern=lambda t: signs(unflatten(t), x))

    def check_vanishing():
        _, grads = gradients()
        largest = max(float(abs(to_host(g)).max()) for g in grads.values())
        worst = 0.0
        for name in vanishing:
            value = net.params[name]
            for i in range(min(2, value.size)):
                e = xp.zeros(value.shape, dtype=value.dtype)
                e.reshape(-1)[i] = 1.0
                fd = []
                for sign in (1.0, -1.0):
                    net.params[name] = value + sign * step * e
                    fd.append(float((net.forward(x, cache=False) * r).sum()))
                net.params[name] = value
                numeric = (fd[0] - fd[1]) / (2 * step)
                analytic = float(to_host(grads[name]).reshape(-1)[i])
                worst = max(worst, abs(numeric) / largest, abs(analytic) / largest)
        return worst

    return [("transformation network dx (w=4, R=2)", check_input, OBJECTIVE_TOLERANCE),
            ("transformation network d params (w=4, R=2)", check_params, OBJECTIVE_TOLERANCE),
            ("transformation network vanishing gradients", check_vanishing, OBJECTIVE_TOLERANCE)]


def _stacked_checks(xp, conv_data, norm_data, seed):
    """The stacked layout the network trains in (handnst.layers.stacked): upsampling + 3x3 convolution
    by phases, reflection padding + Winograd 3x3 convolution (input and weight gradients) and instance
    normalization + ReLU, each through its own backward pass; a batch goes in and out as (N, C, H, W)."""
    (xk, wk, bk), (xn, scale, shift) = conv_data, norm_data
    N, _, H, W = xk.shape
    K = wk.shape[0]
    Hs, Ws = L.stacked_size(N, H, W)

    def conv_forward(z, w):
        X, U = L.fill_rings(L.to_stacked(z), N, H, W), L.winograd_taps(L.conv_taps(w))
        Y = L.conv3x3_winograd_forward(X, Hs, Ws, U, bk, xp.empty((X.shape[0], K)), relu=False)
        return L.from_stacked(L.zero_rings(Y, N, H, W), N, H, W), (X, U)

    def conv_dx(r, cache):
        X, U = cache
        dX = L.conv3x3_winograd_backward(L.to_stacked(r), Hs, Ws, U, xp.empty_like(X))
        return L.from_stacked(L.fill_rings_backward(dX, N, H, W), N, H, W)

    def conv_dw(weight_gradient):
        def dw(r, cache):
            taps = weight_gradient(cache[0], L.to_stacked(r), Hs, Ws)
            return taps.reshape(3, 3, *taps.shape[1:]).transpose(3, 2, 0, 1)
        return dw

    Nn, _, Hn, Wn = xn.shape

    def norm_forward(z):
        out, cache = L.instance_norm_stacked_forward(L.to_stacked(z), Nn, Hn, Wn, scale, shift,
                                                     L.to_stacked(0 * z), relu=True)
        return L.from_stacked(out, Nn, Hn, Wn), cache

    def norm_dx(r, cache):
        return L.from_stacked(L.instance_norm_stacked_backward(L.to_stacked(r), cache, L.to_stacked(0 * r))[0],
                              Nn, Hn, Wn)

    def up_forward(z, w):
        return L.upsample_conv_stacked_forward(z, w, bk)

    def up_part(part):
        return lambda r, cache: L.upsample_conv_stacked_backward(r, cache)[part]

    linear, nonlinear = 1e-3, 1e-4
    return [("upsample + conv 3x3 stacked dx", lambda: _layer_check(lambda z: up_forward(z, wk), up_part(0), xk, seed,
                                                                     h=linear), LAYER_TOLERANCE),
            ("upsample + conv 3x3 stacked dw", lambda: _layer_check(lambda z: up_forward(xk, z), up_part(1), wk, seed,
                                                                     h=linear), LAYER_TOLERANCE),
            ("conv 3x3 stacked dx", lambda: _layer_check(lambda z: conv_forward(z, wk), conv_dx, xk, seed, h=linear),
             LAYER_TOLERANCE),
            ("conv 3x3 stacked dw (nine products)", lambda: _layer_check(
                lambda z: conv_forward(xk, z), conv_dw(L.conv3x3_weight_gradient), wk, seed, h=linear), LAYER_TOLERANCE),
            ("conv 3x3 stacked dw (Winograd)", lambda: _layer_check(
                lambda z: conv_forward(xk, z), conv_dw(L.conv3x3_winograd_weight_gradient), wk, seed, h=linear),
             LAYER_TOLERANCE),
            ("instance norm + ReLU stacked dx", lambda: _layer_check(norm_forward, norm_dx, xn, seed, h=nonlinear),
             LAYER_TOLERANCE)]
