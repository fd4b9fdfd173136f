"""Colour matching: the style image's colours mapped onto the content's before the run.

Gatys, Ecker, Bethge, Hertzmann & Shechtman, "Controlling Perceptual Factors in Neural Style
Transfer" (CVPR 2017), section 5.2. Each pixel of the style image is an RGB vector p_S; a linear map

    p_S' = A p_S + b,        b = mu_C - A mu_S

gives the style the content's mean mu_C and, when A Sigma_S A^T = Sigma_C, the content's 3 x 3 colour
covariance Sigma_C. The painting's brush strokes and textures stay; its palette becomes the photograph's,
so the stylized picture keeps the photograph's colours while the Gram matrices still see the painting.

Many matrices A satisfy A Sigma_S A^T = Sigma_C (any A Q with Q orthogonal in the whitened space); the
three classic ones, `method=`:

    "chol"  A = L_C L_S^-1                        L L^T = Sigma, the Cholesky factors
    "pca"   A = Q_C D_C^1/2 D_S^-1/2 Q_S^T        Sigma = Q D Q^T, eigenvalues in decreasing order:
                                                  the style's k-th principal axis goes to the content's
    "sym"   A = Sigma_C^1/2 Sigma_S^-1/2          symmetric square roots (Image Analogies' matching):
                                                  of all solutions, the one closest to the identity

They differ in how they rotate the colours: "sym" moves them least and is the usual choice.

Check:  chol  L_C L_S^-1 L_S L_S^T L_S^-T L_C^T = L_C L_C^T = Sigma_C.
        pca   Q_C D_C^1/2 D_S^-1/2 (Q_S^T Q_S) D_S (Q_S^T Q_S) D_S^-1/2 D_C^1/2 Q_C^T = Q_C D_C Q_C^T.
        sym   Sigma_C^1/2 Sigma_S^-1/2 Sigma_S Sigma_S^-1/2 Sigma_C^1/2 = Sigma_C.

Everything here works on host float arrays of shape (H, W, 3) with values in 0..1 (the pictures are
small and this runs once per run, so there is nothing for a GPU to do); match_color_image wraps it for
pictures. A flat, single-colour image
has a singular covariance; EPS on the diagonal keeps every inverse finite.
"""

import numpy as np
from PIL import Image

from handnst.errors import InputError
from handnst.image.io import load_image

METHODS = ("chol", "pca", "sym")
# Added to the diagonal of both covariances (0..1 RGB: 1e-5 is a standard deviation of about 1/300,
# below one 8-bit step), so a flat or two-colour picture still gives a finite, well-defined map.
EPS = 1e-5


def _pixels(img, what):
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] * arr.shape[1] == 0:
        raise InputError(f"the {what} image for colour matching must be an (H, W, 3) RGB array, "
                         f"got shape {arr.shape}")
    return arr.reshape(-1, 3)


def mean_and_covariance(img):
    """mu (3,) and Sigma (3, 3) of an (H, W, 3) image's pixels (the population covariance, 1/n)."""
    p = _pixels(img, "input")
    mu = p.mean(axis=0)
    d = p - mu
    return mu, d.T @ d / p.shape[0]


def _eigh_decreasing(S):
    """S = Q diag(d) Q^T with d decreasing and each column of Q signed so its largest entry is positive
    (eigenvectors are defined up to sign; fixing it makes "pca" a deterministic map)."""
    d, Q = np.linalg.eigh(S)
    d, Q = d[::-1], Q[:, ::-1]
    signs = np.sign(Q[np.argmax(np.abs(Q), axis=0), np.arange(3)])
    return np.maximum(d, 0.0), Q * signs


def _sqrt_sym(S, inverse=False):
    """Symmetric square root S^1/2 (or S^-1/2) of a symmetric positive definite 3 x 3 matrix."""
    d, Q = _eigh_decreasing(S)
    root = np.sqrt(d)
    return (Q / root) @ Q.T if inverse else (Q * root) @ Q.T


def color_transform(style_stats, content_stats, method="sym"):
    """The (A, b) of p' = A p + b that gives the style's pixels the content's mean and covariance.

    style_stats, content_stats: (mu, Sigma) pairs from mean_and_covariance.
    """
    if method not in METHODS:
        raise InputError(f"unknown colour matching {method!r}: use one of {', '.join(METHODS)}")
    mu_s, cov_s = style_stats
    mu_c, cov_c = content_stats
    eye = np.eye(3)
    cov_s, cov_c = cov_s + EPS * eye, cov_c + EPS * eye
    if method == "chol":
        L_s, L_c = np.linalg.cholesky(cov_s), np.linalg.cholesky(cov_c)
        A = L_c @ np.linalg.inv(L_s)
    elif method == "pca":
        d_s, Q_s = _eigh_decreasing(cov_s)
        d_c, Q_c = _eigh_decreasing(cov_c)
        A = (Q_c * np.sqrt(d_c / d_s)) @ Q_s.T
    else:
        A = _sqrt_sym(cov_c) @ _sqrt_sym(cov_s, inverse=True)
    return A, mu_c - A @ mu_s


def match_color(style, content, method="sym", clip=True):
    """The style image (H, W, 3, 0..1) with the content's colour mean and covariance, same shape.

    The two images may have different sizes: only their colour statistics meet. With clip (the
    default) the result is clipped to 0..1, since the affine map can push a few saturated pixels
    outside the cube of valid colours; the statistics then hold up to that clipping.
    """
    style = np.asarray(style, dtype=np.float64)
    A, b = color_transform(mean_and_covariance(style), mean_and_covariance(content), method)
    out = (_pixels(style, "style") @ A.T + b).reshape(style.shape)
    return np.clip(out, 0.0, 1.0) if clip else out


def match_color_image(style_img, content_img, method="sym"):
    """match_color on pictures (paths, PIL images or arrays): the style, recoloured, as a PIL RGB image."""
    style = np.asarray(load_image(style_img), dtype=np.float64) / 255.0
    content = np.asarray(load_image(content_img), dtype=np.float64) / 255.0
    out = match_color(style, content, method)
    return Image.fromarray(np.rint(out * 255.0).astype(np.uint8), "RGB")


__all__ = ["METHODS", "mean_and_covariance", "color_transform", "match_color", "match_color_image"]
