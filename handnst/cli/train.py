"""`handnst train`: train a feed-forward style network (Johnson et al. 2016) on a folder of photographs."""

import math
import os
import sys

from handnst.cli.common import (_check_report_path, _check_writable_file, _formatter, _layer, _logger,
                                _nonnegative_float, _nonnegative_int, _positive_float, _positive_int, _say,
                                _write_report)
from handnst.errors import InputError

TRAIN_EPILOG = """\
examples:
  handnst train painting.jpg -o painting.h5                       # the bundled photos, 2000 steps of 4 crops
  handnst train painting.jpg -o painting.h5 --data coco/train2014 --size 256 --iters 40000
  handnst train painting.jpg -o small.h5 --width 16 --size 128 --checkpoint-every 100 --json report.json
  handnst train painting.jpg -o small.h5 --width 16 --size 128 --iters 4000 --resume   # go on after Ctrl-C
  handnst train painting.jpg -o tiny.h5 --size 64 --batch 2 --iters 60 --width 8 --residual-blocks 2
  handnst train painting.jpg -o m.h5 --save-every 50            # m_0050.png ... and m_progress.gif
  handnst apply painting.h5 photo.jpg -o out.jpg                  # then: one forward pass per photo
  handnst train a.jpg b.jpg c.jpg -o models/ --workers 3          # one network per style, side by side (Dask)

Each step takes --batch random crops (--size pixels square, random scale, position and mirroring)
of the photographs, runs them through the network and the network's pictures through VGG19, and
moves every parameter of the network by one Adam step down the gradient of
    content weight * content loss (relu2_2) + style weight * sum_l w_l E_l (relu1_2 .. relu4_3) [+ TV]
The losses are the paper's (handnst stylize); the layer weights w_l follow Johnson et al.'s
normalisation (see the README). The content loss grows with the crop's area and the style loss does
not, so the default style weight does too (0.02 x size^2): the same look at every --size.

Ctrl-C stops after the current step and writes the model and a checkpoint (MODEL.ckpt.h5 unless
--checkpoint says otherwise); run the same command with --resume to go on exactly where it stopped.
On a machine busy with other jobs, OPENBLAS_NUM_THREADS=1 can make training many times faster.
"""


def _add_train_parser(sub):
    from handnst import train as T
    p = sub.add_parser(
        "train", help="train a feed-forward network for one style (Johnson et al.), then use `handnst apply`",
        description="Train Johnson, Alahi & Fei-Fei's image transformation network (instance normalization)\n"
                    "to paint photographs in the style of STYLE in one forward pass. Every forward and\n"
                    "backward pass, VGG19's and the network's, is written by hand; the optimizer is Adam.",
        formatter_class=_formatter, epilog=TRAIN_EPILOG,
    )
    p.add_argument("style", metavar="STYLE", nargs="+",
                   help="the style image (a painting; any image file Pillow reads); several, or folders, with "
                        "--workers or --scheduler")
    p.add_argument("-o", "--output", required=True, metavar="MODEL",
                   help="the trained network, an HDF5 file (e.g. painting.h5), written atomically")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="folder of training photographs, searched recursively (e.g. COCO's train2014); "
                        "default: the photographs that ship with handnst (public domain / CC0)")
    p.add_argument("--size", type=_positive_int, default=T.DEFAULT_SIZE, metavar="N",
                   help=f"side of the square training crops, a multiple of 4 (default {T.DEFAULT_SIZE})")
    p.add_argument("--batch", type=_positive_int, default=T.DEFAULT_BATCH, metavar="B",
                   help=f"crops per step (default {T.DEFAULT_BATCH})")
    p.add_argument("--iters", type=_positive_int, default=T.DEFAULT_ITERS, metavar="K",
                   help=f"training steps in all, resumed ones included (default {T.DEFAULT_ITERS})")
    p.add_argument("--lr", type=_positive_float, default=T.DEFAULT_LR, metavar="LR",
                   help=f"Adam's step size (default {T.DEFAULT_LR:g})")
    p.add_argument("--width", type=_positive_int, default=T.DEFAULT_WIDTH, metavar="W",
                   help=f"channels of the first layer (default {T.DEFAULT_WIDTH}, Johnson's; 16 is the half network)")
    p.add_argument("--residual-blocks", type=_nonnegative_int, default=T.DEFAULT_RESIDUAL_BLOCKS, metavar="R",
                   help=f"residual blocks (default {T.DEFAULT_RESIDUAL_BLOCKS})")
    p.add_argument("--seed", type=_nonnegative_int, default=T.DEFAULT_SEED, metavar="S",
                   help="seed of the initial weights and of the crops: the same seed gives the same network "
                        "bit for bit (default 0)")
    p.add_argument("--content-weight", type=_nonnegative_float, default=T.DEFAULT_CONTENT_WEIGHT, metavar="ALPHA",
                   help=f"weight of the content loss (default {T.DEFAULT_CONTENT_WEIGHT:g})")
    p.add_argument("--style-weight", type=_nonnegative_float, default=T.DEFAULT_STYLE_WEIGHT, metavar="BETA",
                   help=f"weight of the style loss (default {T.DEFAULT_STYLE_WEIGHT_PER_PIXEL:g} x size^2: "
                        f"328 at --size 128); more paints harder")
    p.add_argument("--tv-weight", type=_nonnegative_float, default=T.DEFAULT_TV_WEIGHT, metavar="G",
                   help=f"weight of the total-variation smoothness term (default {T.DEFAULT_TV_WEIGHT:g})")
    p.add_argument("--content-layers", type=_layer, nargs="+", default=list(T.DEFAULT_CONTENT_LAYERS),
                   metavar="LAYER", help="layers of the content loss (default relu2_2)")
    p.add_argument("--style-layers", type=_layer, nargs="+", default=list(T.DEFAULT_STYLE_LAYERS),
                   metavar="LAYER", help="layers of the style loss (default relu1_2 relu2_2 relu3_3 relu4_3)")
    p.add_argument("--style-layer-weights", type=_nonnegative_float, nargs="+", default=None, metavar="W",
                   help="one weight per style layer (default proportional to 1/channels^2, Johnson's balance)")
    p.add_argument("--style-size", type=_positive_int, default=None, metavar="N",
                   help="longer side of the style image in pixels (default: the same as --size)")
    p.add_argument("--pooling", choices=["max", "avg"], default=T.DEFAULT_POOLING,
                   help="pooling in VGG19: max (as it was trained, Johnson's choice; default) or avg")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="cpu (NumPy, default) or gpu (CuPy)")
    p.add_argument("--weights", metavar="PATH",
                   help="VGG19 weights file (default: found automatically, fetched on first use)")
    p.add_argument("--checkpoint", metavar="CKPT", default=None,
                   help="where checkpoints go (default MODEL.ckpt.h5 next to the model)")
    p.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="N",
                   help="write a checkpoint every N steps and at the end (Ctrl-C always writes one)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                   help="continue from a checkpoint (default: the --checkpoint path) exactly where it stopped; "
                        "give the options it was made with")
    p.add_argument("--save-every", type=_positive_int, default=None, metavar="N",
                   help="every N steps write the network's picture of a fixed photo as MODEL_0050.png etc., "
                        "and MODEL_progress.gif at the end")
    p.add_argument("--preview", metavar="PHOTO", default=None,
                   help="the photo for --save-every (default the bundled chelsea.jpg, not a training photo)")
    p.add_argument("--json", metavar="REPORT",
                   help="write a JSON report: the loss history per step, timings, every option")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or status lines on stderr")
    from handnst.cli.batch import _add_cluster_options
    _add_cluster_options(p, "train")


def _check_model_path(path):
    if not path:
        raise InputError("the output path is empty; give a file name such as painting.h5")
    _check_writable_file(path, "-o", repr(os.path.join(path, "model.h5")))


class _Frames:
    """--save-every: MODEL_0050.png ... next to the model, and MODEL_progress.gif at the end."""

    GIF_SIZE = 256

    def __init__(self, output):
        stem = os.path.splitext(output)[0]
        self.pattern = stem + "_{:04d}.png"
        self.gif = stem + "_progress.gif"
        self.small = []
        self.paths = []

    def __call__(self, step, picture):
        from handnst.image import save_image
        path = save_image(picture, self.pattern.format(step))
        self.paths.append(path)
        small = picture.copy()
        small.thumbnail((self.GIF_SIZE, self.GIF_SIZE))
        self.small.append(small)
        return path

    def finish(self):
        from handnst.image import save_gif
        return save_gif(self.small, self.gif, duration_ms=150) if self.small else None


def _loss_text(summary):
    """'loss A -> B (means of the first and last k steps, P% lower)' from TrainResult.loss_summary();
    a short run may end above where it started, and then says so."""
    if not summary:
        return ""
    fall = summary.get("fall")
    change = ""
    if fall is not None and math.isfinite(fall):
        change = f", {100 * fall:.0f}% lower" if fall >= 0 else f", {-100 * fall:.0f}% higher"
    return (f"loss {summary['first']['total']:.4g} -> {summary['last']['total']:.4g} "
            f"(means of the first and last {summary['window']} steps{change})")


def _cmd_train(args):
    from handnst import train as T
    if args.workers is not None or args.scheduler is not None:
        from handnst.cli.batch import _cmd_train_batch
        return _cmd_train_batch(args)
    if len(args.style) > 1:
        raise InputError("one style per network: several styles train side by side as a batch, with --workers N "
                         "or --scheduler ADDRESS and -o a folder")
    args.style = args.style[0]
    _check_model_path(args.output)
    _check_report_path(args.json)
    checkpoint = args.checkpoint or T.default_checkpoint_path(args.output)
    if os.path.abspath(checkpoint) == os.path.abspath(args.output):
        raise InputError("--checkpoint and -o name the same file; give the checkpoint its own name")
    if args.json and os.path.abspath(args.json) in (os.path.abspath(args.output), os.path.abspath(checkpoint)):
        raise InputError("--json names the model or the checkpoint; give the report its own name, e.g. report.json")
    _check_model_path(checkpoint)
    resume = None
    if args.resume is not None:
        resume = checkpoint if args.resume is True else args.resume
    frames = _Frames(args.output) if args.save_every else None
    log = _logger(args)
    result = T.train(
        args.style, data=args.data, size=args.size, batch=args.batch, iters=args.iters, lr=args.lr,
        width=args.width, residual_blocks=args.residual_blocks, seed=args.seed,
        content_weight=args.content_weight, style_weight=args.style_weight, tv_weight=args.tv_weight,
        content_layers=args.content_layers, style_layers=args.style_layers,
        style_layer_weights=args.style_layer_weights, style_size=args.style_size, pooling=args.pooling,
        device=args.device, weights=args.weights, checkpoint=checkpoint, checkpoint_every=args.checkpoint_every,
        resume=resume, save_every=args.save_every, preview=args.preview, on_frame=frames,
        progress=not args.quiet, log=log)
    if result.step == result.resumed_from:
        print("handnst: interrupted before the first step finished; nothing was written", file=sys.stderr)
        return 130
    result.net.save(args.output, attrs=T.model_attributes(result))
    gif = frames.finish() if frames is not None else None
    if args.json:
        report = result.report()
        report.update({"output": args.output, "command": ["handnst", *getattr(args, "argv", [])],
                       "animation": gif})
        _write_report(args.json, report)
    t = result.timings
    loss_text = _loss_text(result.loss_summary())
    if result.stopped == "interrupted":
        print(f"handnst: interrupted at step {result.step}; wrote the model so far to {args.output} and the "
              f"checkpoint {result.checkpoint} (go on with the same command and --resume)", file=sys.stderr)
        return 130
    print(f"wrote {args.output}: steps {result.resumed_from + 1}..{result.step} in {t['seconds']:.0f} s "
          f"({t['seconds_per_step']:.2f} s/step); {loss_text}")
    if gif:
        shown = frames.paths[0] + (" ..." if len(frames.paths) > 1 else "")
        print(f"wrote {len(frames.paths)} picture{'s' if len(frames.paths) > 1 else ''} ({shown}) and {gif}")
    if result.checkpoint:
        _say(args, f"handnst: checkpoint {result.checkpoint}")
    if args.json:
        print(f"wrote {args.json}")
    return 0
