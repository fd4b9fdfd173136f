"""Colour matching (Gatys et al. 2017, section 5.2): every variant gives the style the content's colour
mean and covariance, and bad input is a clear error."""

import numpy as np
import pytest

from handnst.image import color_match
from handnst.errors import InputError


def pictures(seed=0):
    r = np.random.default_rng(seed)
    # Correlated colours with different means and spreads, well inside 0..1 so no clipping happens.
    mix_s = np.array([[0.10, 0.02, 0.00], [0.03, 0.08, 0.01], [0.00, 0.02, 0.05]])
    mix_c = np.array([[0.06, 0.00, 0.02], [0.01, 0.05, 0.00], [0.02, 0.01, 0.09]])
    style = np.array([0.3, 0.5, 0.6]) + r.normal(size=(20, 30, 3)) @ mix_s.T
    content = np.array([0.6, 0.4, 0.3]) + r.normal(size=(16, 12, 3)) @ mix_c.T
    return np.clip(style, 0, 1), np.clip(content, 0, 1)


@pytest.mark.parametrize("method", color_match.METHODS)
def test_matched_style_has_the_contents_mean_and_covariance(method):
    style, content = pictures()
    out = color_match.match_color(style, content, method, clip=False)
    assert out.shape == style.shape
    mu, cov = color_match.mean_and_covariance(out)
    mu_c, cov_c = color_match.mean_and_covariance(content)
    np.testing.assert_allclose(mu, mu_c, atol=1e-12)
    # A (Sigma_S + eps I) A^T = Sigma_C + eps I, so the style's own covariance comes out as
    # Sigma_C + eps (I - A A^T): off by at most a few eps, exactly that expression.
    A, _ = color_match.color_transform(color_match.mean_and_covariance(style), (mu_c, cov_c), method)
    np.testing.assert_allclose(cov, cov_c + color_match.EPS * (np.eye(3) - A @ A.T), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(cov, cov_c, atol=1e-4)


@pytest.mark.parametrize("method", color_match.METHODS)
def test_transform_solves_A_Sigma_S_A_T_equals_Sigma_C(method):
    style, content = pictures(1)
    s, c = color_match.mean_and_covariance(style), color_match.mean_and_covariance(content)
    A, b = color_match.color_transform(s, c, method)
    eye = color_match.EPS * np.eye(3)
    np.testing.assert_allclose(A @ (s[1] + eye) @ A.T, c[1] + eye, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(A @ s[0] + b, c[0], atol=1e-14)


def test_the_three_variants_differ_and_sym_is_the_identity_on_equal_statistics():
    style, content = pictures(2)
    outs = [color_match.match_color(style, content, m, clip=False) for m in color_match.METHODS]
    assert not np.allclose(outs[0], outs[2]) and not np.allclose(outs[1], outs[2])
    A, b = color_match.color_transform(color_match.mean_and_covariance(style),
                                       color_match.mean_and_covariance(style), "sym")
    np.testing.assert_allclose(A, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(b, 0, atol=1e-10)


def test_flat_images_stay_finite_and_results_are_clipped():
    flat = np.full((5, 6, 3), 0.5)
    _, content = pictures(3)
    for method in color_match.METHODS:
        out = color_match.match_color(flat, content, method)
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        np.testing.assert_allclose(out.reshape(-1, 3).mean(axis=0), content.reshape(-1, 3).mean(axis=0), atol=1e-12)


def test_bad_input_is_a_clear_error():
    style, content = pictures()
    with pytest.raises(InputError, match="unknown colour matching 'lab'.*chol, pca, sym"):
        color_match.match_color(style, content, "lab")
    with pytest.raises(InputError, match=r"\(H, W, 3\) RGB array"):
        color_match.match_color(style[:, :, :2], content)
