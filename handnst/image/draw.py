"""Pictures the project draws itself: the labelled grid of the paper's Figure 3, and the bundled
procedural style picture."""

import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from handnst.errors import InputError
from handnst.image.io import load_image


# ------------------------------------------------------------------------------------------ the grid

def make_grid(images, row_labels, col_labels, title=None, padding=8, background=(255, 255, 255)):
    """Compose images into one labelled grid (the layout of the paper's Figure 3).

    `images` is a list of rows (each a list of images, paths or arrays), or a flat list of
    len(row_labels) * len(col_labels) images in row-major order. Row labels go on the left, column
    labels on top, the optional title above everything; labels may contain newlines. Cells of
    different sizes are centred in a cell as large as the largest image.
    """
    row_labels = [str(r) for r in row_labels]
    col_labels = [str(c) for c in col_labels]
    n_rows, n_cols = len(row_labels), len(col_labels)
    images = list(images)
    if images and not isinstance(images[0], (list, tuple)):
        if len(images) != n_rows * n_cols:
            raise InputError(f"make_grid got {len(images)} images for {n_rows} rows x {n_cols} columns")
        images = [images[r * n_cols:(r + 1) * n_cols] for r in range(n_rows)]
    if len(images) != n_rows or any(len(row) != n_cols for row in images):
        raise InputError(f"make_grid needs {n_rows} rows of {n_cols} images, one per row and column label")
    cells = [[load_image(img) for img in row] for row in images]
    cell_w = max((c.width for row in cells for c in row), default=1)
    cell_h = max((c.height for row in cells for c in row), default=1)

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text):
        left, top, right, bottom = measure.multiline_textbbox((0, 0), text, font=font)
        return right - left, bottom - top, left, top

    label_w = max((text_size(t)[0] for t in row_labels), default=0)
    header_h = max((text_size(t)[1] for t in col_labels), default=0)
    title_h = text_size(title)[1] + padding if title else 0
    left0 = padding + label_w + (padding if label_w else 0)
    top0 = padding + title_h + header_h + (padding if header_h else 0)
    width = left0 + n_cols * cell_w + (n_cols - 1) * padding + padding
    height = top0 + n_rows * cell_h + (n_rows - 1) * padding + padding
    width = max(width, padding * 2 + (text_size(title)[0] if title else 0))

    grid = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(grid)
    ink = (0, 0, 0)

    def put_text(x, y, text):
        # Shift by the bbox offset, so that (x, y) is where the ink starts.
        _, _, left, top = text_size(text)
        draw.multiline_text((x - left, y - top), text, fill=ink, font=font)

    if title:
        tw = text_size(title)[0]
        put_text((width - tw) // 2, padding, title)
    for c, label in enumerate(col_labels):
        tw, th, _, _ = text_size(label)
        x = left0 + c * (cell_w + padding) + (cell_w - tw) // 2
        put_text(x, padding + title_h + (header_h - th), label)
    for r, label in enumerate(row_labels):
        tw, th, _, _ = text_size(label)
        y = top0 + r * (cell_h + padding) + (cell_h - th) // 2
        put_text(padding + (label_w - tw), y, label)
        for c, cell in enumerate(cells[r]):
            x = left0 + c * (cell_w + padding) + (cell_w - cell.width) // 2
            y_cell = top0 + r * (cell_h + padding) + (cell_h - cell.height) // 2
            grid.paste(cell, (x, y_cell))
    return grid


# ------------------------------------------------------------------- the bundled style image

# A bold palette after Van Gogh's night skies: ultramarine, cobalt, Prussian blue, teal, chrome yellow,
# orange, cream, and a deep navy for the shadows.
_PALETTE = [
    (22, 44, 110), (35, 78, 170), (62, 120, 200), (20, 110, 130), (110, 170, 210),
    (245, 200, 40), (240, 140, 30), (250, 235, 170), (12, 20, 50), (200, 60, 40),
]


def make_style_image(size=(384, 288), seed=0):
    """A deterministic, colourful "painting": thick curved brush strokes following a swirling flow field.

    The picture is made of many short polylines that follow the streamlines of a vector field built
    from a few vortices (the swirls) on top of a gentle wave. Strokes are drawn in layers, wide and
    dark first, then narrower and brighter, each with a darker rim, so the result has the strong,
    oriented, multi-scale texture that makes style transfer clearly visible. It is drawn at twice the
    size and downsampled (anti-aliasing). Only `random.Random(seed).random()` is used, whose sequence
    Python guarantees across versions, so the same seed gives the same picture everywhere.
    """
    width, height = int(size[0]), int(size[1])
    if width <= 0 or height <= 0:
        raise InputError(f"the style image size must be two positive integers, not {size!r}")
    rng = random.Random(seed)
    uniform = lambda lo, hi: lo + (hi - lo) * rng.random()  # noqa: E731 (only .random() is guaranteed)
    pick = lambda seq: seq[min(int(rng.random() * len(seq)), len(seq) - 1)]  # noqa: E731

    up = 2  # supersampling factor
    W, H = width * up, height * up
    diag = math.hypot(W, H)
    # Stroke widths and lengths are designed for 384 x 288 and scale with the picture (the number of
    # strokes stays, so the canvas stays covered), so a small version is a small copy of the painting.
    zoom = math.sqrt(width * height / (384 * 288))

    # Vortices: centre, strength (sign = turning direction) and radius of influence.
    vortices = [(uniform(0.1, 0.9) * W, uniform(0.1, 0.9) * H,
                 pick((-1, 1)) * uniform(0.8, 1.6), uniform(0.12, 0.3) * diag) for _ in range(5)]
    wave_phase = uniform(0, 2 * math.pi)

    def flow(x, y):
        """Unit direction of the flow at (x, y): a rightward wave plus the swirl of each vortex."""
        vx = 1.0
        vy = 0.6 * math.sin(2 * math.pi * x / W * 1.5 + wave_phase) + 0.4 * math.cos(2 * math.pi * y / H * 2)
        for cx, cy, strength, radius in vortices:
            dx, dy = x - cx, y - cy
            falloff = strength * math.exp(-(dx * dx + dy * dy) / (radius * radius)) * diag / (math.hypot(dx, dy) + 1.0)
            vx += -dy / diag * falloff * 4
            vy += dx / diag * falloff * 4
        norm = math.hypot(vx, vy) or 1.0
        return vx / norm, vy / norm

    def region_palette(x, y):
        """Warm colours near the vortex centres (the 'stars'), cool blues elsewhere."""
        near = min(math.hypot(x - cx, y - cy) / radius for cx, cy, _, radius in vortices)
        if near < 0.25:
            return _PALETTE[5:8]
        if y > 0.78 * H:
            return [_PALETTE[0], _PALETTE[3], _PALETTE[8], _PALETTE[9]]
        return _PALETTE[0:5] + [_PALETTE[7]]

    def jitter(colour, amount):
        return tuple(max(0, min(255, int(c + uniform(-amount, amount)))) for c in colour)

    # Under-painting: a vertical gradient from navy to cobalt to teal.
    canvas = Image.new("RGB", (W, H))
    rows = np.linspace(0, 1, H)[:, None]
    top, mid, bottom = np.array(_PALETTE[8]), np.array(_PALETTE[1]), np.array(_PALETTE[3])
    gradient = np.where(rows < 0.5, top + (mid - top) * rows * 2, mid + (bottom - mid) * (rows - 0.5) * 2)
    canvas.paste(Image.fromarray(np.repeat(gradient[:, None, :], W, axis=1).astype(np.uint8)))
    draw = ImageDraw.Draw(canvas)

    # Layers: (number of strokes, stroke width, steps, step length, colour jitter).
    layers = [(500, 18, 14, 7, 25), (900, 11, 12, 6, 30), (1100, 6, 10, 5, 35)]
    for count, stroke_width, steps, step, amount in layers:
        stroke_width = max(1, round(stroke_width * zoom))
        step = step * zoom
        rim_extra = max(1, round(4 * zoom))
        for _ in range(count):
            x, y = uniform(-0.05, 1.05) * W, uniform(-0.05, 1.05) * H
            points = [(x, y)]
            for _ in range(steps):
                dx, dy = flow(x, y)
                x, y = x + dx * step * up, y + dy * step * up
                points.append((x, y))
            colour = jitter(pick(region_palette(*points[len(points) // 2])), amount)
            rim = tuple(int(c * 0.55) for c in colour)
            draw.line(points, fill=rim, width=stroke_width + rim_extra, joint="curve")
            draw.line(points, fill=colour, width=stroke_width, joint="curve")
    return canvas.resize((width, height), Image.Resampling.LANCZOS)
