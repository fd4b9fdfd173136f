"""The options of the style-transfer runs: their defaults and their validation.

Every option is checked here, before a weight is loaded or a pixel decoded, so that a typo costs
nothing. The messages say what was wrong and what would be right.
"""

import math
import os

import numpy as np

from handnst.backend import canonical_backend, get_xp
from handnst.errors import InputError
from handnst.image import INIT_KINDS
from handnst.losses import DEFAULT_STYLE_LAYERS
from handnst.networks.vgg import POOLINGS, canonical_layer, min_image_size, scale_of
from handnst.optimize import METHODS


# ------------------------------------------------------------------------------------------ defaults
#
# Chosen from experiments with the real VGG19 weights (see the README, "Choosing the weights"):
# starting from the content image at 256 pixels, alpha = 1 and beta = 5e3 give a clearly stylized
# picture in which the content stays recognizable, well within 300 L-BFGS-B iterations (most of the
# change happens in the first 100); beta = 1e3 stays close to the photograph, and beta around 1e4
# starts to paint the subject away. The balance depends on the size: the content loss sums over
# the M positions of conv4_2 while the style loss is normalised by M^2, so at twice the side (4x the
# pixels) the same look needs about 4x the style weight.
DEFAULT_SIZE = 256
DEFAULT_ITERS = 300
DEFAULT_INIT = "content"
DEFAULT_CONTENT_WEIGHT = 1.0
DEFAULT_STYLE_WEIGHT = 5e3
DEFAULT_TV_WEIGHT = 0.0          # the paper has no TV term
DEFAULT_TV_EXPONENT = 2.0
DEFAULT_POOLING = "avg"          # the paper: "replacing the max-pooling by average pooling improves the gradient flow"
DEFAULT_OPTIMIZER = "lbfgs"
DEFAULT_DEVICE = "cpu"
DEFAULT_SEED = 0

# The paper's Figure 3: rows add one block's first convolution at a time, columns are alpha/beta.
GRID_LAYER_SETS = tuple(DEFAULT_STYLE_LAYERS[:k] for k in range(1, len(DEFAULT_STYLE_LAYERS) + 1))
GRID_RATIOS = (1e-5, 1e-4, 1e-3, 1e-2)


def _positive_int(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive whole number, not {value!r}")
    return int(value)


def _number(name, value, *, positive=False, allow_none=False):
    if value is None and allow_none:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, not {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v):
        raise InputError(f"{name} must be a finite number, not {value!r}")
    if v < 0 or (positive and v == 0):
        raise InputError(f"{name} must be {'greater than 0' if positive else 'at least 0'}, not {value!r}")
    return v


def _layers(name, layers, allow_empty=False):
    if isinstance(layers, str):
        layers = [layers]
    out = tuple(dict.fromkeys(canonical_layer(n) for n in layers))
    if not out and not allow_empty:
        raise InputError(f"give at least one {name} layer, e.g. conv4_2")
    return out


def _weights_list(name, weights, count, what):
    if weights is None:
        return None
    if isinstance(weights, (int, float)):
        weights = [weights]
    weights = [_number(f"each {name}", w) for w in weights]
    if len(weights) != count:
        raise InputError(f"{len(weights)} {name}s given for {count} {what}: give exactly one per {what[:-1]}")
    if sum(weights) <= 0:
        raise InputError(f"the {name}s must not all be 0")
    return weights


def _init_kind(init):
    """'content', 'noise', ... or a path: (kind, path or None). A path must be a readable file."""
    if init is None:
        return DEFAULT_INIT, None
    if not isinstance(init, (str, os.PathLike)):
        raise InputError(f"init must be one of {', '.join(k for k in INIT_KINDS if k != 'file')} "
                         f"or an image path, not {type(init).__name__}")
    text = os.fspath(init)
    if text in INIT_KINDS and text != "file":
        return text, None
    if not os.path.exists(text):
        raise InputError(f"--init {text!r} is neither one of {', '.join(k for k in INIT_KINDS if k != 'file')} "
                         "nor an existing image file; check the spelling or the path")
    return "file", text


def _check_device(device):
    backend = canonical_backend(device)
    get_xp(backend)  # on 'gpu' without CuPy or a device: one clear InputError, before any work
    return backend


def _describe_input(obj):
    if isinstance(obj, (str, os.PathLike)):
        return os.fspath(obj)
    return f"<{type(obj).__name__}>"


def check_min_size(img_size, layers, what, size_option="--size"):
    """InputError when an image (width, height) is too small for the deepest layer, saying the minimum."""
    if not layers:
        return
    width, height = img_size
    need = min_image_size(layers)
    if min(width, height) >= need:
        return
    deepest = max(layers, key=scale_of)
    poolings = int(math.log2(need))
    needed_longer = math.ceil(need * max(width, height) / min(width, height))
    raise InputError(
        f"the {what} image is {width}x{height} pixels but layer {deepest} needs at least {need}x{need}: "
        f"it sees the image through {poolings} poolings, each halving it; use {size_option} "
        f"{needed_longer} or more, or shallower layers")


def _common_options(*, iters, init, seed, content_weight, style_weight, tv_weight, tv_exponent, pooling,
                    optimizer, lr, device, weights):
    """Validate the options every command shares; return them as a dict (device checked last)."""
    if optimizer not in METHODS:
        raise InputError(f"unknown optimizer {optimizer!r}: use one of {', '.join(METHODS)}")
    if pooling not in POOLINGS:
        raise InputError(f"unknown pooling {pooling!r}: use 'avg' (the paper's choice) or 'max'")
    kind, init_path = _init_kind(init)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"the seed must be a whole number >= 0, not {seed!r}")
    opts = {
        "iters": _positive_int("the number of iterations", iters),
        "init": init_path if init_path is not None else kind,
        "init_kind": kind,
        "seed": int(seed),
        "content_weight": _number("the content weight", content_weight),
        "style_weight": _number("the style weight", style_weight),
        "tv_weight": _number("the total-variation weight", tv_weight),
        "tv_exponent": _number("the total-variation exponent", tv_exponent, positive=True),
        "pooling": pooling,
        "optimizer": optimizer,
        "lr": _number("the learning rate", lr, positive=True, allow_none=True),
    }
    if opts["tv_exponent"] < 1:
        raise InputError(f"the total-variation exponent must be at least 1 (2 is usual), not {tv_exponent!r}")
    if weights is not None:
        from handnst.weights import find_weights
        opts["weights"] = find_weights(weights)   # a named file that does not exist: a clear error now
    else:
        opts["weights"] = None
    opts["device"] = "gpu" if canonical_backend(device) == "cupy" else "cpu"
    opts["device_backend"] = _check_device(device)
    return opts
