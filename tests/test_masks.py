"""Region masks from files: greyscale weights, colour keys, resizing, and clear errors."""

import numpy as np
import pytest
from PIL import Image

from handnst.image import masks
from handnst.errors import InputError


def test_greyscale_and_colour_keyed_masks(tmp_path):
    grey = np.zeros((6, 8), dtype=np.uint8)
    grey[:, 4:] = 255
    grey[:, 3] = 128
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    m = masks.load_mask(tmp_path / "g.png")
    assert m.shape == (6, 8) and m[0, 0] == 0 and m[0, 7] == pytest.approx(1.0) and m[0, 3] == pytest.approx(128 / 255, abs=1e-3)

    labels = np.zeros((6, 8, 3), dtype=np.uint8)
    labels[:3] = (0x33, 0x66, 0xff)
    labels[3:] = (0xff, 0x00, 0x00)
    labels[5, 7] = (0x38, 0x60, 0xf8)          # within the tolerance of #3366ff, as JPEG would leave it
    Image.fromarray(labels, "RGB").save(tmp_path / "l.png")
    sky = masks.load_mask(f"{tmp_path / 'l.png'}#3366FF")
    ground = masks.load_mask(f"{tmp_path / 'l.png'}#ff0000")
    assert sky[:3].all() and not sky[3:5].any() and sky[5, 7] == 1
    assert (sky + ground)[:5].min() == 1
    assert masks.split_color_key("a#b.png") == ("a#b.png", None)


def test_masks_are_resized_to_the_picture(tmp_path):
    m = np.zeros((40, 60))
    m[:, 30:] = 1.0
    small = masks.resize_mask(m, (15, 10))
    assert small.shape == (10, 15) and small.min() >= 0 and small.max() <= 1
    assert small[:, :7].max() < 0.01 and small[:, 8:].min() > 0.99
    assert masks.resize_mask(m, (60, 40)) is not None and masks.resize_mask(m, (120, 80)).shape == (80, 120)


def test_mask_errors(tmp_path):
    with pytest.raises(InputError, match="sky mask: .*does not exist|sky mask: .*not found|sky mask: .*no such"):
        masks.load_mask(tmp_path / "missing.png", what="sky mask")
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8), "RGB").save(tmp_path / "black.png")
    with pytest.raises(InputError, match="no pixel of .*black.png has the colour #ff0000"):
        masks.load_mask(f"{tmp_path / 'black.png'}#ff0000")
