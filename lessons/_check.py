"""Check helpers shared by the lessons: compare your code with the project's and with finite differences.

Every check prints one line, `PASS name (max rel error ...)`, or raises AssertionError with a `FAIL`
line, so that a notebook executed top to bottom (by you, or by the test suite) stops at the first
piece that is wrong instead of drawing pretty pictures from a broken gradient.

The relative error of two arrays is the largest |a - b| / max(|a|, |b|) over their entries, with a
small floor `tiny` under the denominator so that two numbers that are both zero up to rounding do not
count as a failure. In float64 a correct implementation sits around 1e-10 or below; a wrong one is
usually 1e-1 or worse. There is rarely anything in between.
"""

import numpy as np

from handnst import gradcheck


def _max_rel_error(got, expected, tiny):
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        raise AssertionError(f"FAIL shape mismatch: got {got.shape}, expected {expected.shape}")
    if got.size == 0:
        return 0.0
    return float(np.max(gradcheck.rel_error(got, expected, tiny)))


def _verdict(name, err, tol, against):
    """Print the PASS line and return err, or print the FAIL line and raise AssertionError."""
    if not np.isfinite(err) or err > tol:
        message = f"FAIL {name} (max rel error {err:.2e}{against} > tolerance {tol:.0e})"
        print(message)
        raise AssertionError(message)
    print(f"PASS {name} (max rel error {err:.2e}{against}, tolerance {tol:.0e})")
    return err


def check_close(name, got, expected, tol=1e-8, tiny=1e-12):
    """PASS when every entry of `got` matches `expected` to relative error `tol`; else AssertionError.

    `tiny` is the floor of the denominator: entries whose magnitude is below it are compared in
    absolute terms (useful for gradients that are exactly zero where a ReLU is off).
    """
    try:
        err = _max_rel_error(got, expected, tiny)
    except AssertionError as exc:
        print(f"{exc}  [{name}]")
        raise
    return _verdict(name, err, tol, "")


def check_gradient(name, f, x, grad, tol=1e-6, **kw):
    """PASS when `grad` agrees with central finite differences of the scalar function f at x.

    f(x) must return a Python float; x should be float64 (finite differences in float32 are noise).
    Extra keywords (entries, directions, h, seed) go to handnst.gradcheck.check_gradient.
    """
    return _verdict(name, gradcheck.check_gradient(f, x, grad, **kw), tol, " against finite differences")


def check_layer_gradient(name, forward, backward, x, tol=1e-6, seed=0, **kw):
    """Gradient check for a layer with an array output, the way Chainer's check_backward does it.

    The layer's output y = forward(x) is turned into a scalar with a fixed random array r,
    f(x) = sum(y * r), whose exact gradient is backward(r): the upstream gradient is r itself.
    `forward(x)` returns the output array; `backward(r)` returns dL/dx for upstream gradient r.
    """
    y = forward(x)
    r = np.random.default_rng(seed + 1).normal(size=np.shape(y))
    return check_gradient(name, lambda z: float(np.sum(forward(z) * r)), x, backward(r), tol, seed=seed, **kw)
