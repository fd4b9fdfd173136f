"""Colour preservation (Gatys, Bethge, Hertzmann & Shechtman 2016, "Preserving colour in neural
artistic style transfer"): run the transfer on luminance only and put the content's chrominance back."""

import numpy as np
from PIL import Image

from handnst.errors import InputError
from handnst.image.io import load_image


# -------------------------------------------------------------------------------- colour preservation
#
# Gatys et al. (2016) keep the content's colours by transferring style on the *luminance* channel only.
# In the YIQ colour space (NTSC) Y is the luminance and I, Q carry the colour. The recipe:
#   1. content luminance:   luminance_image(content)
#   2. style luminance, matched to the content's statistics:  L_s' = sigma_c / sigma_s (L_s - mu_s) + mu_c
#      (match_luminance), so that a dark painting does not darken the photograph;
#   3. stylize 1. with 2. (a grey image replicated into 3 channels, as the network wants RGB);
#   4. combine the result's Y with the content's I and Q (restore_chrominance).

# Rows: Y, I, Q as combinations of R, G, B (the FCC NTSC definition).
RGB_TO_YIQ = np.array([
    [0.299, 0.587, 0.114],
    [0.595716, -0.274453, -0.321263],
    [0.211456, -0.522591, 0.311135],
])
# The exact inverse, not the rounded textbook matrix, so that the round trip is exact to float precision.
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)


def rgb_to_yiq(arr):
    """Float array (..., 3) of RGB in 0..1 -> (..., 3) of Y (0..1), I (about +-0.6), Q (about +-0.52)."""
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape[-1:] != (3,):
        raise InputError(f"rgb_to_yiq expects an array whose last axis has 3 channels, not shape {arr.shape}")
    return arr @ RGB_TO_YIQ.T


def yiq_to_rgb(arr):
    """Inverse of rgb_to_yiq: float (..., 3) YIQ -> RGB (not clipped; values may leave 0..1)."""
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape[-1:] != (3,):
        raise InputError(f"yiq_to_rgb expects an array whose last axis has 3 channels, not shape {arr.shape}")
    return arr @ YIQ_TO_RGB.T


def _rgb01(img):
    return np.asarray(load_image(img), dtype=np.float64) / 255.0


def _to_image01(rgb01):
    return Image.fromarray(np.clip(np.rint(rgb01 * 255.0), 0, 255).astype(np.uint8), "RGB")


def _gray_image01(y):
    return _to_image01(np.repeat(y[:, :, None], 3, axis=2))


def luminance_image(img):
    """The luminance Y of an image, replicated into 3 channels (a grey RGB image the network accepts)."""
    return _gray_image01(rgb_to_yiq(_rgb01(img))[:, :, 0])


def match_luminance(style_img, content_img):
    """The style's luminance, shifted and scaled to the content's luminance mean and standard deviation.

        L_s' = sigma_c / sigma_s * (L_s - mu_s) + mu_c      (Gatys et al. 2016, section 2.1)

    Returned as a grey RGB image (Y in all 3 channels). A flat style (sigma_s = 0) is only shifted.
    """
    y_style = rgb_to_yiq(_rgb01(style_img))[:, :, 0]
    y_content = rgb_to_yiq(_rgb01(content_img))[:, :, 0]
    mu_s, sigma_s = y_style.mean(), y_style.std()
    mu_c, sigma_c = y_content.mean(), y_content.std()
    gain = sigma_c / sigma_s if sigma_s > 0 else 0.0
    return _gray_image01(gain * (y_style - mu_s) + mu_c)


def restore_chrominance(stylized_img, content_img):
    """The stylized image's luminance Y with the content's chrominance I, Q: the content keeps its colours.

    The content is resized (LANCZOS) to the stylized image's size if they differ.
    """
    stylized = load_image(stylized_img)
    content = load_image(content_img)
    if content.size != stylized.size:
        content = content.resize(stylized.size, Image.Resampling.LANCZOS)
    yiq = rgb_to_yiq(_rgb01(content))
    yiq[:, :, 0] = rgb_to_yiq(_rgb01(stylized))[:, :, 0]
    return _to_image01(yiq_to_rgb(yiq))
