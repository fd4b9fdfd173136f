"""`handnst bench --transform`: the feed-forward network's speed, here and (if installed) in PyTorch.

Two measurements, the two costs of feed-forward style transfer:

    apply   the transformation network (width 32, 5 residual blocks by default) on one 512x384 photo:
            one forward pass without caches, what `handnst apply` runs
    step    one training step as `handnst train` runs it: a batch of 4 crops of 128x128 through the
            network, VGG19 to relu4_3 on the crops (content targets) and on the network's pictures,
            the perceptual loss and its gradient, VGG19's backward pass, the network's backward pass
            to every parameter, and Adam

Both networks get the same random weights (the speed does not depend on their values; the VGG19 is
the real one when a weights file is found). Where PyTorch is installed, the same network and loss
are built with torch.nn and autograd on the same weights, and the rounds interleave, handnst then
PyTorch, so both see the machine in the same state; the ratio reported is the median of the rounds'
ratios (handnst seconds / PyTorch seconds: below 1 means handnst is faster). Before timing, the two
are checked to agree (the pictures, the training loss, and the gradient of every parameter, which
PyTorch's autograd computes independently of handnst's hand-written passes), so that the times
compare the same computation. PyTorch runs on the CPU with as many threads as BLAS gets here; it is imported only
inside this module, only when asked for, and never by the rest of handnst.
"""

import statistics
import time

import numpy as np

from handnst.backend import get_xp, synchronize, to_host
from handnst.checkpoint import Adam

APPLY_SIZE = (512, 384)          # width x height
STEP_SIZE = 128
STEP_BATCH = 4
DEFAULT_ROUNDS = 5
STEP_PARTS = ("network forward", "VGG19 loss forward and backward", "network backward", "Adam")


def _median_ratio(ours, theirs):
    return statistics.median(a / b for a, b in zip(ours, theirs))


def _stats(samples):
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "samples": samples}


def _vgg(weights):
    """VGG19 with max pooling: the given file, else the one handnst finds, else random weights."""
    from handnst.networks import vgg
    from handnst.weights import find_weights
    weights = None if weights == "random" else find_weights(weights)
    if weights is None:
        return vgg.random_vgg19(0, pooling="max"), "random"
    return vgg.load_vgg19(weights, pooling="max"), weights


# ------------------------------------------------------------------------------------- PyTorch

def _torch_models(net, vgg, loss):
    """The transformation network and the loss in torch.nn, on the same weights (float32, CPU)."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(to_host(a), dtype=np.float32))

    class Conv(nn.Module):
        def __init__(self, name, stride):
            super().__init__()
            w = net.params[f"{name}/weight"]
            self.pad, self.stride = w.shape[2] // 2, stride
            self.weight = nn.Parameter(tensor(w))
            self.bias = nn.Parameter(tensor(net.params[f"{name}/bias"]))

        def forward(self, x):
            return F.conv2d(F.pad(x, (self.pad,) * 4, mode="reflect"), self.weight, self.bias, self.stride)

    class Norm(nn.Module):
        def __init__(self, name):
            super().__init__()
            self.norm = nn.InstanceNorm2d(net.params[f"{name}/scale"].shape[0], affine=True, eps=1e-5)
            with torch.no_grad():
                self.norm.weight.copy_(tensor(net.params[f"{name}/scale"]))
                self.norm.bias.copy_(tensor(net.params[f"{name}/shift"]))

        def forward(self, x):
            return self.norm(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.ModuleDict()
            self.n = nn.ModuleDict()
            names = ["conv1", "conv2", "conv3"] + [f"res{r}/conv{k}" for r in range(1, net.residual_blocks + 1)
                                                    for k in (1, 2)] + ["conv4", "conv5"]
            for name in names:
                self.c[name.replace("/", "_")] = Conv(name, 2 if name in ("conv2", "conv3") else 1)
                self.n[name.replace("/", "_")] = Norm(name.replace("conv", "norm"))
            self.c["conv6"] = Conv("conv6", 1)

        def cnr(self, name, x, relu=True):
            y = self.n[name](self.c[name](x))
            return F.relu(y) if relu else y

        def forward(self, x):
            h = self.cnr("conv3", self.cnr("conv2", self.cnr("conv1", x)))
            for r in range(1, net.residual_blocks + 1):
                h = h + self.cnr(f"res{r}_conv2", self.cnr(f"res{r}_conv1", h), relu=False)
            h = self.cnr("conv4", F.interpolate(h, scale_factor=2, mode="nearest"))
            h = self.cnr("conv5", F.interpolate(h, scale_factor=2, mode="nearest"))
            return self.c["conv6"](h)

    from handnst.networks.vgg import LAYER_ORDER
    deepest = max(LAYER_ORDER.index(n) for n in loss.layers)
    vgg_layers = []
    for name in LAYER_ORDER[:deepest + 1]:
        if name.startswith("conv"):
            w, b = vgg.weights(name)
            vgg_layers.append((name, tensor(w), tensor(b)))
        else:
            vgg_layers.append((name, None, None))

    def features(x, wanted):
        out = {}
        for name, w, b in vgg_layers:
            x = F.relu(F.conv2d(x, w, b, padding=1)) if w is not None else F.max_pool2d(x, 2)
            if name in wanted:
                out[name] = x
            if len(out) == len(wanted):
                break
        return out

    targets = {n: tensor(loss.gram_targets[n]) for n in loss.style_layers}

    def perceptual(x, y):
        B = x.shape[0]
        with torch.no_grad():
            content = features(x, loss.content_layers)
        feats = features(y, loss.layers)
        total = 0.0
        for n in loss.content_layers:
            total = total + loss.alpha * 0.5 * ((feats[n] - content[n]) ** 2).sum() / B
        for n in loss.style_layers:
            f = feats[n].flatten(2)                    # (B, N, M)
            N, M = f.shape[1], f.shape[2]
            G = f @ f.transpose(1, 2)
            E = ((G - targets[n]) ** 2).sum(dim=(1, 2)) / (4.0 * N * N * M * M)
            total = total + loss.beta * loss.style_layer_weights[n] * E.sum() / B
        return total

    tnet = Net()

    def by_name():
        """handnst's parameter names -> the torch tensors that hold the same numbers."""
        out = {}
        for key, conv in tnet.c.items():
            name = key.replace("_", "/")
            out[f"{name}/weight"], out[f"{name}/bias"] = conv.weight, conv.bias
            if key in tnet.n:
                norm = name.replace("conv", "norm")
                out[f"{norm}/scale"], out[f"{norm}/shift"] = tnet.n[key].norm.weight, tnet.n[key].norm.bias
        return out

    return tnet, perceptual, by_name()


# ------------------------------------------------------------------------------------- timings

def run(*, width=32, residual_blocks=5, rounds=DEFAULT_ROUNDS, weights=None, torch_compare=True, log=None,
        apply_size=APPLY_SIZE, step_size=STEP_SIZE, step_batch=STEP_BATCH):
    """Time `apply` and `step` (module docstring); returns a JSON-friendly dict. The sizes are
    parameters for the tests; the command uses the defaults."""
    from handnst.apply import stylize_array
    from handnst.networks.transform import TransformNet
    from handnst.train import PerceptualLoss
    say = log or (lambda line: None)
    rng = np.random.default_rng(0)
    net = TransformNet(width, residual_blocks, seed=0)
    vgg, source = _vgg(weights)
    W, H = apply_size
    photo = (rng.uniform(0, 255, (3, H, W)) - 120).astype(np.float32)
    crops = (rng.uniform(0, 255, (step_batch, 3, step_size, step_size)) - 120).astype(np.float32)
    style = (rng.uniform(0, 255, (3, 2 * step_size, 2 * step_size)) - 120).astype(np.float32)
    loss = PerceptualLoss(vgg, style, step_size)
    adam = Adam(net.params)
    xp = get_xp("numpy")

    def ours_apply():
        t = time.perf_counter()
        y = stylize_array(net, photo)
        synchronize(xp)
        return time.perf_counter() - t, y

    step_parts = {part: [] for part in STEP_PARTS}

    def ours_step():
        t = [time.perf_counter()]
        y = net.forward(crops)
        t.append(time.perf_counter())
        parts, dy = loss(crops, y)
        t.append(time.perf_counter())
        _, grads = net.backward(dy, need_dx=False)
        t.append(time.perf_counter())
        adam.step(net.params, grads)
        t.append(time.perf_counter())
        for part, t0, t1 in zip(STEP_PARTS, t, t[1:]):
            step_parts[part].append(t1 - t0)
        return t[-1] - t[0], parts["total"]

    torch = None
    if torch_compare:
        try:
            import torch
        except ImportError:
            say("PyTorch not installed: timing handnst alone (pip install torch for the comparison)")
    report = {"width": width, "residual_blocks": residual_blocks, "rounds": rounds, "vgg_weights": source,
              "apply_size": list(apply_size), "step_batch": step_batch, "step_size": step_size,
              "parameters": net.parameter_count, "pytorch": None}
    if torch is not None:
        import os
        threads = int(os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
        torch.set_num_threads(threads)
        tnet, tloss, tnamed = _torch_models(net, vgg, loss)
        tparams = list(tnet.parameters())
        topt = torch.optim.Adam(tparams, lr=1e-3)
        tphoto = torch.from_numpy(photo)[None]
        tcrops = torch.from_numpy(crops)
        report["pytorch"] = {"version": torch.__version__, "threads": threads}

        def torch_apply():
            t = time.perf_counter()
            with torch.no_grad():
                y = tnet(tphoto)
            return time.perf_counter() - t, y[0].numpy()

        def torch_step():
            t = time.perf_counter()
            topt.zero_grad(set_to_none=True)
            value = tloss(tcrops, tnet(tcrops))
            value.backward()
            topt.step()
            return time.perf_counter() - t, float(value.detach())

        # agreement, before anything is updated
        _, y_ours = ours_apply()
        _, y_torch = torch_apply()
        scale = float(np.abs(y_torch).max())
        parts, dy = loss(crops, net.forward(crops))
        _, grads = net.backward(dy, need_dx=False)
        value_torch = tloss(tcrops, tnet(tcrops))
        value_torch.backward()
        g_scale = max(float(p.grad.abs().max()) for p in tnamed.values())
        g_diff = max(float(np.abs(to_host(grads[k]) - p.grad.numpy()).max()) for k, p in tnamed.items())
        value_torch = float(value_torch.detach())
        report["agreement"] = {"apply_max_abs_diff_relative": float(np.abs(y_ours - y_torch).max()) / scale,
                               "loss_relative_diff": abs(parts["total"] - value_torch) / abs(value_torch),
                               "gradient_max_abs_diff_relative": g_diff / g_scale}
        say("handnst and PyTorch agree (relative): pictures to "
            f"{report['agreement']['apply_max_abs_diff_relative']:.1e}, loss to "
            f"{report['agreement']['loss_relative_diff']:.1e}, every parameter's gradient to "
            f"{report['agreement']['gradient_max_abs_diff_relative']:.1e}")
    times = {"apply": [], "step": [], "torch_apply": [], "torch_step": []}
    ours_apply(), ours_step()                           # warm-up: buffers, BLAS threads
    if torch is not None:
        torch_apply(), torch_step()
    for r in range(rounds):
        times["apply"].append(ours_apply()[0])
        if torch is not None:
            times["torch_apply"].append(torch_apply()[0])
        times["step"].append(ours_step()[0])
        if torch is not None:
            times["torch_step"].append(torch_step()[0])
        say(f"round {r + 1}/{rounds}: apply {times['apply'][-1]:.3f} s, step {times['step'][-1]:.2f} s"
            + (f"; PyTorch apply {times['torch_apply'][-1]:.3f} s, step {times['torch_step'][-1]:.2f} s"
               if torch is not None else ""))
    report["apply_seconds"] = _stats(times["apply"])
    report["step_seconds"] = _stats(times["step"])
    report["step_parts_seconds"] = {part: statistics.median(v[-rounds:]) for part, v in step_parts.items()}
    if torch is not None:
        report["pytorch"]["apply_seconds"] = _stats(times["torch_apply"])
        report["pytorch"]["step_seconds"] = _stats(times["torch_step"])
        report["apply_ratio_to_pytorch"] = _median_ratio(times["apply"], times["torch_apply"])
        report["step_ratio_to_pytorch"] = _median_ratio(times["step"], times["torch_step"])
    return report


def format_report(report):
    W, H = report["apply_size"]
    lines = [f"transformation network: width {report['width']}, {report['residual_blocks']} residual blocks, "
             f"{report['parameters']:,} parameters; VGG19 weights: {report['vgg_weights']}",
             f"  apply {W}x{H}:            handnst {report['apply_seconds']['median']:.3f} s (median of "
             f"{report['rounds']})"]
    B, S = report["step_batch"], report["step_size"]
    lines.append(f"  train step {B}x{S}x{S}:    handnst {report['step_seconds']['median']:.2f} s")
    parts = report.get("step_parts_seconds")
    if parts:
        lines.insert(3, "    handnst's step: " + ", ".join(f"{k} {v:.3f} s" for k, v in parts.items())
                     + " (medians)")
    t = report.get("pytorch")
    if t:
        lines[1] += (f", PyTorch {t['version']} {t['apply_seconds']['median']:.3f} s: "
                     f"ratio {report['apply_ratio_to_pytorch']:.2f}")
        lines[2] += (f", PyTorch {t['step_seconds']['median']:.2f} s: ratio {report['step_ratio_to_pytorch']:.2f}")
        lines.append("  (ratio = handnst seconds / PyTorch seconds, median of the paired rounds; < 1: handnst faster)")
    else:
        lines.append("  PyTorch not installed: no comparison")
    return "\n".join(lines)
