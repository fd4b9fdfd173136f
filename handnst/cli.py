"""The `handnst` command: a thin layer of argparse over the Python API.

Every failure a user can cause ends as one line on stderr, `handnst: error: ...`, and an exit code:
2 for bad usage or bad input, 1 for a failure while running, 130 for Ctrl-C. `--debug` shows the
traceback instead, for bug reports.
"""

import argparse
import sys

from handnst.errors import HandnstError, USAGE

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
    _add_weights_parser(sub)
    _add_gradcheck_parser(sub)
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


COMMANDS = {
    "weights": _cmd_weights,
    "gradcheck": _cmd_gradcheck,
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
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
