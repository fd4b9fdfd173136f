


"""The `handnst` command: a thin layer of argparse over the Python API.

Every failure a user can cause ends as one line on stderr, `handnst: error: ...`, and an exit code:
2 for bad usage or bad input, 1 for a failure while running, 130 for Ctrl-C. `--debug` shows the
traceback instead, for bug reports.
"""

import os
import sys

from handnst.cli.common import _Parser, _formatter
from handnst.cli.runs import (_add_demo_parser, _add_grid_parser, _add_reconstruct_parser, _add_stylize_parser,
                              _add_texture_parser, _cmd_demo, _cmd_reconstruct, _cmd_stylize, _cmd_texture)
from handnst.cli.batch import _add_batch_parser, _add_grid_cluster_options, _cmd_batch, _cmd_grid
from handnst.cli.bench import _add_bench_parser, _cmd_bench
from handnst.cli.gradcheck import _add_gradcheck_parser, _cmd_gradcheck
from handnst.cli.weights import _add_weights_parser, _cmd_weights
from handnst.cli.train import _add_train_parser, _cmd_train
from handnst.cli.apply import _add_apply_parser, _cmd_apply
from handnst.backend import KEEP_BELOW_BYTES, OWN_MAPPING_FROM_BYTES, keep_freed_memory
from handnst.errors import HandnstError, USAGE



EPILOG_MAIN = """\
examples:
  handnst demo                                  stylize the bundled sample images (first run fetches weights)
  handnst stylize photo.jpg painting.jpg -o out.png --size 256
  handnst train painting.jpg -o painting.h5     train a feed-forward network for one style (Johnson et al.)
  handnst apply painting.h5 photo.jpg -o out.jpg   stylize photos with it in one forward pass each
  handnst batch --content photos/ --style paintings/ -o out/   every photo in every style, on all cores
  handnst weights fetch                         download and convert the pretrained VGG19 weights
  handnst gradcheck                             check every hand-written gradient against finite differences
  handnst bench --size 256x192                  time one objective evaluation against the machine's sgemm

Run `handnst COMMAND --help` for the options of each command.
"""


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
    _add_train_parser(sub)
    _add_apply_parser(sub)
    _add_grid_cluster_options(sub.choices["grid"])   # grid's cells can run as a batch
    _add_batch_parser(sub)
    _add_weights_parser(sub)
    _add_gradcheck_parser(sub)
    _add_bench_parser(sub)
    return parser


COMMANDS = {
    "weights": _cmd_weights,
    "gradcheck": _cmd_gradcheck,
    "stylize": _cmd_stylize,
    "reconstruct": _cmd_reconstruct,
    "texture": _cmd_texture,
    "grid": _cmd_grid,
    "batch": _cmd_batch,
    "demo": _cmd_demo,
    "train": _cmd_train,
    "apply": _cmd_apply,
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
        args.argv = list(argv)
        if not args.command:
            parser.print_help()
            return USAGE
        # The feed-forward network's maps come and go with every image; an optimization of the
        # pixels keeps its big arrays for the whole run (backend.OWN_MAPPING_FROM_BYTES).
        feed_forward = args.command in ("train", "apply") or getattr(args, "transform", False)
        keep_freed_memory(KEEP_BELOW_BYTES if feed_forward else OWN_MAPPING_FROM_BYTES)
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
