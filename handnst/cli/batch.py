"""`handnst batch`: stylize every content image with every style, on a local or an existing Dask cluster.

The command takes exactly stylize's options (borrowed from stylize's own parser, so that the two
never drift apart) less those that name one output (-o OUT becomes -o OUT_DIR; --json, --save-every
and --style-blend-weights have no meaning for a cross product), plus where to run.
"""

import argparse
import os
import sys

from handnst.cli.common import _formatter, _positive_int
from handnst.cli.runs import _add_stylize_parser

BATCH_EPILOG = """\
examples:
  handnst batch --content photos/ --style paintings/ -o out/              every photo in every style, all cores
  handnst batch --content a.jpg b.jpg --style s.jpg -o out/ --size 128 --iters 100 --workers 2
  handnst batch --content photos/ --style paintings/ -o out/ --scheduler tcp://head:8786
Run the same command again to resume: jobs whose outputs are complete are skipped.
"""

# stylize options that a batch does not take (see the module docstring)
_NOT_IN_BATCH = {"help", "content", "styles", "output", "json", "save_every", "style_blend_weights"}


def _stylize_actions():
    """The argparse actions of `handnst stylize`, built by stylize's own parser function."""
    scratch = argparse.ArgumentParser(add_help=False)
    _add_stylize_parser(scratch.add_subparsers())
    return scratch._subparsers._group_actions[0].choices["stylize"]._actions


def _add_batch_parser(sub):
    p = sub.add_parser(
        "batch", help="stylize every content image with every style, on all cores or a Dask cluster",
        description="Stylize every CONTENT image with every STYLE image (files, or folders of images), writing\n"
                    "OUT_DIR/<content>__<style>.png, a JSON report per job (as stylize --json) and\n"
                    "OUT_DIR/summary.json. The jobs run on a local Dask cluster (worker processes x BLAS\n"
                    "threads = this machine's cores), or on an existing one with --scheduler. A job that\n"
                    "fails on bad input fails alone; Ctrl-C keeps every finished picture; running the same\n"
                    "command again skips the jobs that are complete. Needs: pip install \"handnst[cluster]\".",
        formatter_class=_formatter,
        epilog=BATCH_EPILOG,
    )
    p.add_argument("--content", nargs="+", required=True, metavar="PATH",
                   help="content images: files and/or folders of images")
    p.add_argument("--style", nargs="+", required=True, metavar="PATH",
                   help="style images: files and/or folders of images (each one is a job with every content)")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                   help="folder of the outputs (created if only it is missing)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                       help="worker processes of the local cluster (default: one per core, fewer when "
                            "the memory or the number of jobs calls for it)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on an existing Dask cluster, e.g. tcp://head:8786 (`dask scheduler` and "
                            "`dask worker`, dask-jobqueue, ...); its workers need handnst installed")
    for action in _stylize_actions():
        if action.dest not in _NOT_IN_BATCH:
            p._add_action(action)
    return p


def _cmd_batch(args):
    from handnst import batch
    batch.require_dask()   # without Dask: one line saying how to install it, exit 2
    options = {name: getattr(args, name) for name in batch.STYLIZE_OPTIONS}
    jobs = batch.stylize_jobs(args.content, args.style, options)
    batch.check_out_dir(args.output)
    if args.weights is not None:
        from handnst.weights import find_weights
        find_weights(args.weights)   # a named file that is not there: one line now, not after the cluster starts
    log = None if args.quiet else (lambda line: print(f"handnst: {line}", file=sys.stderr, flush=True))
    summary = batch.run_batch(jobs, args.output, weights=args.weights, workers=args.workers,
                              scheduler=args.scheduler, progress=not args.quiet and sys.stderr.isatty(), log=log)
    counts = summary["counts"]
    summary_path = os.path.join(args.output, batch.SUMMARY_NAME)
    if summary["interrupted"]:
        print(f"handnst: interrupted: {counts['done']} jobs finished (kept in {args.output}), "
              f"{counts['cancelled']} cancelled; run the same command again to resume", file=sys.stderr)
        return 130
    for entry in summary["jobs"]:
        if entry["status"] == "failed":
            print(f"handnst: error: {entry['name']}: {entry['error']}", file=sys.stderr)
    print(f"{counts['done']} done, {counts['skipped']} skipped (already complete), {counts['failed']} failed "
          f"of {len(summary['jobs'])} jobs in {summary['seconds']:.1f} s; wrote {summary_path}")
    return summary["exit_code"]
