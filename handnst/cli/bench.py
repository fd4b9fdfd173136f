"""`handnst bench`: one objective evaluation timed against the machine's sgemm."""

import json
import os
import sys

from handnst.bench import (CONV_CHOICES, DEFAULT_REPEAT, DEFAULT_SIZES, DEFAULT_WARMUP, _size_name, format_report,
                           parse_size, run_benchmark)
from handnst.cli.common import _formatter
from handnst.errors import InputError


# ----------------------------------------------------------------------------------------- bench

def _add_bench_parser(sub):
    p = sub.add_parser(
        "bench", help="time one objective evaluation against the machine's sgemm",
        description="Seconds, GFLOP/s and percentage of this machine's sgemm for one evaluation (forward to\n"
                    "conv5_1 and backward to the pixels) of the default objective, per image size.",
        formatter_class=_formatter,
        epilog="examples:\n  handnst bench\n  handnst bench --size 256x192 --repeat 9 --json bench.json\n"
               "  handnst bench --transform        # the feed-forward network: apply 512x384 and one training\n"
               "                                   # step (4 x 128x128), next to PyTorch where it is installed\n"
               "  handnst bench --size 256x192 512x384 --torch     # and PyTorch on the same objective\n",
    )
    add_cli_arguments(p)


def _cmd_bench(args):
    return run_cli(args)


def add_cli_arguments(parser):
    """Add the options of `handnst bench` to an argparse (sub)parser."""
    parser.add_argument("--size", metavar="WxH", nargs="+", action="extend", type=str,
                        help="image sizes to time (default: " + " ".join(_size_name(*s) for s in DEFAULT_SIZES) + ")")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                        help="cpu (NumPy) or gpu (CuPy); default cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                        help="floating-point type (default float32, what stylize uses)")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, metavar="N",
                        help=f"timed evaluations per size (default {DEFAULT_REPEAT})")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, metavar="N",
                        help=f"untimed evaluations first (default {DEFAULT_WARMUP})")
    parser.add_argument("--weights", metavar="PATH|random",
                        help="weights file, or 'random' (default: the file handnst finds, else random; "
                             "timings do not depend on the weight values)")
    parser.add_argument("--conv", default="auto", choices=list(CONV_CHOICES),
                        help="auto: from conv3_1 on Winograd F(4x4, 3x3) on maps of 48 4x4 tiles or more "
                             "and F(2x2, 3x3) on smaller ones, F(2, 3) along the rows for conv1_2 .. conv2_2, "
                             "one im2col product for conv1_1: what stylize runs (the default); "
                             "direct: nine GEMMs for every convolution")
    parser.add_argument("--torch", action="store_true",
                        help="also time the same objective in PyTorch (if installed), in turns with handnst in "
                             "the same process, and report the median ratio of the paired times, and that of "
                             "handnst's time inside BLAS products alone to PyTorch's whole time")
    parser.add_argument("--in-process", action="store_true",
                        help="run every size in this process instead of a fresh one each "
                             "(faster to start, but the memory peaks then mix)")
    parser.add_argument("--transform", action="store_true",
                        help="time the feed-forward network instead (handnst train/apply): applying the width-32 "
                             "network to 512x384 and one training step of 4 crops of 128x128, and the same in "
                             "PyTorch in this process if it is installed (--repeat rounds, default 5)")
    parser.add_argument("--json", metavar="PATH", nargs="?", const="-",
                        help="also write every number as JSON to PATH (only JSON, on stdout, with no PATH)")


def _check_writable(path):
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InputError(f"--json {path} is a directory; give a file name")
    if not os.path.isdir(directory):
        raise InputError(f"cannot write {path}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise InputError(f"cannot write {path}: no permission to write in {directory}")


def run_cli(args):
    """Run `handnst bench` from parsed arguments; returns the exit code."""
    to_stdout = args.json == "-"
    if args.json and not to_stdout:
        _check_writable(args.json)     # before the run, not after a minute of work
    if getattr(args, "transform", False):
        return _run_transform(args, to_stdout)
    sizes = [parse_size(s) for s in args.size] if args.size else list(DEFAULT_SIZES)
    report = run_benchmark(sizes, device=args.device, dtype=args.dtype, repeat=args.repeat, warmup=args.warmup,
                           weights=args.weights, isolate=not args.in_process, conv=args.conv, torch=args.torch,
                           log=lambda line: print(line, file=sys.stderr, flush=True))
    text = json.dumps(report, indent=2)
    if to_stdout:
        print(text)
    else:
        print(format_report(report))
        if args.json:
            from handnst.fileio import atomic_write_text
            atomic_write_text(args.json, text + "\n")
    return 0



def _run_transform(args, to_stdout):
    from handnst import bench_transform
    if args.device != "cpu":
        raise InputError("--transform times the CPU (NumPy) path; leave out --device")
    rounds = args.repeat if args.repeat != DEFAULT_REPEAT else bench_transform.DEFAULT_ROUNDS
    if rounds < 1:
        raise InputError("--repeat must be at least 1")
    weights = None if args.weights is None else ("random" if args.weights == "random" else args.weights)
    report = bench_transform.run(rounds=rounds, weights=weights,
                                 log=lambda line: print(line, file=sys.stderr, flush=True))
    text = json.dumps(report, indent=2)
    if to_stdout:
        print(text)
    else:
        print(bench_transform.format_report(report))
        if args.json:
            from handnst.fileio import atomic_write_text
            atomic_write_text(args.json, text + "\n")
    return 0
