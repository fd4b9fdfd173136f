"""Resizing arrays of pixels (not files: those are resized with Pillow in io.py)."""

import numpy as np


def resize_bilinear(image, height, width):
    """Bilinear resize of a host array (C, h, w) -> (C, height, width), pixel centres aligned.

    Output pixel i samples the input at (i + 0.5) * h / height - 0.5 (the convention of Pillow and
    OpenCV), clamped to the edge, interpolated linearly between the two nearest rows, then the two
    nearest columns. There is no anti-aliasing filter: fine for an initial image, which the optimizer
    reshapes anyway (the image module resizes real inputs with LANCZOS).
    """
    image = np.asarray(image, dtype=np.float64)
    _, h, w = image.shape

    def taps(n_in, n_out):
        pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        i0 = np.floor(pos).astype(np.intp)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, pos - i0

    r0, r1, wr = taps(h, height)
    c0, c1, wc = taps(w, width)
    rows = image[:, r0, :] * (1 - wr)[None, :, None] + image[:, r1, :] * wr[None, :, None]
    return rows[:, :, c0] * (1 - wc) + rows[:, :, c1] * wc
