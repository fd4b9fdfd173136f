"""Backend parametrization shared by the core tests: NumPy always, CuPy where a GPU can be used."""

import functools

import pytest

from handnst.backend import gpu_available
from handnst.networks.vgg import random_vgg19

_GPU = gpu_available()
BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("cupy", id="cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not _GPU, reason="CuPy with a CUDA device is not available on this machine")]),
]


@functools.lru_cache(maxsize=None)
def random_net(seed=0, pooling="avg", dtype="float64", backend="numpy"):
    """A random-weight VGG19 shared by the tests that only read it (building one takes a second)."""
    return random_vgg19(seed, pooling=pooling, dtype=dtype, backend=backend)
