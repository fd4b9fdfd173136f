"""Coarse-to-fine runs: the sizes, the iterations at each, and the weights that keep the look.

A large picture is cheap to get right in the small: one L-BFGS-B iteration at 128 pixels costs a
sixteenth of one at 512 (the cost is proportional to the number of pixels), and the large-scale layout
of the style settles there. So a coarse-to-fine run stylizes at `start` pixels, upsamples the result
and refines it at a larger size, and so on up to the final size (jcjohnson/neural-style's multires
recipe, which Gatys et al. 2017 use for their high-resolution results; crowsonkb/style-transfer-pytorch
does it from 128 pixels up):

    level_sizes(128, 512)            -> [128, 256, 512]           factor 2 (the default)
    level_sizes(128, 512, 2 ** 0.5)  -> [128, 181, 256, 362, 512]
    level_iterations(300, 3)         -> [300, 150, 75]            halved at each level

With iterations halved while the pixels grow 4x per level, each level costs twice the one before and
the last level dominates: 300/150/75 at 128/256/512 cost what 131 iterations at 512 cost
((300 + 150 * 4 + 75 * 16) / 16), under half of a 300-iteration single-size run on paper (measured at
256 from 64: 150 against 277 CPU-seconds, small maps costing more per pixel).

Weights at every size. The paper's objective

    L = alpha 1/2 sum (F - P)^2 + beta sum_l w_l/(4 N_l^2 M_l^2) sum (G - A)^2

has a content term that grows with the number of positions M of the content layer (a sum over them)
and a style term that does not (G grows like M, and is divided by M^2). Twice the side is 4x the
pixels and 4x the content loss: the same alpha and beta paint less. Two conventions:

  "paper"            the formula as it is. In a single-size run nothing changes. In a coarse-to-fine
                     run alpha is rescaled at every level to alpha * P_final / P_level (P the number
                     of pixels), so each level has the balance of the final size and the last level
                     optimizes exactly the paper's objective at the final size.
  "size-invariant"   alpha * P_ref / P_level at every size, with P_ref = 256 x 256: the content term
                     becomes a per-pixel average (times 256^2), so the same alpha and beta give the
                     same look at any --size; at 256 x 256 it is the paper's objective. The
                     style's Gram matrices are taken per position too (A^l M_x / M_a), so a
                     --style-size that differs from --size does not change the balance either.

The style image is scaled with the content at every level (its longer side times level / final), so
its Gram matrices keep the same relation to the picture's. TV is left as it is: for a smooth
picture, sum of squared neighbour differences hardly changes with the size (4x the pairs, each a
quarter), so its weight needs no rescaling.
"""

import dataclasses
import math
import time

import numpy as np

from handnst.errors import InputError
from handnst.image import resize_bilinear

NORMALIZATIONS = ("paper", "size-invariant")
DEFAULT_NORMALIZATION = "paper"
REFERENCE_PIXELS = 256 * 256
DEFAULT_LEVEL_FACTOR = 2.0
# Below this no level gets fewer iterations (unless --iters itself is smaller): L-BFGS-B builds its
# curvature model from the last 10 steps, and a level that stops before it has one wastes its start.
MIN_LEVEL_ITERS = 20


def level_sizes(start, final, factor=DEFAULT_LEVEL_FACTOR):
    """Longer sides from `start` up to `final`, each at most `factor` times the one before.

    The steps are equal in the logarithm: n = ceil(log(final / start) / log(factor)) steps of
    (final / start)^(1/n), rounded to whole pixels; the last size is exactly `final`.
    """
    for name, value in (("--start-size", start), ("--size", final)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(f"{name} must be a positive whole number of pixels, not {value!r}")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) \
            or factor <= 1:
        raise InputError(f"the level factor must be a number above 1 (2 doubles the side), not {factor!r}")
    if start >= final:
        raise InputError(f"--start-size {start} must be smaller than --size {final}")
    steps = max(1, math.ceil(math.log(final / start) / math.log(factor) - 1e-9))
    sizes = [round(start * (final / start) ** (k / steps)) for k in range(steps)] + [final]
    return sorted(set(sizes))


def level_iterations(iters, levels, given=None):
    """Iterations per level: `given` (one per level) as it is, else `iters` at the smallest level and
    half the previous level's at each next one, never fewer than MIN_LEVEL_ITERS (nor than iters)."""
    if given is not None:
        given = list(given)
        if len(given) != levels:
            raise InputError(f"{len(given)} level iteration counts given for {levels} levels: give one per level")
        for k in given:
            if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
                raise InputError(f"level iteration counts must be positive whole numbers, not {k!r}")
        return given
    if isinstance(iters, bool) or not isinstance(iters, int) or iters <= 0:
        raise InputError(f"the number of iterations must be a positive whole number, not {iters!r}")
    floor = min(iters, MIN_LEVEL_ITERS)
    return [max(floor, iters >> k) for k in range(levels)]


def content_weight_at(alpha, level_hw, normalization=DEFAULT_NORMALIZATION, final_hw=None):
    """The alpha to use at a level of (H, W) pixels under `normalization` (see the module docstring).

    final_hw: the final (H, W) of a coarse-to-fine run (None or equal to level_hw: a single size).
    """
    if normalization not in NORMALIZATIONS:
        raise InputError(f"unknown normalization {normalization!r}: use {' or '.join(NORMALIZATIONS)}")
    pixels = level_hw[0] * level_hw[1]
    if normalization == "size-invariant":
        return alpha * REFERENCE_PIXELS / pixels
    if final_hw is None:
        return alpha
    return alpha * (final_hw[0] * final_hw[1]) / pixels


def upsample(array, height, width, bounds=None):
    """A level's picture (host (3, h, w), the network's input space) brought to (height, width) for
    the next level: bilinear (the next level's optimization puts the detail back), clipped to the
    pixel box."""
    out = resize_bilinear(array, height, width).astype(np.float32)
    if bounds is not None:
        out = np.clip(out, bounds[0], bounds[1])
    return out


def upsample_detail(previous, previous_content, content):
    """The next level's start in a stylization: the content at the new size plus the previous level's
    change to the content, upsampled:  x0 = c_k + up(x_{k-1} - c_{k-1}).

    Upsampling x_{k-1} itself gives a blurred picture: the content's fine detail, which the content
    layer still sees at the larger size, is gone and the level spends its iterations painting it
    back (measured at 256 pixels from 64: a final content loss 19% above a single-size run's).
    Upsampling only the change keeps the photograph's detail and carries over what the smaller
    levels painted. All three are host arrays (3, h, w) in VGG's input space."""
    _, H, W = content.shape
    return content + upsample(previous - previous_content, H, W)


def run_levels(sizes, iterations, run_level):
    """Run a coarse-to-fine plan; return the last level's Result with the levels' story added.

    run_level(index, size, iters, previous) runs one level and returns its Result; `previous` is
    the Result of the level before (None at the first), whose `array` it upsamples as its start.
    A run stopped by Ctrl-C or a NaN ends the plan there, with that level's picture. The returned
    Result adds up iterations, evaluations and seconds over the levels, keeps the last level's
    loss, history and picture, and lists every level in `levels` (size, iterations, evaluations,
    seconds, the content weight used and the final loss parts there).
    """
    done, previous, start = [], None, time.perf_counter()
    for index, (size, iters) in enumerate(zip(sizes, iterations)):
        t = time.perf_counter()
        result = run_level(index, size, iters, previous)
        done.append({
            "level": index + 1, "size": list(result.size), "iterations": result.iterations,
            "evaluations": result.evaluations, "seconds": result.timings["seconds"],
            "setup_seconds": result.timings["setup_seconds"], "wall_seconds": time.perf_counter() - t,
            "content_weight": result.options.get("level_content_weight"), "stopped": result.stopped,
            "loss": result.loss,
        })
        previous = result
        if result.stopped in ("interrupted", "nonfinite"):
            break
    iterations_done = sum(d["iterations"] for d in done)
    evaluations = sum(d["evaluations"] for d in done)
    seconds = sum(d["seconds"] for d in done)
    timings = dict(previous.timings, seconds=seconds, setup_seconds=sum(d["setup_seconds"] for d in done),
                   wall_seconds=time.perf_counter() - start,
                   seconds_per_evaluation=previous.timings["seconds_per_evaluation"],
                   seconds_per_iteration=seconds / max(iterations_done, 1))
    message = previous.message
    if len(done) < len(sizes):
        message = f"{message} (at level {len(done)} of {len(sizes)}, {previous.size[0]}x{previous.size[1]})"
    return dataclasses.replace(previous, iterations=iterations_done, evaluations=evaluations, timings=timings,
                               levels=done, message=message)


def plan_run(size, start_size, level_factor, iters, level_iters, normalization):
    """[(longer side, iterations)] of a coarse-to-fine run, or None for a run at one size."""
    if normalization not in NORMALIZATIONS:
        raise InputError(f"unknown normalization {normalization!r}: use {' or '.join(NORMALIZATIONS)}")
    if start_size is None:
        if level_iters is not None:
            raise InputError("--level-iters gives the iterations of coarse-to-fine levels: add --start-size")
        return None
    if size is None:
        raise InputError("--start-size needs --size, the final size to reach")
    sizes = level_sizes(start_size, size, level_factor)
    return list(zip(sizes, level_iterations(iters, len(sizes), level_iters)))


def plan_options(plan, start_size, level_factor):
    """The plan as report options: start size, factor, and every level's size and iterations."""
    if not plan:
        return {"start_size": None}
    return {"start_size": start_size, "level_factor": level_factor, "level_sizes": [p[0] for p in plan],
            "level_iters": [p[1] for p in plan]}


def shared_net(net, opts, several):
    """net() for every level: the one given, or (several levels) one network built on first use."""
    holder = [net]

    def get():
        if holder[0] is None and several:
            from handnst.networks.vgg import load_vgg19
            holder[0] = load_vgg19(opts.get("weights"), pooling=opts["pooling"], backend=opts["device_backend"])
        return holder[0]
    return get


def level_progress(progress, plan):
    """The progress argument for one level: a bar of its own (True) where the caller's is a bar that
    the level would close (tqdm-like, with close()), else the caller's own callable or flag."""
    if plan and callable(progress) and hasattr(progress, "close"):
        return True
    return progress


def with_level(callback, level):
    """The callback, told which coarse-to-fine level each iteration belongs to (info["level"])."""
    if callback is None or level is None:
        return callback
    return lambda info: callback(dict(info, level=level))


def run_plan(plan, run_level, opts):
    """One run (plan None), or every level of the plan with the run's own options in the Result."""
    if plan is None:
        return run_level(0, None, None, None)
    result = run_levels([p[0] for p in plan], [p[1] for p in plan], run_level)
    public = {k: v for k, v in opts.items() if k not in ("device_backend", "init_kind")}
    return dataclasses.replace(result, options=public)


__all__ = ["NORMALIZATIONS", "DEFAULT_NORMALIZATION", "REFERENCE_PIXELS", "DEFAULT_LEVEL_FACTOR", "MIN_LEVEL_ITERS",
           "level_sizes", "level_iterations", "content_weight_at", "upsample", "upsample_detail", "run_levels", "plan_run",
           "plan_options", "shared_net", "level_progress", "with_level", "run_plan"]
