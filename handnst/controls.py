"""Gatys et al.'s perceptual controls, prepared for a run: colour, space and scale.

"Controlling Perceptual Factors in Neural Style Transfer" (Gatys, Ecker, Bethge, Hertzmann &
Shechtman, CVPR 2017) separates three things a painting's style mixes together:

  colour   color_control="luminance": transfer on luminance only and put the photograph's colours
           back (section 5.1; the 2016 note's --preserve-color). color_control="histogram": recolour
           the style image to the photograph's colour mean and covariance before the run (section
           5.2; image.color_match, with method chol, pca or sym).
  space    regions: each region of the photograph (a mask) takes its style from its own image, or
           from the masked part of it (section 4; the guided Gram matrices of losses.py).
  scale    style_scale: the style image at F times the content's size. The network's receptive
           fields are fixed in pixels, so a larger style image gives larger brush strokes and motifs
           in the picture (section 6). Its Gram matrices are then taken per position
           (StyleTransferLoss's targets_per_position): the paper's sums over the style's positions
           would also make a larger style count for more, which is not what the scale should change.

Everything here runs on the host, on PIL images and masks, before the network exists: the run then
sees ordinary (content, style) pictures, or guided regions.
"""

import numpy as np

from handnst import image as _image
from handnst.errors import InputError
from handnst.image.color_match import METHODS as COLOR_MATCH_METHODS
from handnst.losses import check_region_masks

COLOR_CONTROLS = ("luminance", "histogram")
DEFAULT_COLOR_MATCH = "sym"


def check_color_options(preserve_color=False, color_control=None, color_match=None):
    """(control, method): control None, "luminance" or "histogram"; method set only for "histogram".

    preserve_color=True is the older name of color_control="luminance".
    """
    if color_control is not None and color_control not in COLOR_CONTROLS:
        raise InputError(f"unknown colour control {color_control!r}: use {' or '.join(COLOR_CONTROLS)}")
    if preserve_color:
        if color_control not in (None, "luminance"):
            raise InputError("--preserve-color is --color-control luminance; it cannot be combined with "
                             f"--color-control {color_control}")
        color_control = "luminance"
    if color_match is not None:
        if color_match not in COLOR_MATCH_METHODS:
            raise InputError(f"unknown colour matching {color_match!r}: use one of {', '.join(COLOR_MATCH_METHODS)}")
        if color_control != "histogram":
            raise InputError("--color-match chooses how --color-control histogram maps the colours; "
                             "add --color-control histogram")
    if color_control == "histogram":
        return color_control, color_match or DEFAULT_COLOR_MATCH
    return color_control, None


def apply_color_control(content_img, style_imgs, control, method=None):
    """(content, styles, colour_source) for the run, from host PIL images at full resolution.

    luminance: grey content, grey styles with the content's luminance mean and spread; the result's
    colours come back from colour_source (the original content) at the end.
    histogram: the styles recoloured to the content's colour statistics; nothing to restore.
    """
    if control == "luminance":
        return (_image.luminance_image(content_img), [_image.match_luminance(s, content_img) for s in style_imgs],
                content_img)
    if control == "histogram":
        return content_img, [_image.match_color_image(s, content_img, method) for s in style_imgs], None
    return content_img, list(style_imgs), None


def check_style_scale(style_scale, style_size):
    """The --style-scale factor as a float (None: not given); it replaces --style-size."""
    if style_scale is None:
        return None
    if style_size is not None:
        raise InputError("give --style-size or --style-scale, not both")
    try:
        f = float(style_scale)
    except (TypeError, ValueError):
        raise InputError(f"--style-scale must be a number, not {style_scale!r}") from None
    if not 0 < f < float("inf"):
        raise InputError(f"--style-scale must be a positive number (1 is the content's size), not {style_scale!r}")
    return f


def style_side(content_side, style_size=None, style_scale=None, final_side=None):
    """Longer side of the style image(s) at a level whose content has `content_side` pixels.

    style_scale: that factor times the content's side. style_size: that side at the final size
    (final_side), scaled with the content at smaller levels. Neither: the content's own side.
    """
    if style_scale is not None:
        return max(1, round(style_scale * content_side))
    if style_size is not None and final_side:
        return max(1, round(style_size * content_side / final_side))
    return style_size if style_size is not None else content_side


def check_regions(regions):
    """Regions as a list of (content_mask, style, style_mask or None): each a path ('mask.png' or a
    colour key 'labels.png#ff0000'), a PIL image or an array. Counts that do not pair are errors."""
    if regions is None:
        return None
    regions = list(regions)
    if not regions:
        raise InputError("--region was given an empty list: give CONTENT_MASK STYLE [STYLE_MASK]")
    out = []
    for i, r in enumerate(regions, 1):
        items = list(r) if isinstance(r, (list, tuple)) else [r]
        if len(items) not in (2, 3) or any(item is None for item in items[:2]):
            raise InputError(f"region {i} has {len(items)} item(s): each --region takes a content mask and a style "
                             "image, and optionally the style's own mask (CONTENT_MASK STYLE [STYLE_MASK])")
        out.append((items[0], items[1], items[2] if len(items) == 3 else None))
    return out


def load_region_masks(regions, content_size_wh):
    """The content masks at the content's (width, height), checked: none empty, all together covering
    every pixel. Masks are loaded from their files once per call (a run calls it once per level)."""
    masks = []
    for i, (spec, _, _) in enumerate(regions, 1):
        masks.append(_mask(spec, content_size_wh, f"the content mask of region {i}"))
    check_region_masks(masks, "content", cover=True,
                       labels=[f"the content mask of region {i}" for i in range(1, len(masks) + 1)])
    return masks


def load_style_mask(spec, style_size_wh, index):
    """The style mask of region `index` at its style image's (width, height), checked (not empty)."""
    if spec is None:
        return None
    mask = _mask(spec, style_size_wh, f"the style mask of region {index}")
    check_region_masks([mask], cover=False, labels=[f"the style mask of region {index}"])
    return mask


def _mask(spec, size_wh, what):
    """A mask given as a file spec, or as an (H, W) array of weights 0..1 (checked before resizing)."""
    if isinstance(spec, np.ndarray):
        check_region_masks([spec], cover=False, labels=[what])
        return _image.resize_mask(spec, size_wh)
    return _image.load_mask(spec, size_wh, what=what)


def level_images(content, styles, sides, content_masks=None, style_masks=None):
    """The pictures of every level of a run, from the final-size ones: for each longer side in
    `sides`, (content, styles, regions): the content at that side, every style scaled by the same
    factor (so it keeps its relation to the content), and, with masks, the regions as (content mask
    at the content's size, style, style mask at that style's size or None) triples."""
    final = max(content.size)
    out = []
    for side in sides:
        ratio = side / final
        c = content if side == final else _image.resize_longer(content, side)
        st = [s if side == final else _image.resize_longer(s, max(1, round(max(s.size) * ratio))) for s in styles]
        regions = None
        if content_masks is not None:
            regions = [(_image.resize_mask(m, c.size), s,
                        None if sm is None else _image.resize_mask(sm, s.size))
                       for m, s, sm in zip(content_masks, st, style_masks)]
        out.append((c, st, regions))
    return out


__all__ = ["level_images", "COLOR_CONTROLS", "DEFAULT_COLOR_MATCH", "check_color_options", "apply_color_control",
           "check_style_scale", "style_side", "check_regions", "load_region_masks", "load_style_mask"]
