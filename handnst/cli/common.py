"""What every command shares: the one-line-error parser, option types checked before anything runs,
reports, progress, and saving a run's result."""

import argparse
import math
import os
import sys

from handnst.errors import HandnstError, InputError, RunError, USAGE


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (no usage dump) with exit code 2."""

    def error(self, message):
        raise HandnstError(f"{self.prog}: {message} (see --help)", USAGE)


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


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
    from handnst.networks.vgg import canonical_layer
    try:
        return canonical_layer(text)
    except HandnstError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _check_writable_file(path, option, example):
    """A file path an option names: not a directory, in an existing folder we can write to."""
    if os.path.isdir(path):
        raise InputError(f"{option} {path!r} is a directory; give a file name such as {example}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(f"the folder of {option} {path!r} does not exist ({parent}); create it first")
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write {option} {path!r}: the folder {parent} is not writable; choose another folder")
    return path


def _check_report_path(path):
    """The --json report path: not a directory, in an existing folder we can write to."""
    if path is None:
        return None
    return _check_writable_file(path, "--json", "report.json")


def _check_outputs(args):
    """Check -o and --json before anything runs; return the output's Pillow format."""
    from handnst.image import check_output_path
    fmt = check_output_path(args.output)
    _check_report_path(getattr(args, "json", None))
    if getattr(args, "json", None) and os.path.abspath(args.json) == os.path.abspath(args.output):
        raise InputError("--json and -o name the same file; give the report its own name, e.g. report.json")
    return fmt




def _write_report(path, report):
    import json
    from handnst.fileio import atomic_write_text, json_safe
    atomic_write_text(path, json.dumps(json_safe(report), indent=2) + "\n")


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


def _run_options(args):
    """The options every optimization command (stylize, reconstruct, texture) passes on as they are,
    and the frame writer for --save-every (None without it)."""
    frames = _Frames(args.output) if args.save_every else None
    options = dict(size=args.size, iters=args.iters, init=args.init, seed=args.seed, tv_weight=args.tv_weight,
                   tv_exponent=args.tv_exponent, pooling=args.pooling, optimizer=args.optimizer, lr=args.lr,
                   device=args.device, weights=args.weights, progress=_progress(args),
                   save_every=args.save_every, on_frame=frames, log=_logger(args))
    return options, frames
