"""`handnst gradcheck`: every hand-written backward pass against central finite differences."""

import json
import sys
import time

from handnst.backend import get_xp
from handnst.cli.common import _formatter


# --------------------------------------------------------------------------------------- gradcheck

def _add_gradcheck_parser(sub):
    p = sub.add_parser(
        "gradcheck", help="check every hand-written backward pass against finite differences",
        description="Central finite differences in float64 for every layer (naive and fast), every loss,\n"
                    "the whole objective through VGG19 and the whole transformation network on small inputs.",
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
    return run_cli(args)


def run_cli(args):
    backend = "cupy" if args.device == "gpu" else "numpy"
    get_xp(backend)   # a clear error now if the GPU cannot be used
    start = time.perf_counter()
    results = run_checks(backend, seed=args.seed, weights_path=args.weights)
    table = format_table(results)
    if args.json == "-":
        json.dump({"backend": backend, "seconds": time.perf_counter() - start, "results": results}, sys.stdout, indent=2)
        print()
    else:
        print(table)
        print(f"({backend}, float64, {time.perf_counter() - start:.1f} s)")
        if args.json:
            from handnst.fileio import atomic_write_text
            atomic_write_text(args.json, json.dumps({"backend": backend, "results": results}, indent=2))
    return 0 if all(r["passed"] for r in results) else 1


def run_checks(backend="numpy", seed=0, weights_path=None, progress=None):
    """Run every check; returns a list of dicts {check, max_rel_error, tolerance, passed, seconds}."""
    from handnst.gradcheck import layer_checks, loss_checks, objective_checks
    from handnst.gradcheck_transform import transform_layer_checks, transform_net_checks
    results = []
    checks = (layer_checks(backend, seed) + transform_layer_checks(backend, seed) + loss_checks(backend, seed)
              + objective_checks(backend, seed, weights_path) + transform_net_checks(backend, seed))
    for name, fn, tol in checks:
        start = time.perf_counter()
        err = fn()
        results.append({"check": name() if callable(name) else name, "max_rel_error": err,
                        "tolerance": tol, "passed": bool(err <= tol), "seconds": time.perf_counter() - start})
        if progress:
            progress(results[-1])
    return results


def format_table(results):
    width = max(len(r["check"]) for r in results)
    lines = [f"{'check':<{width}}  {'max rel error':>13}  {'tolerance':>9}  result",
             f"{'-' * width}  {'-' * 13}  {'-' * 9}  ------"]
    for r in results:
        lines.append(f"{r['check']:<{width}}  {r['max_rel_error']:>13.2e}  {r['tolerance']:>9.0e}  "
                     f"{'pass' if r['passed'] else 'FAIL'}")
    failed = sum(not r["passed"] for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)
