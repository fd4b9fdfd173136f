"""`handnst batch`: stylize every content image with every style, on a local or an existing Dask cluster.

The command takes exactly stylize's options (borrowed from stylize's own parser, so that the two
never drift apart) less those that name one output (-o OUT becomes -o OUT_DIR; --json, --save-every
and --style-blend-weights have no meaning for a cross product), plus where to run.
"""

import argparse
import os
import sys

from handnst.cli.common import _check_outputs, _formatter, _positive_int, _write_report
from handnst.cli.runs import _add_stylize_parser
from handnst.cli.runs import _cmd_grid as _cmd_grid_here

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


_WHERE_HELP = {
    "batch": ("worker processes of the local cluster (default: one per core, fewer when the memory or the "
              "number of jobs calls for it)",
              "run on an existing Dask cluster, e.g. tcp://head:8786 (`dask scheduler` and `dask worker`, "
              "dask-jobqueue, ...); its workers need handnst installed"),
    "grid": ("run the cells as a batch on a local Dask cluster of N worker processes; the cells go to "
             "OUT_cells/ and running the command again resumes (see handnst batch)",
             "run the cells as a batch on an existing Dask cluster, e.g. tcp://head:8786"),
    "train": ("train one network per STYLE as a batch on a local Dask cluster of N worker processes; -o is "
              "then a folder (OUT/<style>.h5 and .json) and running the command again resumes",
              "train one network per STYLE as a batch on an existing Dask cluster, e.g. tcp://head:8786"),
}


def _add_cluster_options(p, what="batch"):
    """--workers N | --scheduler ADDRESS, for batch, and for grid and train (which then run as a batch)."""
    workers_help, scheduler_help = _WHERE_HELP[what]
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, default=None, metavar="N", help=workers_help)
    where.add_argument("--scheduler", metavar="ADDRESS", help=scheduler_help)


def _add_grid_cluster_options(grid_parser):
    """Give `handnst grid` the batch's --workers and --scheduler."""
    _add_cluster_options(grid_parser, "grid")
    grid_parser.epilog += ("  handnst grid photo.jpg painting.jpg -o grid.png --workers 2      "
                           "20 cells on a local Dask cluster\n")


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
    _add_cluster_options(p)
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
    return _run_and_report(args, jobs)


def _run_and_report(args, jobs):
    """Run the jobs into -o, print what became of them; the exit code."""
    from handnst import batch
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


def _cmd_grid(args):
    """`handnst grid`: in this process, or with --workers/--scheduler as a batch of its cells, whose
    pictures and reports go to OUT_cells/ (so that an interrupted grid resumes) before the labelled
    picture is composed into OUT."""
    if args.workers is None and args.scheduler is None:
        return _cmd_grid_here(args)
    from handnst import batch
    batch.require_dask()
    _check_outputs(args)
    options = {name: getattr(args, name) for name in ("size", "iters", "init", "seed", "tv_weight", "pooling",
                                                      "optimizer", "lr", "device")}
    jobs = batch.grid_jobs(args.content, args.style, options, ratios=args.ratios)
    cells = os.path.splitext(args.output)[0] + "_cells"
    batch.check_out_dir(cells)
    log = None if args.quiet else (lambda line: print(f"handnst: {line}", file=sys.stderr, flush=True))
    summary = batch.run_batch(jobs, cells, weights=args.weights, workers=args.workers, scheduler=args.scheduler,
                              progress=not args.quiet and sys.stderr.isatty(), log=log)
    if summary["interrupted"]:
        print(f"handnst: interrupted: {summary['counts']['done']} cells finished (kept in {cells}); "
              "run the same command again to resume", file=sys.stderr)
        return 130
    failed = [e for e in summary["jobs"] if e["status"] == "failed"]
    if failed:
        print(f"handnst: error: {len(failed)} of {len(jobs)} cells failed, no grid was composed; first: "
              f"{failed[0]['name']}: {failed[0]['error']}", file=sys.stderr)
        return summary["exit_code"]
    from handnst.image import save_image
    picture = batch.grid_picture(cells, jobs, args.ratios)
    save_image(picture, args.output)
    if args.json:
        import json
        reports = []
        for job in jobs:
            with open(os.path.join(cells, job["name"] + ".json"), encoding="utf-8") as fh:
                report = json.load(fh)
            report.pop("history", None)
            _, row, column = job["name"].split("_")
            reports.append(dict(report, row=int(row), column=int(column), ratio=args.ratios[int(column)]))
        _write_report(args.json, {"output": args.output, "size": list(picture.size), "ratios": args.ratios,
                                  "layer_sets": [j["options"]["style_layers"] for j in jobs[::len(args.ratios)]],
                                  "seconds": sum(r["seconds"] or 0 for r in reports), "cells": reports})
    print(f"wrote {args.output} ({picture.size[0]}x{picture.size[1]}, {len(jobs)} cells; their pictures and "
          f"reports are in {cells})")
    return 0


def _cmd_train_batch(args):
    """`handnst train STYLE [STYLE ...] -o OUT_DIR --workers N | --scheduler ADDRESS`: one network per
    style, trained as a batch (handnst.batch.train_jobs). A batch resumes by skipping the styles whose
    model is complete, so the single run's checkpoint options have no place here."""
    from handnst import batch
    from handnst.errors import InputError
    batch.require_dask()
    single = [name for name, value in (("--checkpoint", args.checkpoint), ("--checkpoint-every", args.checkpoint_every),
                                       ("--resume", args.resume), ("--save-every", args.save_every),
                                       ("--preview", args.preview), ("--json", args.json)) if value is not None]
    if single:
        raise InputError(f"{', '.join(single)} belong to a single training run, not to a batch: with --workers or "
                         "--scheduler every style's model and report go to the -o folder, and running the same "
                         "command again resumes")
    options = {name: getattr(args, name) for name in (
        "size", "batch", "iters", "lr", "width", "residual_blocks", "seed", "content_weight", "style_weight",
        "tv_weight", "content_layers", "style_layers", "style_layer_weights", "style_size", "pooling", "device")}
    jobs = batch.train_jobs(args.style, options, data=args.data)
    batch.check_out_dir(args.output)
    return _run_and_report(args, jobs)
