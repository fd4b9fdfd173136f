"""One job of a batch, as a Dask worker runs it: input files in as bytes, output files out as bytes.

Everything here runs inside a worker process, which may be on another machine: it never touches
the client's files. Inputs arrive as {role: (the user's path, bytes)}, the VGG19 weights as one
payload per worker (see WeightsPlugin), and run_job returns the outputs' bytes and the report for
the client to write (handnst.batch).

JOB_KINDS maps a job's kind to the function that runs it. A kind takes the inputs (as files in a
private temporary folder), the job's options and the worker's network, and returns its output
files' bytes and its JSON report: "stylize" is handnst.transfer.stylize, "train" is
handnst.train.train (the style image, and the training photos as a folder, in; the model file out).
"""

import io
import os
import socket
import tempfile
import threading
import time
import zipfile

from handnst.errors import HandnstError, RunError

try:   # Dask is optional: without it the plugin class below is never used
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:
    _WorkerPlugin = object


_local = threading.local()   # per worker thread: the network built from the broadcast weights


class WeightsPlugin(_WorkerPlugin):
    """The weights payload, kept by the scheduler and installed on every worker as it joins."""

    def __init__(self, payload, name):
        self.payload, self.name = payload, name

    def setup(self, worker):
        pass


def _keep(data):
    """The trivial task whose result is an input file's bytes (recomputable, unlike scattered data)."""
    return data


def _resolve_weights(weights):
    """The payload itself, or the name of the WeightsPlugin that holds it on this worker."""
    if isinstance(weights, str):
        from distributed import get_worker
        return get_worker().plugins[weights].payload
    return weights


def _network(weights, pooling, device):
    """The VGG19 for this worker thread, built once from the broadcast weights and reused.

    A network holds its scratch buffers, so each thread has its own. It outlives a batch: the next
    batch sent to a long-running worker with the same weights file (same "key": path, size, time)
    reuses it, and skips the building and the first run's set-up (seconds). Another pooling, device
    or weights file replaces it.
    """
    from handnst.networks.vgg import VGG19
    ident = weights.get("key") or weights   # a payload without a key is known by identity
    cached = getattr(_local, "net", None)
    if cached is not None and (cached[0] == ident if isinstance(ident, str) else cached[0] is ident) \
            and cached[1:3] == (pooling, device):
        return cached[3]
    _local.net = None  # drop the old network before building the new one
    net = VGG19(weights["params"], convention=weights["meta"]["convention"], pooling=pooling,
                backend=device, source=weights["source"])
    _local.net = (ident, pooling, device, net)
    return net


def _stylize_job(paths, options, net):
    """Kind "stylize": returns ({file name: bytes}, report), the report as `stylize --json` writes it."""
    from handnst import transfer
    result = transfer.stylize(paths["content"], paths["style"], init=paths.get("init", options.get("init")),
                              net=net, **{k: v for k, v in options.items() if k not in ("init", "device",
                                                                                          "pooling")})
    # A job that did not end normally is not complete: no picture is kept, so a rerun redoes it.
    if result.stopped == "nonfinite":
        raise RunError(f"{result.message}; try smaller loss weights (or a smaller --lr)")
    if result.stopped == "interrupted":
        raise RunError("the run was interrupted on its worker")
    buffer = io.BytesIO()
    result.image.save(buffer, format="PNG")
    return {"image": buffer.getvalue()}, result.report()


def _train_job(paths, options, net):
    """Kind "train": one transformation network for one style (handnst.train), its model file out.

    The training photos are the bundled ones unless the job carries a "data" folder."""
    from handnst import train
    result = train.train(paths["style"], data=paths.get("data"), vgg=net,
                         **{k: v for k, v in options.items() if k not in ("device", "pooling", "data")},
                         pooling=options["pooling"], device=options["device"])
    if result.stopped == "interrupted" or result.step == result.resumed_from:
        raise RunError("the training was interrupted on its worker")
    model = os.path.join(os.path.dirname(paths["style"]), "model.h5")
    result.net.save(model, attrs=train.model_attributes(result))
    with open(model, "rb") as fh:
        return {"model": fh.read()}, result.report()


# kind -> function(paths by role, options, network) -> ({output role: bytes}, report). A new kind
# is one function here and a job builder in handnst.batch (like stylize_jobs, train_jobs).
JOB_KINDS = {"stylize": _stylize_job, "train": _train_job}


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


def run_job(job, inputs, weights):
    """Run one job on this worker. Never raises for a job that fails: the failure is the result.

    job:     the job dict without its input bytes
    inputs:  {role: (original path, bytes)}
    weights: {"params", "meta", "source"} as read from the weights file by the client, or the name
             of the WeightsPlugin that holds it
    Returns {"name", "status": "done"|"failed", "files": {output name: bytes}, "report", "error",
    "exit_code", "worker", "seconds"}.
    """
    t0 = time.perf_counter()
    weights = _resolve_weights(weights)
    out = {"name": job["name"], "status": "failed", "files": {}, "report": None, "error": None,
           "exit_code": 1, "worker": f"{socket.gethostname()}:{os.getpid()}"}
    with tempfile.TemporaryDirectory(prefix="handnst-job-") as folder:
        paths, shown = {}, {}
        for role, (original, data) in inputs.items():
            path = os.path.join(folder, role, os.path.basename(os.path.normpath(original)))
            os.makedirs(os.path.dirname(path))
            if role in job.get("folders", ()):      # a folder travels as one zip archive
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    archive.extractall(path)
            else:
                with open(path, "wb") as fh:
                    fh.write(data)
            paths[role], shown[path] = path, original
        try:
            net = _network(weights, job["options"].get("pooling", "avg"), job["options"].get("device", "cpu"))
            files, report = JOB_KINDS[job["kind"]](paths, job["options"], net)
        except HandnstError as exc:
            message = _one_line(exc)
            for path, original in shown.items():   # name the user's file, not the worker's copy
                message = message.replace(path, original)
            out.update(error=message, exit_code=exc.exit_code)
        except MemoryError:
            out.update(error="out of memory on the worker; use a smaller --size or fewer workers")
        except Exception as exc:  # a bug: keep its type and message, the others go on
            out.update(error=f"{type(exc).__name__}: {_one_line(exc)}")
        else:
            opts = report.get("options", {})
            for key, value in opts.items():   # the user's paths in the report, not the worker's copies
                if isinstance(value, str) and value in shown:
                    opts[key] = shown[value]
                elif isinstance(value, list):
                    opts[key] = [shown.get(v, v) if isinstance(v, str) else v for v in value]
            opts["weights"] = weights["source"]
            out.update(status="done", files={job["outputs"][i]: data for i, data in enumerate(files.values())},
                       report=report, exit_code=0)
    out["seconds"] = time.perf_counter() - t0
    return out


__all__ = ["JOB_KINDS", "WeightsPlugin", "run_job"]
