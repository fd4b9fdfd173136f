"""The `handnst` command: a thin layer of argparse over the Python API.

Every failure a user can cause ends as one line on stderr, `handnst: error: ...`, and an exit code:
2 for bad usage or bad input, 1 for a failure while running, 130 for Ctrl-C. `--debug` shows the
traceback instead, for bug reports.
"""

import argparse
import math
import os
import sys

from handnst.errors import HandnstError, InputError, RunError, USAGE

EPILOG_MAIN = """\
examples:
  handnst demo                                  stylize the bundled sample images (first run fetches weights)
  handnst stylize photo.jpg painting.jpg -o out.png --size 256
  handnst weights fetch                         download and convert the pretrained VGG19 weights
  handnst gradcheck                             check every hand-written gradient against finite differences
  handnst bench --size 256x192                  time one objective evaluation against the machine's sgemm

Run `handnst COMMAND --help` for the options of each command.
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (no usage dump) with exit code 2."""

    def error(self, message):
        raise HandnstError(f"{self.prog}: {message} (see --help)", USAGE)


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def build_parser():
    parser = _Parser(
        prog="handnst",
        description="Neural style transfer (Gatys, Ecker & Bethge) with hand-written gradients on NumPy/CuPy.",
        epilog=EPILOG_MAIN,
        formatter_class=_formatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_demo_parser(sub)
    _add_stylize_parser(sub)
    _add_reconstruct_parser(sub)
    _add_texture_parser(sub)
    _add_grid_parser(sub)
    _add_weights_parser(sub)
    _add_gradcheck_parser(sub)
    _add_bench_parser(sub)
    return parser


# ----------------------------------------------------------------------------------------- weights

def _add_weights_parser(sub):
    p = sub.add_parser(
        "weights", help="fetch, convert and inspect the pretrained VGG19 weights",
        description="Manage the pretrained VGG19 weights in handnst's HDF5 format.",
        formatter_class=_formatter,
        epilog="examples:\n  handnst weights fetch\n  handnst weights info\n"
               "  handnst weights convert vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 -o weights/vgg19.h5\n",
    )
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION", parser_class=_Parser)
    from handnst import weights as _w
    _w.add_cli_arguments(wsub, _formatter)


def _cmd_weights(args):
    from handnst import weights as _w
    if not getattr(args, "weights_command", None):
        raise HandnstError("weights: choose an action: fetch, convert or info (see handnst weights --help)")
    return _w.run_cli(args)


# --------------------------------------------------------------------------------------- gradcheck

def _add_gradcheck_parser(sub):
    p = sub.add_parser(
        "gradcheck", help="check every hand-written backward pass against finite differences",
        description="Central finite differences in float64 for every layer (naive and fast), every loss\n"
                    "and the whole objective through VGG19 on small inputs.",
        formatter_class=_formatter,
        epilog="example:\n  handnst gradcheck --json report.json\n",
    )
    p.add_argument("--json", metavar="PATH", nargs="?", const="-",
                   help="also write the results as JSON (to PATH, or stdout with no PATH)")
    p.add_argument("--weights", metavar="PATH", help="VGG19 weights file (default: found automatically, "
                   "random weights when none is present)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"], help="backend to check (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="random seed for inputs and directions")


def _cmd_gradcheck(args):
    from handnst import gradcheck
    return gradcheck.run_cli(args)


# ------------------------------------------------------------------------------- shared helpers
#
# The style-transfer commands are thin: argparse turns the words into the Python API's options,
# checks everything it can before anything expensive runs (the output path can be written, numbers
# are positive and finite, layer names exist), then calls handnst.transfer and saves the result.

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text!r}")
    return value


def _nonnegative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, not {text!r}")
    return value


def _finite(text, positive=False):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    if value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(f"must be {'greater than 0' if positive else 'at least 0'}, not {text!r}")
    return value


def _nonnegative_float(text):
    return _finite(text)


def _positive_float(text):
    return _finite(text, positive=True)


def _layer(text):
    from handnst.vgg import canonical_layer
    try:
        return canonical_layer(text)
    except HandnstError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _check_report_path(path):
    """The --json report path: not a directory, in an existing folder we can write to."""
    if path is None:
        return None
    if os.path.isdir(path):
        raise InputError(f"--json {path!r} is a directory; give a file name such as report.json")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(f"the folder of --json {path!r} does not exist ({parent}); create it first")
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write --json {path!r}: the folder {parent} is not writable; choose another folder")
    return path


def _check_outputs(args):
    """Check -o and --json before anything runs; return the output's Pillow format."""
    from handnst.image import check_output_path
    fmt = check_output_path(args.output)
    _check_report_path(getattr(args, "json", None))
    if getattr(args, "json", None) and os.path.abspath(args.json) == os.path.abspath(args.output):
        raise InputError("--json and -o name the same file; give the report its own name, e.g. report.json")
    return fmt


def _json_safe(obj):
    """Plain JSON (no NaN/Infinity, which strict parsers reject): non-finite numbers become null."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and callable(obj.item):  # NumPy scalars
        return _json_safe(obj.item())
    return obj


def _write_report(path, report):
    import json
    from handnst.fileio import atomic_write_text
    atomic_write_text(path, json.dumps(_json_safe(report), indent=2) + "\n")


def _say(args, message):
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


class _Frames:
    """--save-every N: numbered pictures next to OUT (out_0010.png, ...) and out_progress.gif at the end.

    Each frame is written atomically, so an interrupted run never leaves half a frame behind. Small
    copies (longer side at most GIF_SIZE) are kept for the animation.
    """

    GIF_SIZE = 256

    def __init__(self, output):
        stem, ext = os.path.splitext(output)
        self.pattern = stem + "_{:04d}" + ext
        self.gif = stem + "_progress.gif"
        self.paths, self.small, self.iterations = [], [], []

    def __call__(self, iteration, picture):
        from handnst.image import save_image
        path = self.pattern.format(iteration)
        save_image(picture, path)
        self.paths.append(path)
        self.iterations.append(iteration)
        small = picture.copy()
        small.thumbnail((self.GIF_SIZE, self.GIF_SIZE))
        self.small.append(small)

    def finish(self, final_picture, iterations):
        """Write the GIF: the frames, then the final picture unless the last frame already is it."""
        from handnst.image import save_gif
        if not self.small:
            return None
        frames = list(self.small)
        if self.iterations[-1] != iterations:
            small = final_picture.copy()
            small.thumbnail((self.GIF_SIZE, self.GIF_SIZE))
            frames.append(small)
        save_gif(frames, self.gif, duration_ms=120)
        return self.gif


def _format_loss(loss):
    parts = [f"loss {loss.get('total', float('nan')):.4g}"]
    details = [f"{k} {loss[k]:.4g}" for k in ("content", "style", "tv") if isinstance(loss.get(k), float) and loss[k]]
    return parts[0] + (f" ({', '.join(details)})" if details else "")


def _finish(args, result, frames=None, extra=None):
    """Save the picture (and the frames' GIF and the JSON report); exit code by how the run ended.

    interrupted (Ctrl-C): the best picture so far is saved, exit 130. NaN/Inf: the best finite
    picture is saved, one error line, exit 1. Nothing finite at all: nothing is written.
    """
    from handnst.image import save_image
    total = result.loss.get("total")
    finite = isinstance(total, (int, float)) and math.isfinite(total) and result.evaluations > 0
    if not finite and result.stopped in ("interrupted", "nonfinite"):
        if result.stopped == "interrupted":
            print("handnst: interrupted before the first evaluation finished; nothing was written", file=sys.stderr)
            return 130
        raise RunError("the loss was NaN or infinite from the first evaluation on, so there is no image to keep; "
                       "try smaller loss weights (or a smaller --lr); nothing was written")
    save_image(result.image, args.output)
    gif = frames.finish(result.image, result.iterations) if frames is not None else None
    if getattr(args, "json", None):
        report = result.report()
        report["output"] = args.output
        if frames is not None:
            report["frames"] = frames.paths
            report["animation"] = gif
        report.update(extra or {})
        _write_report(args.json, report)
    width, height = result.size
    if result.stopped == "interrupted":
        print(f"handnst: interrupted after {result.iterations} iterations; saved the best image so far to "
              f"{args.output}", file=sys.stderr)
        return 130
    if result.stopped == "nonfinite":
        raise RunError(f"{result.message}; the best image so far was saved to {args.output}")
    t = result.timings
    print(f"wrote {args.output} ({width}x{height}): {result.iterations} iterations, {result.evaluations} "
          f"evaluations in {t['seconds']:.1f} s ({t['seconds_per_evaluation']:.3f} s/evaluation); "
          f"{_format_loss(result.loss)}")
    if gif:
        print(f"wrote {len(frames.paths)} frames ({frames.pattern.format(args.save_every)} ...) and {gif}")
    if getattr(args, "json", None):
        print(f"wrote {args.json}")
    return 0


def _add_run_options(p, *, size, iters, init, init_help, pooling=True, optimizer=True, frames=True, report=True):
    """Options every image-making command shares."""
    from handnst import transfer as T
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output image; the format comes from the extension (.png, .jpg, .webp, ...)")
    p.add_argument("--size", type=_positive_int, default=size, metavar="N",
                   help=f"longer side of the output in pixels (default {size})")
    p.add_argument("--iters", type=_positive_int, default=iters, metavar="K",
                   help=f"optimizer iterations (default {iters})")
    p.add_argument("--seed", type=_nonnegative_int, default=T.DEFAULT_SEED, metavar="S",
                   help="seed of the noise inits: the same seed gives the same picture bit for bit (default 0)")
    p.add_argument("--init", default=init, metavar="INIT", help=init_help)
    p.add_argument("--tv-weight", type=_nonnegative_float, default=T.DEFAULT_TV_WEIGHT, metavar="G",
                   help="weight of the total-variation smoothness term (default 0, as in the paper)")
    p.add_argument("--tv-exponent", type=_positive_float, default=T.DEFAULT_TV_EXPONENT, metavar="P",
                   help="exponent of the total-variation term, at least 1 (default 2)")
    if pooling:
        p.add_argument("--pooling", choices=["avg", "max"], default=T.DEFAULT_POOLING,
                       help="pooling in VGG19: avg (the paper's choice, default) or max")
    if optimizer:
        p.add_argument("--optimizer", choices=["lbfgs", "adam", "sgd", "sign"], default=T.DEFAULT_OPTIMIZER,
                       help="lbfgs (scipy's L-BFGS-B, the paper's choice, default), or adam, sgd, sign to compare")
        p.add_argument("--lr", type=_positive_float, default=None, metavar="LR",
                       help="step size of adam/sgd/sign (default: see handnst.optimize.DEFAULT_STEP)")
    p.add_argument("--device", choices=["cpu", "gpu"], default=T.DEFAULT_DEVICE,
                   help="cpu (NumPy, default) or gpu (CuPy)")
    p.add_argument("--weights", metavar="PATH",
                   help="VGG19 weights file (default: found automatically, fetched on first use)")
    if frames:
        p.add_argument("--save-every", type=_positive_int, default=None, metavar="N",
                       help="every N iterations write OUT_0010.png etc. next to OUT, and OUT_progress.gif at the end")
    if report:
        p.add_argument("--json", metavar="REPORT",
                       help="write a JSON report: final losses, iterations, evaluations, timings, size, options")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or status lines on stderr")


def _logger(args):
    """Status lines on stderr (the API calls it once every check has passed), unless --quiet."""
    return None if args.quiet else (lambda line: print(f"handnst: {line}", file=sys.stderr, flush=True))


def _progress(args):
    from handnst.optimize import make_progress
    return False if args.quiet else make_progress(args.iters, enabled=True)


# --------------------------------------------------------------------------------------- stylize

STYLIZE_EPILOG = """\
examples:
  handnst stylize photo.jpg painting.jpg -o out.png
  handnst stylize photo.jpg painting.jpg -o out.png --size 512 --iters 500 --json report.json
  handnst stylize photo.jpg a.jpg b.jpg --style-blend-weights 0.7 0.3 -o blend.png
  handnst stylize photo.jpg painting.jpg -o out.png --preserve-color --save-every 25
  handnst stylize photo.jpg painting.jpg -o paper.png --init noise --content-weight 1 --style-weight 1000
"""


def _add_stylize_parser(sub):
    from handnst import transfer as T
    p = sub.add_parser(
        "stylize", help="paint a photograph in the style of a painting (the paper's main experiment)",
        description="Neural style transfer (Gatys, Ecker & Bethge): find the image whose conv4_2 responses\n"
                    "match CONTENT and whose Gram matrices at conv1_1..conv5_1 match STYLE, with L-BFGS-B\n"
                    "on the pixels. Ctrl-C stops early and saves the best image so far.",
        formatter_class=_formatter, epilog=STYLIZE_EPILOG,
    )
    p.add_argument("content", metavar="CONTENT", help="the photograph (any image file Pillow reads)")
    p.add_argument("styles", metavar="STYLE", nargs="+", help="the painting(s); several are blended")
    _add_run_options(p, size=T.DEFAULT_SIZE, iters=T.DEFAULT_ITERS, init=T.DEFAULT_INIT,
                     init_help=f"starting image: content, noise (the paper), content+noise, style, or an image "
                               f"file (default {T.DEFAULT_INIT})")
    p.add_argument("--style-size", type=_positive_int, default=None, metavar="N",
                   help="longer side of the style image(s) in pixels (default: the same as --size)")
    p.add_argument("--content-weight", type=_nonnegative_float, default=T.DEFAULT_CONTENT_WEIGHT, metavar="ALPHA",
                   help=f"alpha, weight of the content loss (default {T.DEFAULT_CONTENT_WEIGHT:g})")
    p.add_argument("--style-weight", type=_nonnegative_float, default=T.DEFAULT_STYLE_WEIGHT, metavar="BETA",
                   help=f"beta, weight of the style loss (default {T.DEFAULT_STYLE_WEIGHT:g})")
    p.add_argument("--content-layers", type=_layer, nargs="+", default=list(T.DEFAULT_CONTENT_LAYERS),
                   metavar="LAYER", help="layers of the content loss (default conv4_2)")
    p.add_argument("--style-layers", type=_layer, nargs="+", default=list(T.DEFAULT_STYLE_LAYERS),
                   metavar="LAYER", help="layers of the style loss (default conv1_1 conv2_1 conv3_1 conv4_1 conv5_1)")
    p.add_argument("--style-layer-weights", type=_nonnegative_float, nargs="+", default=None, metavar="W",
                   help="one weight per style layer (default: equal, 1/number of layers)")
    p.add_argument("--style-blend-weights", type=_nonnegative_float, nargs="+", default=None, metavar="W",
                   help="one weight per style image (default: equal), normalised to sum to 1")
    p.add_argument("--preserve-color", action="store_true",
                   help="keep the photograph's colours: transfer the style on luminance only")


def _run_options(args):
    """The options every optimization command (stylize, reconstruct, texture) passes on as they are,
    and the frame writer for --save-every (None without it)."""
    frames = _Frames(args.output) if args.save_every else None
    options = dict(size=args.size, iters=args.iters, init=args.init, seed=args.seed, tv_weight=args.tv_weight,
                   tv_exponent=args.tv_exponent, pooling=args.pooling, optimizer=args.optimizer, lr=args.lr,
                   device=args.device, weights=args.weights, progress=_progress(args),
                   save_every=args.save_every, on_frame=frames, log=_logger(args))
    return options, frames


def _cmd_stylize(args):
    from handnst import transfer
    _check_outputs(args)
    options, frames = _run_options(args)
    result = transfer.stylize(
        args.content, args.styles if len(args.styles) > 1 else args.styles[0],
        style_size=args.style_size, content_weight=args.content_weight, style_weight=args.style_weight,
        content_layers=args.content_layers, style_layers=args.style_layers,
        style_layer_weights=args.style_layer_weights, style_blend_weights=args.style_blend_weights,
        preserve_color=args.preserve_color, **options)
    return _finish(args, result, frames)


# ----------------------------------------------------------------------------------- reconstruct

def _add_reconstruct_parser(sub):
    from handnst import transfer as T
    p = sub.add_parser(
        "reconstruct", help="content reconstruction from one layer, from white noise (the paper's Figure 1)",
        description="Find, from white noise, an image whose responses at one VGG19 layer match IMAGE's.\n"
                    "Low layers (conv1_1) give the pixels back; high layers (conv5_1) keep the objects\n"
                    "and their arrangement but not the exact pixels.",
        formatter_class=_formatter,
        epilog="examples:\n  handnst reconstruct photo.jpg --layer conv4_2 -o rec_conv4_2.png\n"
               "  for l in conv1_1 conv2_1 conv3_1 conv4_1 conv5_1; do\n"
               "    handnst reconstruct photo.jpg --layer $l -o rec_$l.png --size 128; done\n",
    )
    p.add_argument("image", metavar="IMAGE", help="the image to reconstruct")
    p.add_argument("--layer", type=_layer, default="conv4_2", metavar="LAYER",
                   help="the layer whose responses are matched (default conv4_2)")
    _add_run_options(p, size=T.DEFAULT_SIZE, iters=T.DEFAULT_ITERS, init="noise",
                     init_help="starting image: noise (the paper, default), content+noise, content, or an image file")


def _cmd_reconstruct(args):
    from handnst import transfer
    _check_outputs(args)
    options, frames = _run_options(args)
    result = transfer.reconstruct(args.image, args.layer, **options)
    return _finish(args, result, frames)


# --------------------------------------------------------------------------------------- texture

def _add_texture_parser(sub):
    from handnst import transfer as T
    p = sub.add_parser(
        "texture", help="style reconstruction / texture synthesis from white noise (the paper's Figure 1)",
        description="Find, from white noise, an image whose Gram matrices at the given layers match STYLE's:\n"
                    "the style without the content. More (and deeper) layers give larger structures.",
        formatter_class=_formatter,
        epilog="examples:\n  handnst texture painting.jpg -o texture.png\n"
               "  handnst texture painting.jpg --layers conv1_1 conv2_1 -o texture_2.png --size 128\n",
    )
    p.add_argument("style", metavar="STYLE", help="the painting (or any texture)")
    p.add_argument("--layers", type=_layer, nargs="+", default=list(T.DEFAULT_STYLE_LAYERS), metavar="LAYER",
                   help="style layers (default conv1_1 conv2_1 conv3_1 conv4_1 conv5_1)")
    p.add_argument("--style-layer-weights", type=_nonnegative_float, nargs="+", default=None, metavar="W",
                   help="one weight per layer (default: equal)")
    _add_run_options(p, size=T.DEFAULT_SIZE, iters=T.DEFAULT_ITERS, init="noise",
                     init_help="starting image: noise (the paper, default), style, or an image file")


def _cmd_texture(args):
    from handnst import transfer
    _check_outputs(args)
    options, frames = _run_options(args)
    result = transfer.texture(args.style, args.layers, style_layer_weights=args.style_layer_weights, **options)
    return _finish(args, result, frames)


# ------------------------------------------------------------------------------------------ grid

GRID_SIZE, GRID_ITERS = 128, 100


def _add_grid_parser(sub):
    from handnst import transfer as T
    p = sub.add_parser(
        "grid", help="the paper's Figure 3: style layers (rows) x content/style ratios (columns)",
        description="Stylize CONTENT with STYLE for every style-layer set {conv1_1}, {conv1_1, conv2_1}, ...,\n"
                    "{conv1_1 .. conv5_1} (rows) and every alpha/beta ratio (columns), from the same white\n"
                    "noise, and compose the pictures into one labelled image. 20 runs: it takes a while.",
        formatter_class=_formatter,
        epilog="examples:\n  handnst grid photo.jpg painting.jpg -o grid.png\n"
               "  handnst grid photo.jpg painting.jpg -o grid.png --ratios 1e-4 1e-3 --size 96 --iters 50\n",
    )
    p.add_argument("content", metavar="CONTENT", help="the photograph")
    p.add_argument("style", metavar="STYLE", help="the painting")
    p.add_argument("--ratios", type=_positive_float, nargs="+", default=list(T.GRID_RATIOS), metavar="R",
                   help="alpha/beta ratios, one column each (default 1e-5 1e-4 1e-3 1e-2)")
    _add_run_options(p, size=GRID_SIZE, iters=GRID_ITERS, init="noise", frames=False,
                     init_help="starting image of every cell: noise (the paper, default), content, "
                               "content+noise, style, or an image file")


def _cmd_grid(args):
    from handnst import transfer
    _check_outputs(args)
    results = []
    total = len(transfer.GRID_LAYER_SETS) * len(args.ratios)

    def on_cell(row, col, res):
        _say(args, f"handnst: cell {row * len(args.ratios) + col + 1}/{total} "
                   f"({' '.join(res.options['style_layers'])}; alpha/beta {res.options['ratio']:g}) "
                   f"in {res.timings['seconds']:.1f} s, {_format_loss(res.loss)}")

    picture = transfer.grid(args.content, args.style, ratios=args.ratios, size=args.size, iters=args.iters,
                            init=args.init, seed=args.seed, tv_weight=args.tv_weight, pooling=args.pooling,
                            optimizer=args.optimizer, lr=args.lr, device=args.device, weights=args.weights,
                            on_cell=on_cell, results=results, log=_logger(args))
    from handnst.image import save_image
    save_image(picture, args.output)
    if args.json:
        cells = [dict(r.report(), row=r.options["row"], column=r.options["column"], ratio=r.options["ratio"])
                 for r in results]
        for cell in cells:
            cell.pop("history", None)
        _write_report(args.json, {"output": args.output, "size": list(picture.size), "ratios": args.ratios,
                                  "layer_sets": [list(s) for s in transfer.GRID_LAYER_SETS],
                                  "seconds": sum(r.timings["seconds"] for r in results), "cells": cells})
    print(f"wrote {args.output} ({picture.size[0]}x{picture.size[1]}, {total} cells)")
    return 0


# ------------------------------------------------------------------------------------------ demo

DEMO_OUTPUT = "handnst-demo.png"
# The demo runs smaller than the 256 pixels the defaults were tuned for, and the bundled swirl picture
# is a very strong style: beta = 1e3 keeps the cat's face (both eyes, nose and mouth) while the whole
# picture turns into swirls; the default 5e3 paints most of the face away at this size.
DEMO_SIZE, DEMO_ITERS, DEMO_STYLE_WEIGHT = 192, 150, 1e3


def _add_demo_parser(sub):
    p = sub.add_parser(
        "demo", help="stylize the bundled sample images (the quickest way to see handnst work)",
        description="Paint the bundled photograph of a cat (CC0) in the style of the bundled swirl picture\n"
                    "(drawn by handnst), at a small size so that it finishes in a minute or two on a laptop\n"
                    "CPU. The first run fetches the VGG19 weights (~80 MB).",
        formatter_class=_formatter,
        epilog="examples:\n  handnst demo\n  handnst demo -o cat.png --size 256 --iters 300\n",
    )
    p.add_argument("-o", "--output", default=DEMO_OUTPUT, metavar="OUT",
                   help=f"output image (default {DEMO_OUTPUT} in the current folder)")
    p.add_argument("--size", type=_positive_int, default=DEMO_SIZE, metavar="N",
                   help=f"longer side in pixels (default {DEMO_SIZE})")
    p.add_argument("--iters", type=_positive_int, default=DEMO_ITERS, metavar="K",
                   help=f"L-BFGS-B iterations (default {DEMO_ITERS})")
    p.add_argument("--style-weight", type=_nonnegative_float, default=DEMO_STYLE_WEIGHT, metavar="BETA",
                   help=f"beta, weight of the style loss (default {DEMO_STYLE_WEIGHT:g} for this strong style at "
                        "this size)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="cpu (default) or gpu")
    p.add_argument("--weights", metavar="PATH", help="VGG19 weights file (default: found, or fetched)")
    p.add_argument("--json", metavar="REPORT", help="also write the JSON report of the run")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or status lines on stderr")


def _cmd_demo(args):
    from handnst import transfer
    from handnst.image import sample_path
    _check_outputs(args)
    content, style = sample_path("content"), sample_path("style")
    log = _logger(args)

    def demo_log(line):
        if log is not None:
            log(f"demo: painting {os.path.basename(content)} (a photograph) in the style of "
                f"{os.path.basename(style)} (a picture drawn by handnst)")
            log(line)

    result = transfer.stylize(content, style, size=args.size, iters=args.iters, style_weight=args.style_weight,
                              device=args.device,
                              weights=args.weights, progress=_progress(args), log=demo_log)
    code = _finish(args, result)
    if code == 0:
        print(f"the demo picture is {os.path.abspath(args.output)}")
    return code


# ----------------------------------------------------------------------------------------- bench

def _add_bench_parser(sub):
    p = sub.add_parser(
        "bench", help="time one objective evaluation against the machine's sgemm",
        description="Seconds, GFLOP/s and percentage of this machine's sgemm for one evaluation (forward to\n"
                    "conv5_1 and backward to the pixels) of the default objective, per image size.",
        formatter_class=_formatter,
        epilog="examples:\n  handnst bench\n  handnst bench --size 256x192 --repeat 9 --json bench.json\n",
    )
    from handnst import bench as _b
    _b.add_cli_arguments(p)


def _cmd_bench(args):
    from handnst import bench as _b
    return _b.run_cli(args)


COMMANDS = {
    "weights": _cmd_weights,
    "gradcheck": _cmd_gradcheck,
    "stylize": _cmd_stylize,
    "reconstruct": _cmd_reconstruct,
    "texture": _cmd_texture,
    "grid": _cmd_grid,
    "demo": _cmd_demo,
    "bench": _cmd_bench,
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    if "gradcheck" in argv[:2]:
        # The checks run on tiny arrays, where BLAS threads only add synchronisation (and on a busy
        # machine make each small product far slower). Must be set before NumPy loads its BLAS.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return USAGE
        return int(COMMANDS[args.command](args) or 0)
    except KeyboardInterrupt:
        print("handnst: interrupted", file=sys.stderr)
        return 130
    except HandnstError as exc:
        if debug:
            raise
        msg = " ".join(str(exc).split())  # exactly one line
        print(f"handnst: error: {msg}", file=sys.stderr)
        return exc.exit_code
    except MemoryError:
        if debug:
            raise
        print("handnst: error: out of memory; try a smaller --size", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
