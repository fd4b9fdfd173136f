"""Tests of handnst.optimize on small objectives whose minimum is known in closed form.

Each objective counts its own calls and records what it was given, so the tests can check the
optimizer's reports (iterations, evaluations, best value) against what really happened.
"""

import io

import numpy as np
import pytest
from scipy.optimize import minimize as scipy_minimize

from handnst.errors import InputError
from handnst.image import initial_image, resize_bilinear
from handnst.optimize import make_progress, minimize

SHAPE = (3, 4, 5)
FIRST_ORDER = ("adam", "sgd", "sign")
METHODS = ("lbfgs",) + FIRST_ORDER


class Recorder:
    """Wraps f(x) -> (value, grad): counts calls and keeps a copy of every x, value and dtype seen."""

    def __init__(self, f):
        self.f = f
        self.xs, self.values, self.dtypes, self.shapes = [], [], [], []

    @property
    def calls(self):
        return len(self.values)

    def __call__(self, x):
        self.xs.append(np.array(x, copy=True))
        self.dtypes.append(x.dtype)
        self.shapes.append(x.shape)
        value, grad = self.f(x)
        self.values.append(float(value))
        return value, grad


def quadratic(target, scale=None):
    """f(x) = sum scale * (x - target)^2, gradient 2 scale (x - target); minimum at target."""
    target = np.asarray(target)
    scale = np.ones_like(target) if scale is None else np.asarray(scale, dtype=target.dtype)

    def f(x):
        d = x - target
        return float((scale * d * d).sum()), (2 * scale * d).astype(x.dtype)
    return f


def ill_conditioned(target):
    """sum s_i d_i^2 + 0.1 d_i^4 with d = x - target and s_i from 0.1 to 10: L-BFGS-B needs tens of evaluations."""
    target = np.asarray(target)
    scale = np.linspace(0.1, 10.0, target.size).reshape(target.shape).astype(target.dtype)

    def f(x):
        d = x - target
        return float((scale * d * d + 0.1 * d ** 4).sum()), (2 * scale * d + 0.4 * d ** 3).astype(x.dtype)
    return f


def rosenbrock(x):
    """Rosenbrock's banana in 2-D, x of shape (2,): minimum 0 at (1, 1)."""
    a, b = float(x[0]), float(x[1])
    value = (1 - a) ** 2 + 100 * (b - a * a) ** 2
    grad = np.array([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)], dtype=x.dtype)
    return value, grad


def per_channel_target():
    # Per-channel targets and a per-pixel spread; float32-exact values so comparisons can be exact.
    base = np.array([3.0, -2.0, 0.5], dtype=np.float32).reshape(3, 1, 1)
    ramp = np.linspace(-0.25, 0.25, SHAPE[1] * SHAPE[2], dtype=np.float32).reshape(1, *SHAPE[1:])
    return base + ramp


BOX = (np.array([-1.0, -1.5, -1.0]).reshape(3, 1, 1), np.array([1.0, 1.5, 1.0]).reshape(3, 1, 1))


# ---------------------------------------------------------------------------------------- L-BFGS-B

def test_lbfgs_reaches_the_minimum_of_a_quadratic():
    target = per_channel_target()
    f = Recorder(quadratic(target, scale=np.linspace(0.5, 4.0, target.size).reshape(SHAPE)))
    result = minimize(f, np.zeros(SHAPE, np.float32), method="lbfgs", iters=100)
    assert result.stopped == "converged"
    assert result.x.dtype == np.float32 and result.x.shape == SHAPE
    np.testing.assert_allclose(result.x, target, atol=1e-4)
    assert result.value < 1e-7


def test_lbfgs_rosenbrock_in_a_box_that_contains_the_minimum():
    result = minimize(rosenbrock, np.array([-1.2, 1.0]), method="lbfgs", iters=200,
                      bounds=([-2.0, -2.0], [2.0, 2.0]))
    np.testing.assert_allclose(result.x, [1.0, 1.0], atol=1e-4)


def test_lbfgs_rosenbrock_with_the_minimum_outside_the_box_ends_on_the_boundary():
    # With a <= 0.5 the constrained minimum is a = 0.5 (on the bound), b = a^2 = 0.25.
    f = Recorder(rosenbrock)
    result = minimize(f, np.array([-1.2, 1.0]), method="lbfgs", iters=200,
                      bounds=([-2.0, -2.0], [0.5, 2.0]))
    assert result.x[0] == 0.5
    assert abs(result.x[1] - 0.25) < 1e-5
    assert all(x[0] <= 0.5 for x in f.xs), "an evaluated point left the box"


def test_bounds_are_respected_exactly_without_clipping_afterwards():
    target = per_channel_target()           # channels 0 and 1 lie outside BOX, channel 2 inside
    f = Recorder(quadratic(target))
    result = minimize(f, np.zeros(SHAPE, np.float32), method="lbfgs", iters=100, bounds=BOX)
    lo, hi = (np.broadcast_to(b, SHAPE).astype(np.float32) for b in BOX)
    # Every point the objective ever saw was inside the box: the optimizer itself kept it there.
    for x in f.xs:
        assert (x >= lo).all() and (x <= hi).all()
    # Where the unconstrained minimum is outside, the answer sits exactly on the bound.
    assert (result.x[0] == 1.0).all() and (result.x[1] == -1.5).all()
    np.testing.assert_allclose(result.x[2], target[2], atol=1e-5)
    # The returned x is one of the evaluated points, bit for bit (nothing was clipped afterwards).
    assert any(np.array_equal(result.x, x) for x in f.xs)


def test_bounds_reach_scipy_as_shared_pairs_with_the_same_values():
    from scipy.optimize._constraints import old_bound_to_new     # what scipy's L-BFGS-B does with them
    from handnst.optimize import _bounds_for_scipy
    lo = np.repeat([-103.9, -116.8, -np.inf], 50)
    hi = np.repeat([151.1, 138.2, 131.3], 50)
    shared = _bounds_for_scipy(lo, hi)
    assert isinstance(shared, list) and len(shared) == 150 and len({id(pair) for pair in shared}) == 3
    for got in (old_bound_to_new(shared), old_bound_to_new(_bounds_for_scipy(lo, hi, most_shared=2))):
        np.testing.assert_array_equal(got[0], lo)
        np.testing.assert_array_equal(got[1], hi)
    assert isinstance(_bounds_for_scipy(lo, hi, most_shared=2), np.ndarray)     # too many distinct pairs


def test_x0_outside_the_box_is_projected_before_the_first_evaluation():
    f = Recorder(quadratic(np.zeros(SHAPE, np.float32)))
    minimize(f, np.full(SHAPE, 10.0, np.float32), method="lbfgs", iters=5, bounds=BOX)
    assert f.xs[0].max() <= 1.5


def test_lbfgs_reports_iterations_and_evaluations_like_scipy_itself():
    # A float64 objective: our wrapper must drive scipy exactly as a direct call does.
    scale = np.linspace(0.1, 10.0, 60)
    target = np.linspace(-3, 3, 60)

    def flat_f(v):
        d = v - target
        return float((scale * d * d).sum() + 0.1 * (d ** 4).sum()), 2 * scale * d + 0.4 * d ** 3

    direct_calls = []
    direct = scipy_minimize(lambda v: (direct_calls.append(1), flat_f(v))[1], np.zeros(60), jac=True,
                            method="L-BFGS-B", bounds=[(-2.0, 2.0)] * 60, options={"maxiter": 15})
    f = Recorder(lambda x: flat_f(x))
    iterations_seen = []
    result = minimize(f, np.zeros(60), method="lbfgs", iters=15, bounds=(-2.0, 2.0),
                      callback=lambda info: iterations_seen.append(info["iteration"]))
    assert result.evaluations == f.calls == direct.nfev == len(direct_calls)
    assert result.iterations == direct.nit == len(iterations_seen) == len(result.history)
    assert iterations_seen == list(range(1, result.iterations + 1))
    assert result.history[-1]["evaluations"] == result.evaluations
    np.testing.assert_array_equal(result.x, direct.x)


def test_lbfgs_crosses_float64_to_the_objective_dtype_and_shape():
    target = per_channel_target()
    f = Recorder(quadratic(target))
    result = minimize(f, np.zeros(SHAPE, np.float32), method="lbfgs", iters=20)
    assert set(f.dtypes) == {np.dtype(np.float32)} and set(f.shapes) == {SHAPE}
    assert result.x.dtype == np.float32 and result.x.shape == SHAPE
    assert isinstance(result.value, float)


def test_max_evals_is_a_hard_cap():
    f = Recorder(rosenbrock)
    result = minimize(f, np.array([-1.2, 1.0]), method="lbfgs", iters=1000, max_evals=7)
    assert f.calls == result.evaluations == 7
    assert result.stopped == "max_iters"


# ------------------------------------------------------------------------------ best, interrupt, NaN

def _argmin_x(f):
    finite = [v if np.isfinite(v) else np.inf for v in f.values]
    return f.xs[int(np.argmin(finite))], min(finite)


@pytest.mark.parametrize("method", METHODS)
def test_the_best_x_seen_is_returned_not_the_last(method):
    # A large fixed step makes sign/adam/sgd overshoot and oscillate, so the last point is not the best;
    # for L-BFGS-B the best is the last accepted point, and must still be the minimum of all evaluations.
    f = Recorder(quadratic(per_channel_target()))
    lr = {"lbfgs": None, "adam": 0.7, "sgd": 0.9, "sign": 0.7}[method]
    result = minimize(f, np.zeros(SHAPE, np.float32), method=method, iters=25, lr=lr)
    best_x, best_value = _argmin_x(f)
    assert result.value == best_value
    np.testing.assert_array_equal(result.x, best_x)
    if method != "lbfgs":
        assert f.values[-1] > best_value, "the test objective should have ended away from its best"


class InterruptOnCall:
    def __init__(self, f, k):
        self.f, self.k, self.calls = Recorder(f), k, 0

    def __call__(self, x):
        self.calls += 1
        if self.calls == self.k:
            raise KeyboardInterrupt
        return self.f(x)


@pytest.mark.parametrize("method", METHODS)
def test_ctrl_c_returns_interrupted_with_the_best_x_so_far(method):
    g = InterruptOnCall(ill_conditioned(per_channel_target()), k=5)
    result = minimize(g, np.zeros(SHAPE, np.float32), method=method, iters=50, bounds=BOX)
    assert result.stopped == "interrupted"
    assert result.evaluations == 4 == g.f.calls
    best_x, best_value = _argmin_x(g.f)
    assert result.value == best_value
    np.testing.assert_array_equal(result.x, best_x)


def test_ctrl_c_in_the_callback_is_clean_too():
    def callback(info):
        if info["iteration"] == 2:
            raise KeyboardInterrupt
    result = minimize(quadratic(per_channel_target()), np.zeros(SHAPE, np.float32), iters=50,
                      callback=callback, method="adam")
    assert result.stopped == "interrupted" and result.iterations == 2


def nan_after(f, k, where="value"):
    """f, but from call k+1 on the value (or one gradient entry) is NaN."""
    count = [0]

    def g(x):
        count[0] += 1
        value, grad = f(x)
        if count[0] > k:
            if where == "value":
                value = float("nan")
            else:
                grad = grad.copy()
                grad.flat[3] = np.inf
        return value, grad
    return g


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("where", ["value", "gradient"])
def test_nan_or_inf_stops_with_nonfinite_and_a_finite_best_x(method, where):
    f = Recorder(nan_after(ill_conditioned(per_channel_target()), k=6, where=where))
    result = minimize(f, np.zeros(SHAPE, np.float32), method=method, iters=50, bounds=BOX)
    assert result.stopped == "nonfinite"
    assert "NaN" in result.message and where.replace("value", "loss") in result.message
    assert f.calls == result.evaluations == 7
    assert np.isfinite(result.x).all() and np.isfinite(result.value)
    finite = Recorder(None)                 # the six finite evaluations before the NaN
    finite.xs, finite.values = f.xs[:6], f.values[:6]
    best_x, best_value = _argmin_x(finite)
    assert result.value == best_value
    np.testing.assert_array_equal(result.x, best_x)


def test_nan_at_the_very_first_evaluation_returns_x0_in_the_box():
    result = minimize(nan_after(quadratic(per_channel_target()), k=0), np.full(SHAPE, 5.0, np.float32),
                      method="lbfgs", iters=10, bounds=BOX)
    assert result.stopped == "nonfinite" and np.isnan(result.value)
    np.testing.assert_array_equal(result.x, np.broadcast_to(BOX[1], SHAPE).astype(np.float32))


# ------------------------------------------------------------------------------- first-order methods

@pytest.mark.parametrize("method", FIRST_ORDER)
def test_first_order_methods_decrease_a_convex_quadratic_and_stay_in_the_box(method):
    target = per_channel_target()
    f = Recorder(quadratic(target))
    lo, hi = (np.broadcast_to(b, SHAPE).astype(np.float32) for b in BOX)
    # Bounds of width ~2-3: the default steps (scaled to the box) apply.
    result = minimize(f, np.zeros(SHAPE, np.float32), method=method, iters=300, bounds=BOX)
    assert result.stopped == "max_iters"
    assert result.iterations == result.evaluations == f.calls == 300
    for x in f.xs:
        assert (x >= lo).all() and (x <= hi).all()
    constrained_min = float(((np.clip(target, lo, hi) - target) ** 2).sum())
    assert result.initial_value - constrained_min > 50 * (result.value - constrained_min)
    assert result.value < f.values[0]


def test_sign_descent_takes_steps_of_exactly_eps():
    f = Recorder(quadratic(np.full(SHAPE, 100.0, np.float32)))
    minimize(f, np.zeros(SHAPE, np.float32), method="sign", iters=4, lr=0.5)
    for k, x in enumerate(f.xs):
        np.testing.assert_array_equal(x, np.full(SHAPE, 0.5 * k, np.float32))


def test_adam_first_step_moves_every_pixel_by_lr():
    # With bias correction, Adam's first step is lr * g / (|g| + eps) = lr * sign(g) up to eps.
    f = Recorder(quadratic(per_channel_target()))
    minimize(f, np.zeros(SHAPE, np.float32), method="adam", iters=2, lr=0.25)
    np.testing.assert_allclose(f.xs[1], 0.25 * np.sign(per_channel_target()), rtol=1e-5)


# ------------------------------------------------------------------------------------------ callback

@pytest.mark.parametrize("method", METHODS)
def test_callback_once_per_iteration_without_extra_evaluations(method):
    target = per_channel_target()
    plain = Recorder(quadratic(target))
    minimize(plain, np.zeros(SHAPE, np.float32), method=method, iters=12, bounds=BOX)

    watched = Recorder(quadratic(target))
    infos = []

    def callback(info):
        infos.append(dict(info, x=np.array(info["x"], copy=True)))
        return {"note": info["iteration"]}

    result = minimize(watched, np.zeros(SHAPE, np.float32), method=method, iters=12, bounds=BOX,
                      callback=callback)
    assert watched.calls == plain.calls == result.evaluations
    assert len(infos) == result.iterations == len(result.history)
    assert [i["iteration"] for i in infos] == list(range(1, len(infos) + 1))
    assert [h["note"] for h in result.history] == [i["iteration"] for i in infos]
    for info in infos:
        # "x" is a point the objective evaluated, and "value" is what it returned there.
        matches = [v for x, v in zip(watched.xs, watched.values) if np.array_equal(x, info["x"])]
        assert matches and info["value"] == matches[-1]
        assert info["best_value"] <= info["value"]
    assert np.all(np.diff([i["evaluations"] for i in infos]) >= 0)
    assert np.all(np.diff([i["seconds"] for i in infos]) >= 0)


@pytest.mark.parametrize("method", METHODS)
def test_callback_returning_true_stops_early(method):
    f = Recorder(rosenbrock)
    result = minimize(f, np.array([-1.2, 1.0]), method=method, iters=100, lr=1e-3,
                      callback=lambda info: info["iteration"] == 3)
    assert result.stopped == "callback" and result.iterations == 3 and len(result.history) == 3
    assert result.evaluations == f.calls


def test_parts_go_into_history_and_the_callback_info():
    target = per_channel_target()
    infos = []
    result = minimize(quadratic(target), np.zeros(SHAPE, np.float32), method="lbfgs", iters=5,
                      parts=lambda x: {"content": float(x.sum()), "style": 1.0, "tv": 2.0},
                      callback=infos.append)
    assert all({"content", "style", "tv"} <= set(h) for h in result.history)
    assert [i["content"] for i in infos] == [h["content"] for h in result.history]
    assert infos[-1]["content"] == pytest.approx(float(infos[-1]["x"].sum()))


# ---------------------------------------------------------------------------------- reproducibility

@pytest.mark.parametrize("method", METHODS)
def test_same_inputs_and_seed_give_bit_identical_results(method):
    content = per_channel_target()
    runs = []
    for _ in range(2):
        x0 = initial_image("noise", content, content, seed=7, bounds=BOX)
        runs.append(minimize(quadratic(content), x0, method=method, iters=20, bounds=BOX, seed=7))
    np.testing.assert_array_equal(runs[0].x, runs[1].x)
    assert [h["value"] for h in runs[0].history] == [h["value"] for h in runs[1].history]


def test_noise_init_depends_on_the_seed_only():
    content = per_channel_target()
    a = initial_image("noise", content, content, seed=1, bounds=BOX)
    b = initial_image("noise", content, content, seed=1, bounds=BOX)
    c = initial_image("noise", content, content, seed=2, bounds=BOX)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    d = initial_image("content+noise", content, content, seed=1, bounds=BOX)
    e = initial_image("content+noise", content, content, seed=2, bounds=BOX)
    assert not np.array_equal(d, e)


# ------------------------------------------------------------------------------------ initial image

def test_noise_init_is_white_noise_filling_the_box():
    content = np.zeros((3, 64, 64), np.float32)
    lo, hi = np.array([-100.0, -120.0, -125.0]), np.array([150.0, 140.0, 130.0])
    x = initial_image("noise", content, content, seed=0, bounds=(lo.reshape(3, 1, 1), hi.reshape(3, 1, 1)))
    assert x.dtype == np.float32 and x.shape == content.shape
    for c in range(3):
        assert x[c].min() >= lo[c] and x[c].max() <= hi[c]
        # uniform over [lo, hi]: mean in the middle, spread (hi - lo) / sqrt(12)
        assert abs(x[c].mean() - (lo[c] + hi[c]) / 2) < 0.05 * (hi[c] - lo[c])
        assert abs(x[c].std() - (hi[c] - lo[c]) / np.sqrt(12)) < 0.05 * (hi[c] - lo[c])
    # white: neighbouring pixels uncorrelated
    flat = x[0] - x[0].mean()
    assert abs((flat[:, 1:] * flat[:, :-1]).mean() / flat.var()) < 0.1


def test_content_and_content_plus_noise_inits():
    content = per_channel_target()
    x = initial_image("content", content, None)
    np.testing.assert_array_equal(x, content)
    assert x is not content
    y = initial_image("content+noise", content, None, seed=3, bounds=BOX)
    lo, hi = (np.broadcast_to(b, SHAPE) for b in BOX)
    assert (y >= lo.astype(np.float32)).all() and (y <= hi.astype(np.float32)).all()
    assert not np.array_equal(y, np.clip(content, lo, hi).astype(np.float32))


def test_style_init_is_the_style_resized_to_the_content():
    content = np.zeros((3, 6, 8), np.float32)
    style = np.stack([np.full((11, 13), v, np.float32) for v in (1.0, -2.0, 3.5)])
    x = initial_image("style", content, style)
    assert x.shape == content.shape and x.dtype == np.float32
    np.testing.assert_allclose(x, np.broadcast_to(np.array([1.0, -2.0, 3.5]).reshape(3, 1, 1), x.shape),
                               rtol=1e-6)


def test_file_init_and_its_errors():
    content = per_channel_target()
    other = content[::-1].copy()
    np.testing.assert_array_equal(initial_image("file", content, None, file_array=other), other)
    np.testing.assert_array_equal(initial_image("my.png", content, None, file_array=other), other)
    with pytest.raises(InputError, match="shape"):
        initial_image("file", content, None, file_array=np.zeros((3, 2, 2), np.float32))
    with pytest.raises(InputError, match="content, noise, content\\+noise, style"):
        initial_image("plasma", content, None)


def test_resize_bilinear():
    img = np.random.default_rng(0).random((3, 5, 7))
    np.testing.assert_allclose(resize_bilinear(img, 5, 7), img)
    # A linear ramp along x stays linear (in the interior, away from the clamped edges) when upsampled 2x.
    ramp = np.broadcast_to(np.arange(8.0), (1, 4, 8))
    up = resize_bilinear(ramp, 8, 16)
    expected = (np.arange(16) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(up[0, 3, 1:-1], expected[1:-1])


# ------------------------------------------------------------------------------ arguments, progress

@pytest.mark.parametrize("kwargs, match", [
    ({"method": "newton"}, "lbfgs, adam, sgd, sign"),
    ({"iters": 0}, "positive integer"),
    ({"iters": 2.5}, "positive integer"),
    ({"method": "adam", "lr": float("nan")}, "learning rate"),
    ({"method": "sgd", "lr": -1.0}, "learning rate"),
    ({"bounds": (np.ones((2, 1, 1)), 2.0)}, "broadcast"),
    ({"bounds": (1.0, -1.0)}, "lo <= hi"),
])
def test_bad_arguments_raise_input_error(kwargs, match):
    with pytest.raises(InputError, match=match):
        minimize(quadratic(per_channel_target()), np.zeros(SHAPE, np.float32), **kwargs)


def test_progress_is_silent_off_a_terminal_and_shows_loss_parts_when_forced():
    quiet = io.StringIO()
    with make_progress(3, file=quiet) as bar:
        bar({"iteration": 1, "value": 5.0, "seconds": 0.5})
    assert quiet.getvalue() == ""

    shown = io.StringIO()
    with make_progress(3, force=True, file=shown) as bar:
        minimize(quadratic(per_channel_target()), np.zeros(SHAPE, np.float32), method="adam", iters=3,
                 parts=lambda x: {"total": 1.5, "content": 0.25, "style": 1.0, "tv": 0.25}, callback=bar)
    text = shown.getvalue()
    for piece in ("3/3", "loss=1.5", "content=0.25", "style=1", "tv=0.25", "s/it="):
        assert piece in text


# ------------------------------------------------------------------------------------------------ GPU

@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
def test_cupy_runs_match_the_start_of_numpy_and_stay_on_the_device(method):
    cp = pytest.importorskip("cupy")
    from handnst.backend import gpu_available
    if not gpu_available():
        pytest.skip("no CUDA device")
    content = per_channel_target()
    x0_cpu = initial_image("noise", content, content, seed=4, bounds=BOX)
    x0_gpu = initial_image("noise", cp.asarray(content), None, seed=4, bounds=BOX)
    np.testing.assert_array_equal(cp.asnumpy(x0_gpu), x0_cpu)
    result = minimize(quadratic(cp.asarray(content)), x0_gpu, method=method, iters=30, bounds=BOX)
    assert isinstance(result.x, cp.ndarray) and result.x.dtype == cp.float32
    cpu = minimize(quadratic(content), x0_cpu, method=method, iters=30, bounds=BOX)
    np.testing.assert_allclose(cp.asnumpy(result.x), cpu.x, atol=1e-3)
