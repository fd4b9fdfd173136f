"""Memory: what a run will need at a given size, what the machine has, and a clear refusal (with a
size that fits) before a run the machine cannot hold."""

import math
import os

import numpy as np

from handnst.backend import canonical_backend, get_xp
from handnst.errors import RunError
from handnst.layers import padded_length
from handnst.networks.vgg import CONV_LAYERS, LAYER_ORDER, min_image_size
from handnst.options import _layers


# Memory: the fraction of the available memory a run may plan to use (the rest is the margin for
# what the estimate does not see: allocator slack, Pillow, the operating system).
MEMORY_FRACTION = 0.85
# The interpreter with NumPy, SciPy and Pillow loaded, before any array of ours (measured: ~120 MB).
HOST_BASELINE_BYTES = 150 * 2 ** 20
LBFGS_HISTORY = 10   # scipy's default maxcor: pairs (s_k, y_k) kept


# -------------------------------------------------------------------------------------------- memory

def _layer_shapes(H, W, deepest):
    """[(name, h, w, channels)] for every layer of VGG19 up to index `deepest` in LAYER_ORDER."""
    channels = {name: cout for name, _, cout in CONV_LAYERS}
    shapes, h, w, c = [], H, W, 3
    for name in LAYER_ORDER[:deepest + 1]:
        if name.startswith("conv"):
            c = channels[name]
        else:
            h, w = h // 2, w // 2
        shapes.append((name, h, w, c))
    return shapes


def memory_breakdown(size_hw, layers, backend="numpy", *, dtype="float32", optimizer="lbfgs", n_styles=1):
    """The memory a run needs, in bytes, by what holds it (a dict; "total" is the sum).

    size_hw: (H, W) of the largest image the network sees (the content, or a larger style image).
    layers:  every layer the loss reads (content and style); the forward pass runs to the deepest.

    maps:       the network keeps every map up to the deepest layer, padded channels-last:
                sum over layers of padded_length(h, w) * channels
    gradients:  the backward pass ping-pongs between two buffers per map shape
    loss:       content targets P^l, Gram targets A^l (N_l x N_l), the gradients dL/dF^l of every
                loss layer, and the temporaries of one layer (G - A, F^T (G - A))
    weights:    all 16 convolutions (20 million numbers), plus a transient host copy while loading
    images:     content, style(s), x, the best x, the gradient, the TV terms, im2col of conv1_1
    optimizer:  L-BFGS-B works in float64 on the host: 2 m n for the m = 10 pairs (s_k, y_k) plus
                about 12 n for x, g, bounds and work arrays (n = 3 H W); Adam keeps 2 moments
    baseline:   the interpreter with NumPy and SciPy (host only)

    On the GPU ("cupy"), everything but `optimizer` and `baseline` lives in device memory; the
    dict then also has "device" and "host" subtotals.
    """
    backend = canonical_backend(backend)
    H, W = (int(v) for v in size_hw)
    item = np.dtype(dtype).itemsize
    names = _layers("loss", layers)
    deepest = max(LAYER_ORDER.index(n) for n in names)
    shapes = _layer_shapes(H, W, deepest)
    by_name = {name: (padded_length(h, w), c) for name, h, w, c in shapes}

    map_shapes = [(padded_length(H, W), 3)] + list(by_name.values())
    maps = sum(r * c for r, c in map_shapes)
    gradients = 2 * sum(r * c for r, c in set(map_shapes))
    loss = 0
    temporaries = 0
    for n in names:
        rows, c = by_name[n]
        loss += rows * c                    # dL/dF^l handed to the backward pass
        loss += rows * c + c * c            # target P^l (content) or A^l (style); counted for both
        temporaries = max(temporaries, 2 * rows * c + 2 * c * c)
    loss += temporaries
    n_weights = sum(9 * cin * cout + cout for _, cin, cout in CONV_LAYERS)
    pixels = 3 * H * W
    images = pixels * (5 + n_styles + 6) + 2 * H * (W + 2) * 27
    parts = {
        "maps": maps * item,
        "gradients": gradients * item,
        "loss": loss * item,
        "weights": 2 * n_weights * 4,
        "images": images * item,
    }
    if optimizer == "lbfgs":
        host_opt = (2 * LBFGS_HISTORY + 12) * pixels * 8
    else:
        host_opt = 0
        parts["images"] += 4 * pixels * item   # moments / velocity and the projected step
    parts["optimizer"] = host_opt
    parts["baseline"] = HOST_BASELINE_BYTES
    total = sum(parts.values())
    if backend == "cupy":
        parts["device"] = total - host_opt - HOST_BASELINE_BYTES
        parts["host"] = host_opt + HOST_BASELINE_BYTES
    parts["total"] = total
    return parts


def estimate_memory(size_hw, layers, backend="numpy", **kwargs):
    """Bytes a run at image size (H, W) with these loss layers needs (see memory_breakdown)."""
    return memory_breakdown(size_hw, layers, backend, **kwargs)["total"]


def available_memory(backend="numpy"):
    """Bytes available for a run: MemAvailable on Linux (host), CuPy's free device memory (GPU).

    None when it cannot be known (then no run is refused).
    """
    if canonical_backend(backend) == "cupy":
        cupy = get_xp("cupy")
        try:
            free, _ = cupy.cuda.runtime.memGetInfo()
            return int(free) + int(cupy.get_default_memory_pool().free_bytes())
        except Exception:
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n):
    return f"{n / 2 ** 30:.1f} GB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MB"


def check_memory(size_hw, layers, backend="numpy", *, optimizer="lbfgs", n_styles=1, available=None,
                 what="this run", size_option="--size"):
    """Refuse (RunError) a run whose estimate exceeds the memory there is, naming a size that fits.

    size_hw is the largest (H, W) the network will see. `available` overrides the measured memory
    (bytes; a dict {"device", "host"} on the GPU), for tests.
    """
    backend = canonical_backend(backend)
    H, W = size_hw
    need = memory_breakdown(size_hw, layers, backend, optimizer=optimizer, n_styles=n_styles)
    if backend == "cupy":
        device_free = available["device"] if isinstance(available, dict) else available_memory("cupy")
        host_free = available["host"] if isinstance(available, dict) else available_memory("numpy")
        checks = [("GPU memory", need["device"], device_free, "device"), ("memory", need["host"], host_free, "host")]
    else:
        free = available if available is not None else available_memory("numpy")
        checks = [("memory", need["total"], free, "total")]
    for label, needed, free, key in checks:
        if free is None or needed <= MEMORY_FRACTION * free:
            continue
        fits = _largest_fitting_size((H, W), layers, backend, key, MEMORY_FRACTION * free, optimizer, n_styles)
        if fits is None:
            hint = "free some memory or use a machine with more"
        else:
            # size_option names the option to shrink; a function turns the fitting side into its hint
            # (--style-scale is a factor, not a side)
            hint = (size_option(fits) if callable(size_option) else f"use {size_option} {fits} or smaller") + \
                " (or free some memory)"
        raise RunError(f"{what} at {W}x{H} pixels needs about {_gb(needed)} of {label} (feature maps, "
                       f"gradients, weights and optimizer history) but only {_gb(free)} is available; {hint}")
    return need


def _largest_fitting_size(size_hw, layers, backend, key, budget, optimizer, n_styles):
    """Largest longer side (same aspect ratio) whose estimate fits `budget`, or None if none >= min size."""
    H, W = size_hw
    longer = max(H, W)
    smallest = min_image_size(layers)

    def shape_at(s):
        return (max(1, round(H * s / longer)), max(1, round(W * s / longer)))

    def fits(s):
        return memory_breakdown(shape_at(s), layers, backend, optimizer=optimizer, n_styles=n_styles)[key] <= budget

    lo, hi = smallest, longer
    if min(shape_at(lo)) < smallest:
        lo = math.ceil(smallest * longer / min(H, W))
    if lo > longer or not fits(lo):
        return None
    while lo < hi:               # the estimate grows with the size: bisect on the longer side
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _memory_guard(enabled, layers, opts, what, n_styles=1, size_option="--size"):
    """A memory(H, W) callback for _load_resized, or None when memory checks are off."""
    if not enabled:
        return None
    return lambda H, W: check_memory((H, W), layers, opts["device_backend"], optimizer=opts["optimizer"],
                                     n_styles=n_styles, what=what, size_option=size_option)
