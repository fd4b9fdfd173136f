"""The style-transfer commands: stylize, reconstruct, texture, grid and demo."""

import os

from handnst.errors import InputError
from handnst.cli.common import (_add_run_options, _check_outputs, _finish, _format_loss, _formatter, _layer, _logger,
                                _nonnegative_float, _positive_float, _positive_int, _progress, _run_options, _say,
                                _write_report)


# --------------------------------------------------------------------------------------- stylize

STYLIZE_EPILOG = """\
examples:
  handnst stylize photo.jpg painting.jpg -o out.png
  handnst stylize photo.jpg painting.jpg -o out.png --size 512 --iters 500 --json report.json
  handnst stylize photo.jpg a.jpg b.jpg --style-blend-weights 0.7 0.3 -o blend.png
  handnst stylize photo.jpg painting.jpg -o out.png --preserve-color --save-every 25
  handnst stylize photo.jpg painting.jpg -o paper.png --init noise --content-weight 1 --style-weight 1000
  handnst stylize photo.jpg painting.jpg -o big.png --size 512 --start-size 128     # coarse-to-fine
  handnst stylize photo.jpg painting.jpg -o out.png --color-control histogram --color-match sym
  handnst stylize photo.jpg -o out.png --region sky.png clouds.jpg --region ground.png grass.jpg
  handnst stylize photo.jpg -o out.png --region labels.png#3366ff a.jpg --region labels.png#ff0000 b.jpg b_mask.png
  handnst stylize photo.jpg painting.jpg -o out.png --style-scale 2                 # larger brush strokes
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
    p.add_argument("styles", metavar="STYLE", nargs="*",
                   help="the painting(s); several are blended (none when --region gives the styles)")
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
                   help="keep the photograph's colours: the same as --color-control luminance")
    p.add_argument("--color-control", choices=["luminance", "histogram"], default=None,
                   help="keep the photograph's colours: luminance (transfer on luminance only) or histogram "
                        "(first give the style the photograph's colour mean and covariance)")
    p.add_argument("--color-match", choices=["chol", "pca", "sym"], default=None,
                   help="how --color-control histogram maps the colours: Cholesky, PCA or symmetric square root "
                        "(default sym)")
    p.add_argument("--region", nargs="+", action="append", default=None, metavar="PATH",
                   help="CONTENT_MASK STYLE [STYLE_MASK], repeatable: the masked region of the photograph takes "
                        "its style from STYLE (or from its part under STYLE_MASK); masks are greyscale images or "
                        "one colour of a label map (labels.png#ff0000); together they must cover the photograph")
    p.add_argument("--style-scale", type=_positive_float, default=None, metavar="F",
                   help="the style image at F times the photograph's size: F > 1 gives larger brush strokes")
    _add_level_options(p)


def _cmd_stylize(args):
    from handnst import transfer
    _check_outputs(args)
    options, frames = _run_options(args)
    if not args.styles and not args.region:
        raise InputError("give a STYLE image after CONTENT, or the styles of regions with --region")
    _bar_per_level(args, options)
    result = transfer.stylize(
        args.content, (args.styles if len(args.styles) > 1 else args.styles[0]) if args.styles else None,
        style_size=args.style_size, content_weight=args.content_weight, style_weight=args.style_weight,
        content_layers=args.content_layers, style_layers=args.style_layers,
        style_layer_weights=args.style_layer_weights, style_blend_weights=args.style_blend_weights,
        preserve_color=args.preserve_color, color_control=args.color_control, color_match=args.color_match,
        regions=args.region, style_scale=args.style_scale, **_level_options(args), **options)
    _say_levels(args, result)
    return _finish(args, result, frames)


def _bar_per_level(args, options):
    """Coarse-to-fine runs draw one progress bar per level (made by the run), not one for --iters."""
    if args.start_size and options.get("progress"):
        options["progress"].close()
        options["progress"] = True
    return options


def _add_level_options(p, normalization=True):
    from handnst import levels
    p.add_argument("--start-size", type=_positive_int, default=None, metavar="N",
                   help="coarse-to-fine: start at N pixels and refine the upsampled picture up to --size")
    p.add_argument("--level-factor", type=_positive_float, default=levels.DEFAULT_LEVEL_FACTOR, metavar="F",
                   help=f"coarse-to-fine: each level at most F times the one before "
                        f"(default {levels.DEFAULT_LEVEL_FACTOR:g})")
    p.add_argument("--level-iters", type=_positive_int, nargs="+", default=None, metavar="K",
                   help="coarse-to-fine: iterations of every level, smallest first (default: --iters at the "
                        "smallest, halved at each next level)")
    if not normalization:       # texture: no content term, nothing to balance
        return
    p.add_argument("--normalization", choices=list(levels.NORMALIZATIONS), default=levels.DEFAULT_NORMALIZATION,
                   help="paper: the paper's loss (in coarse-to-fine runs every level gets the final size's balance); "
                        "size-invariant: the same weights give the same look at any --size (default paper)")


def _level_options(args, normalization=True):
    out = dict(start_size=args.start_size, level_factor=args.level_factor, level_iters=args.level_iters)
    if normalization:
        out["normalization"] = args.normalization
    return out


def _say_levels(args, result):
    for level in result.levels:
        _say(args, f"handnst: level {level['level']} at {level['size'][0]}x{level['size'][1]}: "
                   f"{level['iterations']} iterations, {level['evaluations']} evaluations in "
                   f"{level['seconds']:.1f} s; {_format_loss(level['loss'])}")


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
    _add_level_options(p, normalization=False)


def _cmd_texture(args):
    from handnst import transfer
    _check_outputs(args)
    options, frames = _run_options(args)
    _bar_per_level(args, options)
    result = transfer.texture(args.style, args.layers, style_layer_weights=args.style_layer_weights,
                              **_level_options(args, normalization=False), **options)
    _say_levels(args, result)
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
