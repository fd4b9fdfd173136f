"""Optimizing the pixels: L-BFGS-B (the paper's choice) and three first-order methods to compare with.

Style transfer treats the image itself as the unknown. Given an objective

    f(x) -> (value, grad),   x and grad of shape (3, H, W) on the backend (NumPy or CuPy, float32),

`minimize` looks for the x that makes `value` small, staying inside a box lo <= x <= hi (the valid pixel
range in the network's input space, per channel, so no clipping is ever needed afterwards).

L-BFGS-B (Byrd, Lu, Nocedal & Zhu 1995) is what Gatys et al. used. It keeps the last few (here scipy's
default of 10) pairs of steps s_k = x_{k+1} - x_k and gradient changes y_k = g_{k+1} - g_k, and uses them
to approximate the inverse Hessian, so each step is close to a Newton step at the price of a gradient.
The "-B" handles box bounds exactly: variables that hit a bound are held there (projected gradient and a
generalized Cauchy point), so the answer lies in the box by construction. We call scipy's
implementation, which works in float64 on the host: each evaluation sends the flat float64 vector to the
backend once (as float32) and brings the gradient back once. One *iteration* may need more than one
*evaluation* (the line search tries step lengths until the Wolfe conditions hold), so both are reported.

For comparison, the first-order methods people tried for this task, each one evaluation per step and
followed by a projection onto the box (x <- clip(x, lo, hi)):

    adam:  m <- b1 m + (1-b1) g,  v <- b2 v + (1-b2) g^2,
           x <- x - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)       (Kingma & Ba 2015 defaults)
    sgd:   u <- 0.9 u + g,  x <- x - lr * u                                 (heavy-ball momentum)
    sign:  x <- x - eps * sign(g)                                           (signed gradient descent)

Default step sizes are given in "pixel levels" of a 0..255 image and scaled to the box actually used
(a box 255 wide, as for Caffe/Keras VGG, takes them as they are; a torchvision box of width ~4.4 takes
4.4/255 of them); see `DEFAULT_STEP`.

Whatever the method, the best x seen (lowest finite value) is kept and returned, not merely the last
one; Ctrl-C ends the run cleanly with that best x (stopped="interrupted"), and a NaN or Inf in the value
or gradient ends it with stopped="nonfinite" and the best finite x. Nothing here draws random numbers,
so the same inputs give bit-identical results on the same backend; `image.initial_image` draws its noise on
the host from `numpy.random.default_rng(seed)` and then moves it to the backend, so the CPU and the GPU
start from the same image.
"""

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from handnst.backend import array_module, to_host
from handnst.errors import InputError
from handnst.image.vgg_space import _full_bounds

METHODS = ("lbfgs", "adam", "sgd", "sign")

# Default step sizes in pixel levels of a 0..255 image (scaled by box width / 255, see `_pixel_scale`).
#   adam: lr = 10, as in Johnson's neural-style (each pixel moves at most about lr per step).
#   sign: eps = 1, one grey level per step.
#   sgd:  the learning rate multiplies the raw gradient, whose scale depends entirely on the loss
#         weights, so no constant is sensible; the default lr makes the first step move the pixels by one
#         grey level in root-mean-square: lr = 1 * pixel_scale / rms(g_0). Momentum 0.9 then builds up to
#         about ten times that.
DEFAULT_STEP = {"adam": 10.0, "sgd": 1.0, "sign": 1.0}
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
SGD_MOMENTUM = 0.9

# Stop reasons, in `OptimizeResult.stopped`.
#   converged:   scipy's convergence test passed (relative decrease below ftol or projected gradient below gtol)
#   stalled:     L-BFGS-B's line search could not decrease the value any more (usual with float32 noise)
#   max_iters:   `iters` iterations done, or `max_evals` evaluations used
#   callback:    the callback returned True
#   interrupted: Ctrl-C (KeyboardInterrupt)
#   nonfinite:   the value or the gradient contained NaN or Inf
STOP_REASONS = ("converged", "stalled", "max_iters", "callback", "interrupted", "nonfinite")


@dataclass
class OptimizeResult:
    """What `minimize` returns.

    x:           the best x seen (lowest finite value), a backend array of x0's shape and dtype
    value:       f(x) for that x (NaN only if no evaluation was finite)
    iterations:  iterations completed (L-BFGS-B: scipy's nit; first-order methods: steps taken)
    evaluations: calls of the objective (L-BFGS-B: scipy's nfev, counted here as well)
    seconds:     wall-clock time of the whole run
    history:     one dict per iteration: iteration, evaluations, value, seconds, plus the loss parts if a
                 `parts` callable was given and any dict the callback returned
    stopped:     one of STOP_REASONS
    message:     one sentence saying why it stopped
    method:      the method used
    initial_value: f(x0 projected onto the box), the first evaluation (NaN if interrupted before it)
    """

    x: object
    value: float
    iterations: int
    evaluations: int
    seconds: float
    history: list = field(default_factory=list)
    stopped: str = "max_iters"
    message: str = ""
    method: str = "lbfgs"
    initial_value: float = math.nan


class _Stop(Exception):
    """Raised inside scipy's loop (from the objective or the callback) to end the run with a reason."""

    def __init__(self, reason, message=""):
        super().__init__(message)
        self.reason = reason
        self.message = message


# --------------------------------------------------------------------------------------- bookkeeping

class _Tracker:
    """Counts evaluations, keeps the best x, and turns NaN/Inf into a clean stop.

    Every evaluation of the objective, whatever the method, goes through `evaluate`, so the counts and
    the best-so-far logic are the same for all methods.
    """

    def __init__(self, objective, shape, dtype, max_evals):
        self.objective = objective
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.max_evals = max_evals
        self.evaluations = 0
        self.best_x = None
        self.best_value = math.inf
        self.best_evaluation = 0
        self.initial_value = math.nan
        self.last_x = None        # backend array of the last evaluation
        self.last_value = math.nan

    def evaluate(self, x):
        """(value, grad) at backend array x; raises _Stop on NaN/Inf or when max_evals is used up."""
        if self.max_evals is not None and self.evaluations >= self.max_evals:
            raise _Stop("max_iters", f"used the maximum of {self.max_evals} objective evaluations")
        value, grad = self.objective(x)
        self.evaluations += 1
        value = float(value)
        if tuple(grad.shape) != self.shape:
            raise ValueError(f"the objective returned a gradient of shape {tuple(grad.shape)} "
                             f"for x of shape {self.shape}")
        if self.evaluations == 1:
            self.initial_value = value
        self.last_x, self.last_value = x, value
        return value, grad

    def check_and_keep(self, x, value, grad_is_finite):
        """Stop on NaN/Inf; otherwise remember x if it is the best so far."""
        if not (math.isfinite(value) and grad_is_finite):
            what = "loss" if not math.isfinite(value) else "gradient"
            if self.best_x is None:
                kept = "no finite evaluation to keep, so the initial image is returned"
            else:
                kept = (f"kept the best finite result (loss {self.best_value:.6g} "
                        f"from evaluation {self.best_evaluation})")
            raise _Stop("nonfinite",
                        f"the {what} became NaN or infinite at evaluation {self.evaluations}; {kept}. "
                        "Try smaller loss weights or a smaller learning rate")
        if value < self.best_value:
            # A copy, so that nothing done to x later (by the objective or by us) can change the best.
            self.best_x, self.best_value, self.best_evaluation = x.copy(), value, self.evaluations


def _pixel_scale(lo, hi):
    """One grey level of a 0..255 image, in the units of the box: median channel width / 255 (1 if unbounded)."""
    if lo is None or hi is None:
        return 1.0
    width = np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)
    width = width[np.isfinite(width)]
    return float(np.median(width)) / 255.0 if width.size else 1.0


def _check_arguments(method, iters, lr, max_evals, x0):
    if method not in METHODS:
        raise InputError(f"unknown optimizer {method!r}: use one of {', '.join(METHODS)}")
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 1:
        raise InputError(f"the number of iterations must be a positive integer, not {iters!r}")
    if lr is not None and not (isinstance(lr, (int, float, np.floating)) and math.isfinite(lr) and lr > 0):
        raise InputError(f"the learning rate must be a positive finite number, not {lr!r}")
    if max_evals is not None and (isinstance(max_evals, bool) or not isinstance(max_evals, (int, np.integer))
                                  or max_evals < 1):
        raise InputError(f"the maximum number of evaluations must be a positive integer, not {max_evals!r}")
    if not np.issubdtype(np.dtype(x0.dtype), np.floating):
        raise InputError(f"the starting image must be a floating-point array, not {x0.dtype}")


# --------------------------------------------------------------------------------------------- minimize

def minimize(objective, x0, *, method="lbfgs", iters=300, bounds=None, lr=None, callback=None, seed=None,
             max_evals=None, parts=None, options=None):
    """Minimize objective(x) -> (value, grad) over the pixels x, starting at x0, inside the box `bounds`.

    objective: callable on a backend array of x0's shape and dtype, returning (float, grad of the same
               shape). It must not modify its argument.
    x0:        backend array (NumPy or CuPy), e.g. (3, H, W) float32. Projected onto the box first.
    method:    "lbfgs" (scipy's L-BFGS-B), "adam", "sgd" (momentum 0.9) or "sign" (signed gradient).
    iters:     L-BFGS-B: scipy's maxiter; the others: the number of steps (one evaluation each).
    bounds:    (lo, hi), each an array (or scalar, or None for unbounded) broadcastable to x0's shape,
               e.g. per-channel (3, 1, 1). Respected exactly: the result satisfies
               float(lo) <= x <= float(hi) in x0's dtype, with no clipping afterwards.
    lr:        step size for adam/sgd/sign in the units of x (default: see DEFAULT_STEP); unused by lbfgs.
    callback:  callback(info) once per iteration, info = {"iteration", "evaluations", "value",
               "seconds", "x", "best_x", "best_value", **parts}. "x" is the *current* iterate (the point
               whose value is "value"; for L-BFGS-B the point scipy accepted, for the others the point
               evaluated in this step) and "best_x" the best so far; both are backend arrays the
               callback must not modify. No evaluation of the objective is made for the callback.
               Returning True stops the run (stopped="callback"); returning a dict adds its items to
               this iteration's history entry.
    seed:      accepted for a uniform interface; none of these methods draws random numbers, so the
               result depends on the inputs alone (the seed matters in `initial_image`).
    max_evals: hard cap on objective evaluations (default for lbfgs: max(3 * iters, 50); typical runs
               need 1.1-1.3 evaluations per iteration, the cap only stops a runaway line search).
    parts:     optional callable parts(x) -> dict of floats (e.g. total/content/style/tv), called once per
               iteration on the current iterate; its items go into the history and into the callback's
               info. It is not counted as an evaluation, so it should reuse what the objective computed.
    options:   extra scipy L-BFGS-B options (e.g. {"maxcor": 20, "ftol": 0, "gtol": 0}).

    Returns an OptimizeResult. Ctrl-C and NaN/Inf end the run cleanly (see STOP_REASONS).
    """
    _check_arguments(method, iters, lr, max_evals, x0)
    xp = array_module(x0)
    shape, dtype = tuple(x0.shape), np.dtype(x0.dtype)
    lo, hi = _full_bounds(bounds, shape)
    if method == "lbfgs" and max_evals is None:
        max_evals = max(3 * int(iters), 50)
    tracker = _Tracker(objective, shape, dtype, max_evals)
    state = {"history": [], "iterations": 0, "start": time.perf_counter()}

    def end_of_iteration(x, value):
        """Record iteration `state['iterations'] + 1` at current iterate x; raise _Stop if the callback asks."""
        state["iterations"] += 1
        record = {"iteration": state["iterations"], "evaluations": tracker.evaluations, "value": value,
                  "seconds": time.perf_counter() - state["start"]}
        if parts is not None:
            record.update(parts(x))
        state["history"].append(record)
        if callback is not None:
            answer = callback(dict(record, x=x, best_x=tracker.best_x, best_value=tracker.best_value))
            if isinstance(answer, dict):
                record.update(answer)
            elif answer is True:
                raise _Stop("callback", f"stopped by the callback after iteration {state['iterations']}")

    run = _run_lbfgs if method == "lbfgs" else _run_first_order
    try:
        stopped, message = run(tracker, end_of_iteration, x0, xp, shape, dtype, lo, hi,
                               method=method, iters=int(iters), lr=lr, options=options)
    except _Stop as stop:
        stopped, message = stop.reason, stop.message
    except KeyboardInterrupt:
        stopped = "interrupted"
        message = (f"interrupted after {state['iterations']} iterations and {tracker.evaluations} "
                   "evaluations; the best result so far is kept")

    if tracker.best_x is None:
        # Nothing finite was ever evaluated (interrupted at once, or NaN at x0): return x0 in the box.
        best_x = x0.copy() if lo is None else xp.clip(x0, xp.asarray(lo.astype(dtype)), xp.asarray(hi.astype(dtype)))
        best_value = math.nan
    else:
        best_x, best_value = tracker.best_x, tracker.best_value
    return OptimizeResult(x=best_x, value=best_value, iterations=state["iterations"],
                          evaluations=tracker.evaluations, seconds=time.perf_counter() - state["start"],
                          history=state["history"], stopped=stopped, message=message, method=method,
                          initial_value=tracker.initial_value)


def _run_lbfgs(tracker, end_of_iteration, x0, xp, shape, dtype, lo, hi, *, iters, options, **_):
    """scipy's L-BFGS-B on the flat float64 vector; returns (stopped, message).

    It is called through `scipy.optimize.fmin_l_bfgs_b`, the public entry point of the very routine
    that `minimize(..., method="L-BFGS-B")` runs, with the same defaults (10 correction pairs,
    ftol = 1e7 * machine epsilon, gtol = 1e-5, 20 line-search steps), so the iterates are the same.
    The reason: for L-BFGS-B, `minimize` turns the bounds into a Python list of n tuples of floats
    and keeps it for the whole run (about 60 MB at 512x384), which a run that must fit in 1 GiB
    cannot spare.
    """
    from scipy.optimize import fmin_l_bfgs_b

    x0_flat = to_host(x0).astype(np.float64).ravel()
    scipy_bounds = None
    if lo is not None:
        x0_flat = np.clip(x0_flat, lo.ravel(), hi.ravel())
        scipy_bounds = _bounds_for_scipy(lo.ravel(), hi.ravel())
    last = {"flat": None}

    def fun(flat):
        # host float64 -> backend dtype: cast on the host (half the bytes to move), then one copy over.
        x = xp.asarray(flat.reshape(shape).astype(dtype))
        value, grad = tracker.evaluate(x)
        grad_flat = to_host(grad).astype(np.float64).ravel()   # one copy back, then widen for scipy
        tracker.check_and_keep(x, value, bool(np.isfinite(grad_flat).all()))
        last["flat"] = flat.copy()
        return value, grad_flat

    def scipy_callback(flat):
        if last["flat"] is not None and np.array_equal(flat, last["flat"]):
            # The accepted point is the last one evaluated (it always is, after a line search):
            # reuse its backend array and value, no extra transfer and no extra evaluation.
            x, value = tracker.last_x, tracker.last_value
        else:
            x = xp.asarray(np.asarray(flat).reshape(shape).astype(dtype))
            value = math.nan
        end_of_iteration(x, value)

    settings = {"maxcor": 10, "ftol": 1e7 * np.finfo(float).eps, "gtol": 1e-5, "maxls": 20}
    unknown = set(options or {}) - set(settings)
    if unknown:
        raise InputError(f"unknown L-BFGS-B option(s) {sorted(unknown)}: use {', '.join(sorted(settings))}")
    settings.update(options or {})
    _, _, info = fmin_l_bfgs_b(fun, x0_flat, bounds=scipy_bounds, m=settings["maxcor"],
                               factr=settings["ftol"] / np.finfo(float).eps, pgtol=settings["gtol"],
                               maxls=settings["maxls"], maxiter=iters, maxfun=tracker.max_evals,
                               callback=scipy_callback)
    task = info.get("task", "")
    text = task.decode() if isinstance(task, bytes) else str(task)
    if info["warnflag"] == 0:
        return "converged", f"L-BFGS-B converged after {info['nit']} iterations ({text})"
    if info["warnflag"] == 1:
        return "max_iters", f"reached the limit of {info['nit']} iterations / {info['funcalls']} evaluations ({text})"
    return "stalled", f"L-BFGS-B stopped after {info['nit']} iterations: {text}"


def _bounds_for_scipy(lo, hi, most_shared=4096):
    """The (lo, hi) pair of every variable in the form scipy's L-BFGS-B takes them apart.

    scipy turns the bounds into arrays with zip(*bounds) and Python floats. Given an (n, 2) array,
    that makes n row views, 2n NumPy scalars and 2n floats first: for a 512x512 image about 200 MB
    of Python objects at the start of the run (measured on its own: peak RSS +200 MB, 25 MB of it
    kept afterwards). Pixel bounds take a few distinct pairs (one per channel), so this returns a
    list of n references to those few tuples instead (6 MB), which scipy converts without making
    a new object per variable. With more distinct pairs than `most_shared`, the (n, 2) array.
    """
    both = np.stack([lo, hi], axis=1)
    pairs, which = np.unique(both, axis=0, return_inverse=True)
    if len(pairs) > most_shared:
        return both
    shared = [(float(a), float(b)) for a, b in pairs]
    return [shared[i] for i in which.ravel().tolist()]


def _run_first_order(tracker, end_of_iteration, x0, xp, shape, dtype, lo, hi, *, method, iters, lr, **_):
    """adam / sgd / sign: `iters` steps, one evaluation each, projected onto the box after every step."""
    lo_b = hi_b = None
    if lo is not None:
        lo_b, hi_b = xp.asarray(lo.astype(dtype)), xp.asarray(hi.astype(dtype))

    def project(x):
        return x if lo_b is None else xp.clip(x, lo_b, hi_b)

    pixel = _pixel_scale(lo, hi)
    step = lr if lr is not None else DEFAULT_STEP[method] * pixel
    x = project(xp.asarray(x0, dtype=dtype))
    m = v = velocity = None
    for t in range(1, iters + 1):
        value, grad = tracker.evaluate(x)
        tracker.check_and_keep(x, value, bool(xp.isfinite(grad).all()))
        grad = grad.astype(dtype, copy=False)
        # Updates are out of place, so the array handed to the callback as "x" stays the evaluated point.
        if method == "adam":
            if m is None:
                m, v = xp.zeros_like(grad), xp.zeros_like(grad)
            m = ADAM_BETA1 * m + (1 - ADAM_BETA1) * grad
            v = ADAM_BETA2 * v + (1 - ADAM_BETA2) * grad * grad
            m_hat = m / (1 - ADAM_BETA1 ** t)
            v_hat = v / (1 - ADAM_BETA2 ** t)
            new_x = x - (step * m_hat / (xp.sqrt(v_hat) + ADAM_EPS)).astype(dtype, copy=False)
        elif method == "sgd":
            if velocity is None:
                velocity = xp.zeros_like(grad)
                if lr is None:
                    rms = float(xp.sqrt(xp.mean(grad.astype(np.float64) ** 2)))
                    step = DEFAULT_STEP["sgd"] * pixel / rms if rms > 0 else 0.0
            velocity = SGD_MOMENTUM * velocity + grad
            new_x = x - (step * velocity).astype(dtype, copy=False)
        else:  # sign
            new_x = x - (step * xp.sign(grad)).astype(dtype, copy=False)
        evaluated, x = x, project(new_x.astype(dtype, copy=False))
        end_of_iteration(evaluated, value)
    return "max_iters", f"ran all {iters} {method} steps"


# --------------------------------------------------------------------------------------------- progress

class Progress:
    """A tqdm bar fed by minimize's callback: iteration, loss parts and seconds per iteration.

    Use it directly as the callback (`minimize(..., callback=progress)`) or call it from your own.
    Reads "total" (or "value"), "content", "style", "tv" and "seconds" from the info dict.
    """

    def __init__(self, total, show, file=None):
        from tqdm import tqdm

        self.bar = tqdm(total=total, file=file or sys.stderr, disable=not show, unit="it",
                        dynamic_ncols=True, leave=True)
        self.last_seconds = 0.0
        self.last_iteration = 0

    def __call__(self, info):
        iteration = int(info.get("iteration", self.last_iteration + 1))
        seconds = float(info.get("seconds", self.last_seconds))
        per_iteration = (seconds - self.last_seconds) / max(iteration - self.last_iteration, 1)
        postfix = {"loss": f"{info.get('total', info.get('value', math.nan)):.4g}"}
        for key in ("content", "style", "tv"):
            if key in info and isinstance(info[key], (int, float, np.floating)):
                postfix[key] = f"{float(info[key]):.4g}"
        postfix["s/it"] = f"{per_iteration:.3f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(iteration - self.last_iteration)
        self.last_seconds, self.last_iteration = seconds, iteration
        return None

    def close(self):
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def make_progress(total, enabled=True, *, force=False, file=None):
    """A Progress bar for `total` iterations on stderr.

    Shown when `enabled` and stderr is a terminal, or whenever `force` is true (e.g. --progress in a log).
    """
    stream = file or sys.stderr
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    return Progress(total, show=bool(force or (enabled and is_tty)), file=stream)
