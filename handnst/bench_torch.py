"""`handnst bench --torch`: the same objective in PyTorch, timed in turns with handnst's in one process.

PyTorch is not a dependency of handnst and nothing else in the package imports it. When it is
installed, this module rebuilds the benchmark's objective (content conv4_2, style conv1_1 .. conv5_1,
average pooling, alpha 1, beta 1e3, the paper's normalisations) as a PyTorch autograd graph on the
very same filters and images, and times one value-and-gradient evaluation of each, alternately:
handnst, PyTorch, handnst, PyTorch, ... On a shared machine whose speed drifts, only such paired
measurements mean anything; the figure reported is the median over the rounds of the ratio
handnst seconds / PyTorch seconds (below 1: handnst is faster). Beside it, the same ratio for the
time handnst's turns spend inside BLAS products alone (backend's product clock): a floor that the
ratio cannot go below without fewer or faster products, however cheap everything else becomes.

The two gradients are compared too (relative difference of dL/dx), so a timing is never quoted for
an objective that differs from the one handnst computes.
"""

import statistics
import time

import numpy as np

from handnst.backend import start_product_clock, stop_product_clock, to_host
from handnst.networks.vgg import LAYER_ORDER

TORCH_MISSING = ("PyTorch is not installed, so there is no comparison: pip install torch "
                 "(CPU wheel) to add one")


def torch_available():
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def torch_objective(net, content, style, content_layers, style_layers, alpha=1.0, beta=1e3,
                    style_layer_weights=None):
    """A function f(x) -> (value, gradient as a NumPy array) computing StyleTransferLoss's objective
    with PyTorch autograd on net's filters. content, style: (3, H, W) NumPy arrays."""
    import torch
    import torch.nn.functional as F

    dtype = torch.float32 if net.dtype == np.float32 else torch.float64
    names = [n for n in LAYER_ORDER]
    wanted = set(content_layers) | set(style_layers)
    deepest = max(LAYER_ORDER.index(n) for n in wanted)
    params = {}
    for name in names[:deepest + 1]:
        if name.startswith("conv"):
            w, b = net.weights(name)
            params[name] = (torch.tensor(np.ascontiguousarray(to_host(w)), dtype=dtype),
                            torch.tensor(to_host(b), dtype=dtype))
    pool = F.avg_pool2d if net.pooling == "avg" else F.max_pool2d
    if style_layer_weights is None:
        style_layer_weights = {n: 1.0 / len(style_layers) for n in style_layers}

    def features(x):
        h = x[None]
        out = {}
        for name in names[:deepest + 1]:
            if name.startswith("conv"):
                w, b = params[name]
                h = F.relu(F.conv2d(h, w, b, padding=1), inplace=True)
            else:
                h = pool(h, 2)
            if name in wanted:
                out[name] = h[0]
        return out

    with torch.no_grad():
        targets = features(torch.tensor(np.asarray(content), dtype=dtype))
        content_targets = {n: targets[n].clone() for n in content_layers}
        styled = features(torch.tensor(np.asarray(style), dtype=dtype))
        gram_targets = {}
        for n in style_layers:
            Fm = styled[n].reshape(styled[n].shape[0], -1)
            gram_targets[n] = Fm @ Fm.T

    def evaluate(x_np):
        x = torch.tensor(np.asarray(x_np), dtype=dtype, requires_grad=True)
        feats = features(x)
        total = 0.0
        for n in content_layers:
            total = total + alpha * 0.5 * ((feats[n] - content_targets[n]) ** 2).sum()
        for n in style_layers:
            Fm = feats[n].reshape(feats[n].shape[0], -1)
            N, M = Fm.shape
            G = Fm @ Fm.T
            total = total + beta * style_layer_weights[n] * ((G - gram_targets[n]) ** 2).sum() / (4.0 * N * N * M * M)
        total.backward()
        return float(total.detach()), x.grad.numpy()

    return evaluate


def compare(loss, content, style, x, rounds=7, warmup=1, gemm_probe=None):
    """Time handnst's `loss(x)` and PyTorch's evaluation of the same objective in turns.

    loss: a StyleTransferLoss (its network, layers and weights are mirrored in PyTorch); content,
    style, x: the images it was built from and is evaluated at. gemm_probe: optional function
    returning the machine's GEMM GFLOP/s now, measured after each round. Returns a JSON-friendly
    dict; {"error": ...} when PyTorch is missing.
    """
    if not torch_available():
        return {"error": TORCH_MISSING}
    import torch
    net = loss.net
    f = torch_objective(net, to_host(content), to_host(style), loss.content_layers, loss.style_layers,
                        alpha=loss.alpha, beta=loss.beta, style_layer_weights=loss.style_layer_weights)
    x_host = to_host(x)
    value_h, grad_h = loss(x)
    value_t, grad_t = f(x_host)
    grad_h = to_host(grad_h).astype(np.float64)
    grad_difference = float(np.linalg.norm(grad_h - grad_t) / np.linalg.norm(grad_t))
    for _ in range(max(0, warmup - 1)):
        loss(x)
        f(x_host)
    ours, theirs, ratios, gemm, products = [], [], [], [], []
    for _ in range(rounds):
        start_product_clock()
        t0 = time.perf_counter()
        loss(x)
        t1 = time.perf_counter()
        products.append(stop_product_clock())     # None on the GPU, where products cannot be timed
        f(x_host)
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
        ratios.append((t1 - t0) / (t2 - t1))
        if gemm_probe is not None:
            gemm.append(gemm_probe())
    out = {
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "handnst_seconds": statistics.median(ours), "torch_seconds": statistics.median(theirs),
        "ratio": statistics.median(ratios), "ratio_samples": ratios,
        "value_difference": abs(value_h - value_t) / abs(value_t),
        "gradient_difference": grad_difference,
    }
    if gemm:
        out["gemm_gflops"] = statistics.median(gemm)
    if None not in products:
        # handnst's matrix products alone against PyTorch's whole evaluation, pair by pair: the
        # ratio handnst could reach with everything else (transforms, ReLU, pooling, losses) free.
        samples = [p / t for p, t in zip(products, theirs)]
        out.update(product_seconds=statistics.median(products), products_ratio=statistics.median(samples),
                   products_ratio_samples=samples)
    return out
