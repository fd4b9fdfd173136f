"""`handnst bench`: how fast is one evaluation of the objective, compared with what this machine can do?

Style transfer spends nearly all its time evaluating L(x) and dL/dx: a forward pass through VGG19 up to
the deepest layer the loss needs, and the backward pass down to the pixels. Both are almost entirely
3x3 convolutions, which this package computes as matrix products (GEMM). So the honest yardstick is
not a wall-clock time, which depends on the machine, but a *ratio*:

    achieved GFLOP/s  =  FLOPs of one evaluation / seconds per evaluation
    ratio             =  achieved GFLOP/s / the same backend's GEMM GFLOP/s, measured now

A ratio near 1 means the evaluation runs at the speed of the BLAS it is built on; nothing written on
top of that BLAS can do much better without doing fewer FLOPs. handnst does do fewer: from conv3_1 on
the convolutions run with Winograd F(4x4, 3x3) on maps big enough for 48 4x4 tiles (36 products for
144, layers/winograd4x4.py) and F(2x2, 3x3) on the others (16 for 36, layers/winograd2d.py), conv1_2
.. conv2_2 with Winograd F(2, 3) along the rows (12 for 18, layers/winograd.py); VGG19.algorithm
says which runs where. The FLOPs counted stay those of the direct convolution, the work the result is
worth, so the ratio measures time against the direct GEMM ceiling and can pass 1. `--conv direct`
times the plain GEMM path instead.

What is counted (`objective_flops`), one multiply-add = 2 FLOPs:

    forward   every 3x3 convolution from conv1_1 to the deepest layer the loss uses:
                  2 * 9 * C_in * C_out * h * w          (h, w: the layer's map size)
              each style layer's Gram matrix G = F F^T:  2 * N^2 * M   (N channels, M = h * w)
    backward  each of those convolutions again, for dL/d(input) only (no weight gradients):
                  2 * 9 * C_in * C_out * h * w
              each style layer's F^T (G - A):             2 * N^2 * M

Not counted: bias, ReLU, pooling, the content loss and the elementwise parts of the losses (all
O(N * M), together well under 1% of the total), and the extra columns the padded layout of layers/padded.py
computes and throws away (a factor (W + 2) / W on each convolution). So the achieved GFLOP/s is the
rate of *useful* work.

How it is measured (`bench_size`): per size, the objective the stylize command uses by default
(content conv4_2, style conv1_1 ... conv5_1, average pooling) is built on random content, style and
input images of that size; after `warmup` evaluations, `repeat` rounds of: one timed value-and-gradient
evaluation `loss(x)`, one timed forward-only evaluation `loss.value(x)`, and a short measurement of the
square GEMM rate through `handnst.backend.gemm` (the call the convolutions make). The backward time is
the difference of the first two ("forward" thus includes the loss values, "backward" the loss
gradients). Each round's ratio compares its evaluation with the GEMM rate measured right after it, so
that both see the machine in the same state (a shared machine's speed drifts by tens of percent within
a minute); the ratio reported is the median of the rounds' ratios. The values of the weights do not
change the speed, so random weights are used when no weights file is found (the report says which).

Where the time goes: during the timed value-and-gradient evaluations the network books every layer's
forward and backward time (VGG19.layer_times); the report gives their medians per layer and "the
rest" (the losses, their gradients, the conversions at both ends), and on NumPy the seconds inside
BLAS products (backend's product clock), the rest being the work around them. `--torch` times the
same objective in PyTorch, in turns with handnst, when PyTorch is installed (handnst/bench_torch.py).

Memory: each size runs in a fresh Python process, so the peak resident set size (ru_maxrss, which
only ever grows) belongs to that size alone. On the GPU the figure is CuPy's memory pool: the pool
keeps every block it ever allocated, so its total at the end is its high-water mark.
"""

import functools
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from handnst.backend import (KEEP_BELOW_BYTES, OWN_MAPPING_FROM_BYTES, canonical_backend, gemm, get_xp, keep_freed_memory,
                             resolve_dtype, start_product_clock, stop_product_clock, synchronize)
from handnst.errors import HandnstError, InputError, RunError
from handnst.losses import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS
from handnst.machine import machine_info
from handnst.networks.vgg import CONV_LAYERS, LAYER_ORDER, canonical_layer, scale_of

DEFAULT_SIZES = ((128, 96), (256, 192), (512, 384))
DEFAULT_REPEAT = 7
CONV_CHOICES = ("auto", "direct")
DEFAULT_WARMUP = 1


# ------------------------------------------------------------------------------------- sizes

def parse_size(text):
    """'256x192' -> (256, 192): width x height in pixels. Anything else is a clear InputError."""
    parts = str(text).lower().replace(" ", "").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise InputError(f"bad size {text!r}: write it as WIDTHxHEIGHT, e.g. 256x192") from None
    if width < 1 or height < 1:
        raise InputError(f"bad size {text!r}: width and height must be positive")
    return width, height


def _size_name(width, height):
    return f"{width}x{height}"


# ------------------------------------------------------------------------------------- FLOPs

def objective_flops(width, height, content_layers=DEFAULT_CONTENT_LAYERS, style_layers=DEFAULT_STYLE_LAYERS):
    """FLOPs of one evaluation of L(x) and dL/dx on a width x height image (see the module docstring).

    Returns a dict of FLOP counts (Python ints):
        conv_forward, gram_forward, forward (= their sum),
        conv_backward, gram_backward, backward (= their sum), total (= forward + backward),
    and per_layer: name -> FLOPs of that convolution's forward pass (its backward costs the same).
    """
    layers = [canonical_layer(n) for n in tuple(content_layers) + tuple(style_layers)]
    if not layers:
        raise InputError("the objective needs at least one layer")
    deepest = max(LAYER_ORDER.index(n) for n in layers)
    channels = {name: (cin, cout) for name, cin, cout in CONV_LAYERS}

    def map_size(name):
        # Each 2x2 pooling floors the size: floor(floor(H / 2) / 2) = floor(H / 4), and so on.
        s = scale_of(name)
        return height // s, width // s

    per_layer = {}
    for name in LAYER_ORDER[:deepest + 1]:
        if name in channels:
            cin, cout = channels[name]
            h, w = map_size(name)
            per_layer[name] = 2 * 9 * cin * cout * h * w
    gram = 0
    for name in dict.fromkeys(canonical_layer(n) for n in style_layers):
        h, w = map_size(name)
        n_filters = channels[name][1]
        gram += 2 * n_filters * n_filters * h * w
    conv = sum(per_layer.values())
    return {
        "conv_forward": conv, "gram_forward": gram, "forward": conv + gram,
        "conv_backward": conv, "gram_backward": gram, "backward": conv + gram,
        "total": 2 * (conv + gram),
        "per_layer": per_layer,
    }


# -------------------------------------------------------------------------------------- GEMM

def gemm_name(dtype):
    """'sgemm' for float32, 'dgemm' for float64 (the BLAS routine names)."""
    return "sgemm" if resolve_dtype(dtype) == np.float32 else "dgemm"


def reference_gemm_shape(backend):
    """(m, k, n) of the square GEMM that serves as the machine's peak: big enough to reach it."""
    n = 8192 if canonical_backend(backend) == "cupy" else 2048
    return n, n, n


def conv_like_gemm_shape(width, height):
    """(m, k, n) of one tap product of conv3_x at this image size, as layers/padded.py computes it.

    conv3_x sees the image 4 times smaller with 256 channels in and out; the padded layout multiplies
    h rows of (w + 2) positions by the (256, 256) tap. Every block of VGG19 costs about the same, so
    this middle one is representative.
    """
    h, w = height // 4, width // 4
    return max(h, 1) * (w + 2), 256, 256


def gemm_operands(m, k, n, backend="numpy", dtype="float32"):
    """Random a (m, k), b (k, n) and an output (m, n) on the backend, for measure_gemm."""
    xp = get_xp(backend)
    dtype = resolve_dtype(dtype)
    rng = np.random.default_rng(0)
    a = xp.asarray(rng.standard_normal((m, k), dtype=np.float32).astype(dtype))
    b = xp.asarray(rng.standard_normal((k, n), dtype=np.float32).astype(dtype))
    return a, b, xp.empty((m, n), dtype=dtype)


def measure_gemm(m, k, n, backend="numpy", dtype="float32", repeat=5, min_seconds=0.2, operands=None):
    """GFLOP/s of out = a @ b, a (m, k), b (k, n), through handnst.backend.gemm.

    Uses the very call the convolutions use, on the same backend, after one untimed warm-up call.
    The median of at least `repeat` timed calls, and of more for small shapes, until `min_seconds`
    have gone by (one call of a small product is too short to time alone). `operands`: the (a, b, out)
    of gemm_operands, to reuse between measurements.
    """
    xp = get_xp(backend)
    a, b, out = operands or gemm_operands(m, k, n, backend, dtype)
    gemm(a, b, out)
    synchronize(xp)
    seconds = []
    while len(seconds) < max(1, int(repeat)) or sum(seconds) < min_seconds:
        start = time.perf_counter()
        gemm(a, b, out)
        synchronize(xp)
        seconds.append(time.perf_counter() - start)
    return 2.0 * m * k * n / statistics.median(seconds) / 1e9


# ------------------------------------------------------------------------------ one size, here

def _stats(samples):
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "samples": list(samples)}


def _random_image(rng, net, width, height):
    """A random image of uniform RGB noise, in the network's input space, on its backend (3, H, W)."""
    conv = net.convention
    rgb = rng.uniform(0.0, 1.0, (3, height, width))
    if str(conv.get("channel_order", "RGB")).upper() == "BGR":
        rgb = rgb[::-1]
    mean = np.asarray(conv["mean"], dtype=np.float64).reshape(3, 1, 1)
    std = np.ones((3, 1, 1)) if conv.get("std") is None else np.asarray(conv["std"], dtype=np.float64).reshape(3, 1, 1)
    x = (rgb * float(conv["scale"]) - mean) / std
    return net.xp.asarray(x.astype(net.dtype))


def _build_net(weights, backend, dtype, conv="auto"):
    from handnst.networks import vgg
    if weights == "random":
        return vgg.random_vgg19(0, pooling="avg", backend=backend, dtype=dtype, conv=conv)
    return vgg.load_vgg19(weights, pooling="avg", backend=backend, dtype=dtype, conv=conv)


def _memory_now(xp):
    """Peak memory so far: ru_maxrss of this process (bytes), and on the GPU CuPy's pool total."""
    out = {"peak_rss_bytes": None}
    try:
        import resource
        # ru_maxrss is in kilobytes on Linux, in bytes on macOS.
        scale = 1 if sys.platform == "darwin" else 1024
        out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    except (ImportError, OSError):
        pass
    if xp is not np:
        pool = xp.get_default_memory_pool()
        out["gpu_pool_bytes"] = int(pool.total_bytes())
        out["gpu_pool_used_bytes"] = int(pool.used_bytes())
    return out


def bench_size(width, height, *, backend="numpy", dtype="float32", weights="random",
               repeat=DEFAULT_REPEAT, warmup=DEFAULT_WARMUP, seed=0, conv="auto", torch=False):
    """Time the default objective at one size in this process; returns a JSON-friendly dict.

    weights: "random" or the path of a weights file. conv: "auto" (Winograd where it pays) or
    "direct". The result has the FLOP count, the seconds per evaluation (total, forward, backward:
    median, min, max and every sample), the achieved GFLOP/s, the GEMM rates and ratios, seconds per
    megapixel, the memory peaks of this process (see the module docstring) and `layers`: the median
    seconds of every layer's forward and backward pass, with `loss_seconds`, the rest of an evaluation
    (the losses, their gradients and the conversions at both ends); on NumPy `product_seconds`, the time
    inside BLAS products, and `product_fraction`, its median share. torch=True adds `torch`: the same
    objective in PyTorch timed in turns with handnst's (handnst.bench_torch; an "error" when PyTorch is
    missing).
    """
    from handnst.losses import StyleTransferLoss
    repeat, warmup = int(repeat), int(warmup)
    if repeat < 1 or warmup < 0:
        raise InputError("--repeat must be at least 1 and --warmup at least 0")
    need = max(scale_of(n) for n in DEFAULT_CONTENT_LAYERS + DEFAULT_STYLE_LAYERS)
    if min(width, height) < need:
        raise InputError(f"size {_size_name(width, height)} is too small: the objective reaches conv5_1, "
                         f"which needs at least {need}x{need} pixels")
    memory_start = _memory_now(np)
    start = time.perf_counter()
    if conv not in CONV_CHOICES:
        raise InputError(f"unknown --conv {conv!r}: use " + " or ".join(CONV_CHOICES))
    net = _build_net(weights, backend, dtype, conv)
    xp = net.xp
    if xp is not np:
        xp.get_default_memory_pool().free_all_blocks()
    rng = np.random.default_rng(seed)
    content, style, x = (_random_image(rng, net, width, height) for _ in range(3))
    loss = StyleTransferLoss(net, content, style)     # the stylize defaults: conv4_2, conv1_1..conv5_1
    if not torch:
        del content, style
    setup_seconds = time.perf_counter() - start

    for _ in range(warmup):
        loss(x)
    synchronize(xp)
    # The GEMM yardstick is measured in this same process: the square one after every round (the
    # ratio pairs each evaluation with it), the conv-shaped one before and after all rounds.
    flops = objective_flops(width, height)
    gemm_shapes = {"square": reference_gemm_shape(backend), "conv_like": conv_like_gemm_shape(width, height)}
    square_operands = gemm_operands(*gemm_shapes["square"], backend, dtype)
    conv_before = measure_gemm(*gemm_shapes["conv_like"], backend, dtype)
    total, forward, square_rates = [], [], []
    times, rest, products = {}, [], []
    for _ in range(repeat):
        net.layer_times = {}       # every layer's time in this evaluation (a few clock reads per layer)
        start_product_clock()
        t0 = time.perf_counter()
        value, grad = loss(x)
        synchronize(xp)
        t1 = time.perf_counter()
        products.append(stop_product_clock())      # None on the GPU, where products cannot be timed
        rest.append(t1 - t0 - sum(v for seconds in net.layer_times.values() for v in seconds))
        for key, seconds in net.layer_times.items():
            times.setdefault(key, []).extend(seconds)
        net.layer_times = None
        loss.value(x)
        synchronize(xp)
        t2 = time.perf_counter()
        total.append(t1 - t0)
        forward.append(t2 - t1)
        del grad
        square_rates.append(measure_gemm(*gemm_shapes["square"], backend, dtype, repeat=3, min_seconds=0.1,
                                         operands=square_operands))
    layers = _layer_medians(times)
    backward = [max(t - f, 0.0) for t, f in zip(total, forward)]
    compared = None
    if torch:
        from handnst import bench_torch
        # PyTorch at its fastest: its maps of tens of MB come and go with every evaluation, and with
        # every freed block kept they fault in only once (stylize's own setting, blocks from 16 MiB
        # up in mappings of their own, would slow it; ours are made by now and do not move).
        keep_freed_memory(KEEP_BELOW_BYTES)
        probe = functools.partial(measure_gemm, *gemm_shapes["square"], backend, dtype, repeat=3, min_seconds=0.1,
                                  operands=square_operands)
        compared = bench_torch.compare(loss, content, style, x, rounds=repeat, gemm_probe=probe)
    del square_operands
    conv_after = measure_gemm(*gemm_shapes["conv_like"], backend, dtype)
    gemm_rates = {
        "square": {"shape": list(gemm_shapes["square"]), "gflops": statistics.median(square_rates),
                   "samples": square_rates},
        "conv_like": {"shape": list(gemm_shapes["conv_like"]), "gflops_before": conv_before,
                      "gflops_after": conv_after, "gflops": 0.5 * (conv_before + conv_after)},
    }
    ratios = [flops["total"] / t / 1e9 / rate for t, rate in zip(total, square_rates)]

    median = statistics.median(total)
    gflops = flops["total"] / median / 1e9
    megapixels = width * height / 1e6
    memory = _memory_now(xp)
    memory["baseline_rss_bytes"] = memory_start["peak_rss_bytes"]
    return {
        "size": _size_name(width, height), "width": width, "height": height, "megapixels": megapixels,
        "backend": net.backend, "dtype": net.dtype.name, "weights": net.source, "conv": conv,
        "winograd_layers": [n for n in LAYER_ORDER if n.startswith("conv") and net.uses_winograd(n)
                            and LAYER_ORDER.index(n) <= LAYER_ORDER.index("conv5_1")],
        "algorithms": {n: net.algorithm(n, height // scale_of(n), width // scale_of(n)) for n in flops["per_layer"]},
        "repeat": repeat, "warmup": warmup, "loss_value": float(value),
        "flops": flops,
        "seconds": _stats(total), "forward_seconds": _stats(forward), "backward_seconds": _stats(backward),
        "gflops": gflops,
        "forward_gflops": flops["forward"] / statistics.median(forward) / 1e9,
        "gemm": gemm_rates,
        "gemm_gflops": gemm_rates["square"]["gflops"],
        "ratio_to_gemm": statistics.median(ratios),
        "ratio_samples": ratios,
        "conv_gemm_gflops": gemm_rates["conv_like"]["gflops"],
        "ratio_to_conv_gemm": gflops / gemm_rates["conv_like"]["gflops"],
        "seconds_per_megapixel": median / megapixels,
        "setup_seconds": setup_seconds,
        "memory": memory,
        "layers": layers,
        "loss_seconds": statistics.median(rest),
        **({"product_seconds": _stats(products),
            "product_fraction": statistics.median(p / t for p, t in zip(products, total))}
           if None not in products else {}),
        **({"torch": compared} if torch else {}),
    }


def _layer_medians(times):
    """{name: {"forward": s, "backward": s}} in network order, from VGG19.layer_times."""
    out = {}
    for name in LAYER_ORDER:
        for direction in ("forward", "backward"):
            if (direction, name) in times:
                out.setdefault(name, {})[direction] = statistics.median(times[(direction, name)])
    return out


# ----------------------------------------------------------------------- one size, a fresh process

_WORKER_CODE = "import sys; from handnst.bench import _worker; sys.exit(_worker(sys.argv[1]))"


def _worker(spec_json):
    """Entry point of the per-size subprocess: run bench_size, print one JSON line on stdout."""
    spec = json.loads(spec_json)
    keep_freed_memory(OWN_MAPPING_FROM_BYTES)    # as the command line does for this objective
    try:
        result = bench_size(**spec)
    except HandnstError as exc:
        print(json.dumps({"error": str(exc), "exit_code": exc.exit_code}))
        return 0
    except MemoryError:
        print(json.dumps({"error": "out of memory; try a smaller --size", "exit_code": 1}))
        return 0
    print(json.dumps({"result": result}))
    return 0


def bench_size_isolated(width, height, **spec):
    """bench_size in a fresh Python process, so that its peak memory is its own."""
    spec = dict(spec, width=width, height=height)
    proc = subprocess.run([sys.executable, "-c", _WORKER_CODE, json.dumps(spec)],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        detail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise RunError(f"the benchmark process for {_size_name(width, height)} failed: {detail}")
    reply = json.loads(lines[-1])
    if "error" in reply:
        raise HandnstError(reply["error"], reply.get("exit_code", 1))
    return reply["result"]


# ---------------------------------------------------------------------------------- the whole run

def resolve_weights(weights=None):
    """(weights for bench_size, a sentence for the report): a file path, or "random" when asked or none found."""
    from handnst.weights import find_weights
    if weights is not None and str(weights).lower() == "random":
        return "random", "random weights (asked for; timings do not depend on the weight values)"
    found = find_weights(weights)
    if found is None:
        return "random", ("random weights (no weights file found; timings do not depend on the weight "
                          "values)")
    return found, f"pretrained weights from {found}"


def run_benchmark(sizes=DEFAULT_SIZES, *, device="cpu", dtype="float32", repeat=DEFAULT_REPEAT,
                  warmup=DEFAULT_WARMUP, weights=None, isolate=True, log=None, conv="auto", torch=False):
    """Benchmark every (width, height) in `sizes`; returns the whole report as a JSON-friendly dict.

    isolate: run each size in a fresh process (peak memory per size); False runs them all here, and
    then each memory figure is the peak of this process so far. log(line) is told about progress.
    """
    backend = canonical_backend(device)
    get_xp(backend)                 # a clear error now if the GPU cannot be used
    dtype = resolve_dtype(dtype).name
    sizes = [tuple(s) for s in sizes]
    if not sizes:
        raise InputError("give at least one --size")
    repeat, warmup = int(repeat), int(warmup)
    if repeat < 1 or warmup < 0:
        raise InputError("--repeat must be at least 1 and --warmup at least 0")
    if conv not in CONV_CHOICES:
        raise InputError(f"unknown --conv {conv!r}: use " + " or ".join(CONV_CHOICES))
    weights_arg, weights_note = resolve_weights(weights)
    log = log or (lambda line: None)
    machine = machine_info(backend)      # before any work of ours, so the load average is the others'
    log(f"bench: {backend}, {dtype}, {weights_note}")

    routine = gemm_name(dtype)
    square = reference_gemm_shape(backend)

    results = []
    for width, height in sizes:
        spec = dict(backend=backend, dtype=dtype, weights=weights_arg, repeat=repeat, warmup=warmup, conv=conv,
                    torch=bool(torch))
        result = bench_size_isolated(width, height, **spec) if isolate else bench_size(width, height, **spec)
        results.append(result)
        log(f"bench: {result['size']}: {result['seconds']['median']:.3f} s per evaluation, "
            f"{result['gflops']:.1f} GFLOP/s = {100 * result['ratio_to_gemm']:.0f}% of {routine} "
            f"({result['gemm_gflops']:.1f} GFLOP/s)")
        if torch:
            log(f"bench: {result['size']}: " + _torch_line(result["torch"]))

    per_pixel = [r["seconds_per_megapixel"] for r in results]
    largest = max(results, key=lambda r: r["megapixels"])
    for r in results:
        r["cost_per_pixel_vs_largest"] = r["seconds_per_megapixel"] / largest["seconds_per_megapixel"]
    return {
        "machine": machine,
        "backend": backend, "dtype": dtype, "gemm_routine": routine,
        "weights": weights_note,
        "objective": {"content_layers": list(DEFAULT_CONTENT_LAYERS), "style_layers": list(DEFAULT_STYLE_LAYERS),
                      "pooling": "avg", "alpha": 1.0, "beta": 1e3, "tv_weight": 0.0},
        "repeat": repeat, "warmup": warmup, "isolated": bool(isolate), "conv": conv, "torch": bool(torch),
        "gemm_square_shape": list(square),
        "gemm_gflops": statistics.median(r["gemm_gflops"] for r in results),
        "sizes": results,
        "cost_per_pixel_spread": max(per_pixel) / min(per_pixel) - 1.0,
        "memory_note": ("peak RSS of a fresh process per size" if isolate else
                        "peak RSS of this one process so far (sizes mix)")
                       + ("; GPU: CuPy memory pool total (its high-water mark)" if backend == "cupy" else ""),
    }


# -------------------------------------------------------------------------------------- report

def _mib(n):
    return "-" if n is None else f"{n / 2**20:.0f}"


def format_report(report):
    """The report as a readable table (plain text)."""
    m = report["machine"]
    routine = report["gemm_routine"]
    lines = [
        f"machine: {m['cpu']}, {m['usable_cores']} usable cores of {m['cores']}, {m['platform']}",
        f"BLAS:    {m['blas']['name']} {m['blas']['version']} (through SciPy {m['scipy']}; NumPy {m['numpy']})",
    ]
    load = m.get("load_average")
    if load:
        # Taken before the benchmark started: anything well above 0 is other work competing for the cores.
        busy = load[0] >= 1.0
        lines.append(f"load:    {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min averages, before the run)"
                     + ("; other processes were busy, so the timings are pessimistic" if busy else ""))
    if m.get("thread_env"):
        lines.append("threads: " + ", ".join(f"{k}={v}" for k, v in m["thread_env"].items()))
    if "gpu" in m:
        g = m["gpu"]
        lines.append(f"GPU:     {g['name']}, {g['memory_bytes'] / 2**30:.0f} GiB, CuPy {g['cupy']}, "
                     f"CUDA runtime {g['cuda_runtime']}")
    lines.append(f"backend: {report['backend']}, {report['dtype']}; {report['weights']}")
    lines.append("objective: content conv4_2, style conv1_1..conv5_1, average pooling; "
                 f"{report['warmup']} warm-up, {report['repeat']} timed evaluations per size")
    for r in report["sizes"]:
        lines.append(f"convolutions at {r['size']}: " + _algorithms_line(r.get("algorithms", {})))
    sq = "x".join(str(d) for d in report["gemm_square_shape"])
    lines.append(f"{routine} {sq}: {report['gemm_gflops']:.1f} GFLOP/s (median over sizes; each size measures it "
                 "after every timed evaluation, in its own process)")
    gpu = report["backend"] == "cupy"
    header = (f"{'size':>9s} {'GFLOP':>7s} {'s/eval':>7s} {'min':>7s} {'max':>7s} {'fwd s':>7s} {'bwd s':>7s} "
              f"{'GFLOP/s':>8s} {routine:>7s} {'%' + routine:>7s} {'%conv':>6s} {'s/Mpx':>7s} {'vs big':>6s} "
              f"{'RSS MiB':>8s}" + (f" {'pool MiB':>8s}" if gpu else ""))
    lines += ["", header, "-" * len(header)]
    for r in report["sizes"]:
        s = r["seconds"]
        row = (f"{r['size']:>9s} {r['flops']['total'] / 1e9:7.1f} {s['median']:7.3f} {s['min']:7.3f} {s['max']:7.3f} "
               f"{r['forward_seconds']['median']:7.3f} {r['backward_seconds']['median']:7.3f} "
               f"{r['gflops']:8.1f} {r['gemm_gflops']:7.1f} {100 * r['ratio_to_gemm']:6.0f}% {100 * r['ratio_to_conv_gemm']:5.0f}% "
               f"{r['seconds_per_megapixel']:7.2f} {r['cost_per_pixel_vs_largest']:6.2f} "
               f"{_mib(r['memory']['peak_rss_bytes']):>8s}")
        if gpu:
            row += f" {_mib(r['memory'].get('gpu_pool_bytes')):>8s}"
        lines.append(row)
    lines += [
        "",
        f"cost per pixel: spread {100 * report['cost_per_pixel_spread']:.0f}% across sizes (max/min - 1; "
        "'vs big' is s/Mpx relative to the largest size)",
        f"{routine}: GFLOP/s of the square {routine} {sq} (median of its measurements after each evaluation); "
        f"%{routine}: median over the evaluations of achieved GFLOP/s over the {routine} measured right after "
        f"it; %conv: over a {routine} shaped like one conv3_x tap product at that size (before and after)",
        "FLOPs: 3x3 convolutions up to conv5_1 forward and backward (dL/dinput only) as direct convolutions, "
        "plus the Gram matrices and their gradients; bias, ReLU, pooling and padding columns not counted",
        f"memory: {report['memory_note']}",
    ]
    for r in report["sizes"]:
        lines += ["", *format_layers(r)]
    if report.get("torch"):
        lines.append("")
        lines += [f"PyTorch, {r['size']}: " + _torch_line(r.get("torch", {})) for r in report["sizes"]]
    return "\n".join(lines)


def format_layers(result):
    """Lines of a per-layer table for one size: where an evaluation's time goes."""
    layers = result.get("layers") or {}
    total = result["seconds"]["median"]
    per_layer = result["flops"]["per_layer"]
    lines = [f"{result['size']}: time per layer (median ms of the timed evaluations; backward includes the ReLU mask)",
             f"{'layer':>9s} {'fwd ms':>8s} {'bwd ms':>8s} {'% eval':>7s} {'fwd GFLOP/s':>12s} {'bwd GFLOP/s':>12s}"]
    for name, t in layers.items():
        f, b = t.get("forward", 0.0), t.get("backward", 0.0)
        rates = [f"{per_layer[name] / s / 1e9:12.1f}" if name in per_layer and s > 0 else f"{'':>12s}" for s in (f, b)]
        lines.append(f"{name:>9s} {1e3 * f:8.2f} {1e3 * b:8.2f} {100 * (f + b) / total:6.1f}% {rates[0]} {rates[1]}")
    rest = result.get("loss_seconds", 0.0)
    lines.append(f"{'the rest':>9s} {1e3 * rest:8.2f} {'':>8s} {100 * rest / total:6.1f}%   (losses, their gradients, "
                 "conversions in and out)")
    if "product_seconds" in result:
        products = result["product_seconds"]["median"]
        share = result["product_fraction"]
        lines.append(f"{result['size']}: inside BLAS products {1e3 * products:.1f} ms per evaluation, {100 * share:.0f}% "
                     f"of it (median); the other {100 * (1 - share):.0f}% is transforms, ReLU, pooling, copies, losses")
    return lines


ALGORITHM_NAMES = {"4x4": "Winograd F(4x4, 3x3)", "2d": "Winograd F(2x2, 3x3)", "rows": "Winograd F(2, 3) along the rows",
                   "direct": "direct (one im2col product below 16 channels, else nine GEMMs)"}


def _algorithms_line(algorithms):
    """'Winograd F(2x2, 3x3): conv3_1..conv5_1; ...' from {layer: algorithm}, runs of layers grouped."""
    groups = []
    for name, how in algorithms.items():
        if groups and groups[-1][0] == how:
            groups[-1][2] = name
        else:
            groups.append([how, name, name])
    return "; ".join(f"{ALGORITHM_NAMES.get(h, h)} {a}" + (f"..{b}" if b != a else "") for h, a, b in groups)


def _torch_line(t):
    if "error" in t:
        return t["error"]
    line = (f"handnst {t['handnst_seconds']:.3f} s, PyTorch {t['torch_seconds']:.3f} s per evaluation "
            f"(torch {t['torch']}, {t['torch_threads']} threads); handnst / PyTorch = {t['ratio']:.2f} "
            f"(median of {len(t['ratio_samples'])} interleaved pairs; gradients differ by {t['gradient_difference']:.1e})")
    if "gemm_gflops" in t:
        line += f"; sgemm meanwhile {t['gemm_gflops']:.0f} GFLOP/s"
    if "products_ratio" in t:
        line += (f"; handnst's BLAS products alone / PyTorch's whole evaluation = {t['products_ratio']:.2f} "
                 "(the floor with everything else free)")
    return line


__all__ = ["objective_flops", "measure_gemm", "gemm_operands", "bench_size", "run_benchmark", "format_report", "parse_size",
           "machine_info", "DEFAULT_SIZES"]
