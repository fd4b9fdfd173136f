"""Many runs at once: every content image with every style, on a Dask cluster.

A class stylizes a folder of photographs in ten styles; a student sweeps the weights. Every run is
independent and long, so they spread over the cores of one machine, or over a cluster, with Dask's
distributed scheduler (an existing engine: we do not write a pool of our own).

    jobs = stylize_jobs(["photos/"], ["paintings/"], {"size": 256, "iters": 300})
    summary = run_batch(jobs, "out/")                      # a local cluster on this machine
    summary = run_batch(jobs, "out/", scheduler="tcp://head:8786")   # an existing cluster

How a batch travels:

  - A job is a plain dict: its kind ("stylize"), its name (the output's stem, "cat__swirls"), its
    input files by role, its options and the files it produces. handnst.jobs.JOB_KINDS maps a kind
    to the function that runs it on a worker; another kind of run (one `train` per style, say) is
    one more function there and one more job builder here (stylize_jobs, grid_jobs, train_jobs), and
    everything else (transfer, retries, resume, progress, the summary) is shared.
  - Workers need no shared file system: the client reads every input file once and sends its
    bytes; a worker writes them to its own temporary folder, runs the job, and sends the results
    back as bytes; the client writes them into OUT_DIR, each file atomically, the JSON report last.
  - The VGG19 weights are read once by the client and handed to the scheduler as a worker plugin,
    which gives them to every worker once, when it joins (a worker that restarts after a crash gets
    them again); each worker thread builds its network from them once and reuses it for all its jobs.
  - Each input file goes to the scheduler once, as the result of a trivial task that every job
    needing it depends on. Scattered data would be lost with the worker holding it; a task's result
    is recomputed elsewhere when its worker dies.

Faults:

  - A worker that dies mid-job (killed, out of memory) has its job rescheduled on another worker
    by Dask (up to `distributed.scheduler.allowed-failures` times, 3 by default).
  - A job whose input is bad (a corrupt image, one too small for the layers) fails alone: its
    one-line error goes into the summary and the other jobs go on.
  - A job whose report exists in OUT_DIR, written by the same job with the same options, is complete
    and is skipped: running the same command again resumes an interrupted batch.
  - Ctrl-C cancels the jobs still queued or running and keeps every finished output.
"""

import contextlib
import json
import math
import os
import sys
import time
import warnings

from handnst.errors import InputError, RunError
from handnst.fileio import json_safe
from handnst.jobs import WeightsPlugin, _keep, _one_line, run_job

SUMMARY_NAME = "summary.json"
INSTALL_HINT = 'handnst batch needs Dask\'s distributed scheduler: pip install "handnst[cluster]"'
# A folder contributes the files with these extensions (the formats image.py names in its errors);
# a file given by name is used whatever its extension.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
# The options of handnst.transfer.stylize that a batch passes on to every job (the rest name one
# output, or blend several styles into one picture, which a cross product has no use for).
STYLIZE_OPTIONS = ("size", "style_size", "iters", "init", "seed", "content_weight", "style_weight", "tv_weight",
                   "tv_exponent", "content_layers", "style_layers", "style_layer_weights", "pooling",
                   "optimizer", "lr", "device", "preserve_color")


def require_dask():
    """Import Dask's distributed scheduler, or say in one line how to install it (InputError)."""
    try:
        import distributed
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return distributed


# ------------------------------------------------------------------------------------------ inputs

def find_images(paths, what):
    """Every image named by `paths`: a file as it is, a folder as its image files (sorted, not
    recursive, hidden files left out). A missing path or a folder without images is an InputError."""
    found = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path)
                           if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)
                           and os.path.isfile(os.path.join(path, n)))
            if not names:
                raise InputError(f"the {what} folder {path!r} holds no image files "
                                 f"({', '.join(e[1:] for e in IMAGE_EXTENSIONS)})")
            found.extend(os.path.join(path, n) for n in names)
        elif os.path.exists(path):
            found.append(path)
        else:
            raise InputError(f"the {what} {path!r} does not exist; give an image file or a folder of them")
    return list(dict.fromkeys(found))


def _stem(path):
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]


def check_stylize_options(options):
    """Validate stylize's options once, on the client, with the checks stylize itself runs, so that
    a typo stops the batch before anything is sent. Returns the options with defaults filled in.
    (The images themselves are checked where they are decoded, on the workers.)"""
    from handnst import options as T
    from handnst.losses import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS
    unknown = sorted(set(options) - set(STYLIZE_OPTIONS) - {"weights"})
    if unknown:
        raise InputError(f"unknown stylize option(s) for a batch: {', '.join(unknown)}")
    opts = {"size": T.DEFAULT_SIZE, "style_size": None, "iters": T.DEFAULT_ITERS, "init": T.DEFAULT_INIT,
            "seed": T.DEFAULT_SEED, "content_weight": T.DEFAULT_CONTENT_WEIGHT,
            "style_weight": T.DEFAULT_STYLE_WEIGHT, "tv_weight": T.DEFAULT_TV_WEIGHT,
            "tv_exponent": T.DEFAULT_TV_EXPONENT, "content_layers": list(DEFAULT_CONTENT_LAYERS),
            "style_layers": list(DEFAULT_STYLE_LAYERS), "style_layer_weights": None,
            "pooling": T.DEFAULT_POOLING, "optimizer": T.DEFAULT_OPTIMIZER, "lr": None,
            "device": T.DEFAULT_DEVICE, "preserve_color": False}
    opts.update({k: v for k, v in options.items() if k != "weights"})
    T._positive_int("--size", opts["size"], allow_none=True)
    T._positive_int("--style-size", opts["style_size"], allow_none=True)
    content_layers = T._layers("content", opts["content_layers"], allow_empty=True)
    style_layers = T._layers("style", opts["style_layers"], allow_empty=True)
    if not content_layers and not style_layers:
        raise InputError("give content layers, style layers, or both")
    T._weights_list("style layer weight", opts["style_layer_weights"], len(style_layers), "style layers")
    common = T._common_options(iters=opts["iters"], init=opts["init"], seed=opts["seed"],
                               content_weight=opts["content_weight"], style_weight=opts["style_weight"],
                               tv_weight=opts["tv_weight"], tv_exponent=opts["tv_exponent"],
                               pooling=opts["pooling"], optimizer=opts["optimizer"], lr=opts["lr"],
                               device=opts["device"], weights=None)
    opts.update(content_layers=list(content_layers), style_layers=list(style_layers), device=common["device"])
    return opts


def stylize_jobs(contents, styles, options=None):
    """One stylize job per (content, style) pair: OUT_DIR/<content>__<style>.png and .json.

    contents, styles: files or folders (see find_images). options: stylize's keyword options
    (checked here, once). --init FILE travels with every job as one more input.
    """
    opts = check_stylize_options(dict(options or {}))
    contents, styles = find_images(contents, "content"), find_images(styles, "style")
    jobs, names = [], {}
    for content in contents:
        for style in styles:
            name = f"{_stem(content)}__{_stem(style)}"
            if name in names:
                raise InputError(f"{names[name][0]!r} with {names[name][1]!r} and {content!r} with {style!r} "
                                 f"would both write {name}.png; rename one of the files")
            names[name] = (content, style)
            inputs = {"content": content, "style": style}
            job_opts = dict(opts)
            if opts["init"] not in ("content", "noise", "content+noise", "style"):
                inputs["init"] = job_opts.pop("init")
            jobs.append({"kind": "stylize", "name": name, "inputs": inputs, "options": job_opts,
                         "outputs": [name + ".png"]})
    return jobs


def train_jobs(styles, options=None, data=None):
    """One train job per style (files or folders): OUT_DIR/<style>.h5, the model `handnst apply` reads,
    and <style>.json, train's report. options: handnst.train.train's keyword options (iters, size,
    width, ...; checked by train itself on the workers). data: a folder of training photos, sent once
    to the workers as a zip archive through the scheduler, which holds it for the batch: fine for a
    few thousand photos, not for all of COCO (give the workers their own copy and a job kind that
    reads it, or a smaller sample); None for the bundled photos, which every worker has."""
    from handnst import train as T
    opts = dict(options or {})
    opts.setdefault("pooling", T.DEFAULT_POOLING)
    opts.setdefault("device", "cpu")
    jobs, names = [], {}
    for style in find_images(styles, "style"):
        name = _stem(style)
        if name in names:
            raise InputError(f"{names[name]!r} and {style!r} would both write {name}.h5; rename one of the files")
        names[name] = style
        inputs = {"style": style}
        if data is not None:
            if not os.path.isdir(data):
                raise InputError(f"the training photos {data!r} are not a folder; give a folder of photographs")
            inputs["data"] = data
        jobs.append({"kind": "train", "name": name, "inputs": inputs, "options": opts, "outputs": [name + ".h5"],
                     "folders": ["data"] if data is not None else []})
    return jobs


def grid_jobs(content, style, options=None, *, ratios=None, layer_sets=None):
    """The paper's Figure 3 as jobs: one stylize job per cell, "cell_<row>_<column>", row r matching
    the style on layer_sets[r] (each layer weighted equally), column c with alpha/beta = ratios[c]
    (content weight 1, style weight 1 / ratio), every cell from the same start (white noise with the
    seed, unless options say otherwise): the cells handnst.transfer.grid computes one by one."""
    from handnst import options as T
    ratios = list(T.GRID_RATIOS if ratios is None else ratios)
    layer_sets = [T._layers("style", s) for s in (T.GRID_LAYER_SETS if layer_sets is None else layer_sets)]
    if not ratios or any(not (isinstance(r, (int, float)) and math.isfinite(r) and r > 0) for r in ratios):
        raise InputError(f"every alpha/beta ratio must be a positive finite number, not {ratios!r}")
    opts = check_stylize_options(dict({"init": "noise"}, **(options or {})))
    base = stylize_jobs([content], [style], opts)
    if len(base) != 1:
        raise InputError("a grid takes one content image and one style image, not folders")
    jobs = []
    for r, layers in enumerate(layer_sets):
        for c, ratio in enumerate(ratios):
            name = f"cell_{r}_{c}"
            jobs.append(dict(base[0], name=name, outputs=[name + ".png"],
                             options=dict(base[0]["options"], content_weight=1.0, style_weight=1.0 / ratio,
                                          style_layers=list(layers), style_layer_weights=None)))
    return jobs


def grid_picture(out_dir, jobs, ratios, layer_sets=None, title=None):
    """The labelled Figure 3 picture from the cells a batch of grid_jobs wrote into out_dir."""
    from handnst import options as T
    from handnst.image import load_image
    from handnst.transfer import grid_picture as compose
    layer_sets = [tuple(s) for s in (T.GRID_LAYER_SETS if layer_sets is None else layer_sets)]
    cells = [[load_image(os.path.join(out_dir, f"cell_{r}_{c}.png")) for c in range(len(ratios))]
             for r in range(len(layer_sets))]
    return compose(cells, layer_sets, ratios, jobs[0]["options"]["iters"], title)


# ---------------------------------------------------------------------------------- on the client



def _write_json(path, data):
    from handnst.fileio import atomic_write_text
    atomic_write_text(path, json.dumps(json_safe(data), indent=2) + "\n")


def _job_identity(job):
    """What makes two jobs the same job: kind, inputs and options (as JSON would store them)."""
    inputs = {role: os.path.abspath(path) for role, path in job["inputs"].items()}
    return json.loads(json.dumps(json_safe({"kind": job["kind"], "inputs": inputs, "options": job["options"]})))


def report_path(job, out_dir):
    return os.path.join(out_dir, job["name"] + ".json")


def is_complete(job, out_dir):
    """A job is complete when its report (written last) and every output exist, and the report
    was written by the same job with the same options: a batch rerun with other options redoes it."""
    try:
        with open(report_path(job, out_dir), encoding="utf-8") as fh:
            report = json.load(fh)
    except (OSError, ValueError):
        return False
    return (report.get("batch_job") == _job_identity(job)
            and all(os.path.isfile(os.path.join(out_dir, name)) for name in job["outputs"]))


def check_out_dir(out_dir):
    """OUT_DIR exists (it is created if only it is missing) and can be written."""
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError(f"-o {out_dir!r} is a file; give the folder the pictures should go to")
    if not os.path.isdir(out_dir):
        parent = os.path.dirname(os.path.abspath(out_dir))
        if not os.path.isdir(parent):
            raise InputError(f"the folder above -o {out_dir!r} does not exist ({parent}); create it first")
        try:
            os.mkdir(out_dir)
        except OSError as exc:
            raise InputError(f"cannot create the output folder {out_dir!r} ({exc.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"the output folder {out_dir!r} is not writable; choose another folder")
    return out_dir


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plan_local_cluster(n_jobs, jobs=(), workers=None, cores=None):
    """(worker processes, BLAS threads per worker) for a local cluster.

    Small images scale badly over BLAS threads, so one job per core in its own process is the most
    throughput: as many workers as cores (no more than there are jobs), and the cores left over go to
    the workers as BLAS threads, so that workers x threads = cores and nothing is oversubscribed.
    Fewer workers when the memory would not hold that many jobs at once (handnst.memory's estimate), and
    one on a GPU, which the workers would otherwise share. `workers` (--workers N) overrides.
    """
    cores = cores or _cores()
    if workers is None:
        workers = max(1, min(cores, n_jobs))
        stylize = [j for j in jobs if j["kind"] == "stylize"]
        if stylize and any(j["options"].get("device") == "gpu" for j in stylize):
            workers = 1
        elif stylize:
            from handnst import memory
            need = max(memory.estimate_memory((j["options"]["size"] or 512,) * 2,
                                              j["options"]["content_layers"] + j["options"]["style_layers"])
                       for j in stylize)
            free = memory.available_memory()
            if free:
                workers = max(1, min(workers, int(memory.MEMORY_FRACTION * free // need)))
    return workers, max(1, cores // workers)


def start_local_cluster(workers, threads):
    """A Dask LocalCluster on loopback: `workers` processes of one task thread each, BLAS on `threads`.

    BLAS reads its thread count when NumPy loads, so it is set in the environment the nanny gives a
    worker process before it starts (Dask's default pins it to 1), for restarted workers too. No dashboard, so that no fixed port is taken. No memory limit
    of Dask's: handnst's own memory check refuses a job that would not fit. The workers start with
    Ctrl-C ignored (an ignored signal stays ignored in a child): the terminal sends it to every
    process of the command, and the client, not each worker, decides what it means; their logs
    are kept to what is critical, since the client reports every job's fate itself.
    """
    distributed = require_dask()
    import logging
    import signal

    import dask
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    env.update({var: str(threads) for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    env["DASK_LOGGING__DISTRIBUTED"] = "critical"
    dask.config.set({"distributed.nanny.pre-spawn-environ": env})
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:   # not the main thread: leave the signal alone
        previous = None
    try:
        return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        host="127.0.0.1", dashboard_address=None, memory_limit=0)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _read_inputs(jobs):
    """{path: bytes} for every input of the jobs, each file read once; {path: error} for the rest."""
    from handnst.image.io import _check_readable_file
    data, errors = {}, {}
    for job in jobs:
        for path in job["inputs"].values():
            if path in data or path in errors:
                continue
            try:
                if os.path.isdir(path):
                    data[path] = _zip_folder(path)
                    continue
                _check_readable_file(path)
                with open(path, "rb") as fh:
                    data[path] = fh.read()
            except InputError as exc:
                errors[path] = _one_line(exc)
            except OSError as exc:
                errors[path] = f"cannot read {path!r} ({exc.strerror or exc})"
    return data, errors


def _zip_folder(folder):
    """A folder's files (hidden ones left out) as the bytes of one zip archive (stored, not compressed:
    photographs do not shrink)."""
    import io
    import zipfile
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(f for f in files if not f.startswith(".")):
                path = os.path.join(root, name)
                archive.write(path, os.path.relpath(path, folder))
    return buffer.getvalue()


def _load_weights(path):
    """The weights payload broadcast to the workers: the client's file, read and checked once."""
    from handnst.weights import ensure_weights, load_weights
    source = ensure_weights(path)
    params, meta = load_weights(source)
    st = os.stat(source)
    key = f"{os.path.abspath(source)}:{st.st_size}:{st.st_mtime_ns}"   # lets workers keep their network
    return {"params": params, "meta": meta, "source": source, "key": key}


class _Bar:
    """Progress over jobs: done and failed out of the total, how many are running, tqdm's ETA."""

    def __init__(self, total, show, running):
        from tqdm import tqdm
        self.bar = tqdm(total=total, file=sys.stderr, disable=not show, unit="job", dynamic_ncols=True,
                        leave=True, smoothing=0)
        self.failed, self.running = 0, running
        self.update(0)

    def update(self, n, failed=False, running=None):
        self.failed += bool(failed)
        if running is not None:
            self.running = running
        self.bar.set_postfix({"running": self.running, "failed": self.failed}, refresh=False)
        self.bar.update(n)

    def write(self, line):
        self.bar.write(line, file=sys.stderr)

    def close(self):
        self.bar.close()


def _exit_code(entries, interrupted):
    if interrupted:
        return 130
    codes = {e["exit_code"] for e in entries if e["status"] == "failed"}
    return 1 if 1 in codes else (2 if codes else 0)


def run_batch(jobs, out_dir, *, weights=None, workers=None, scheduler=None, client=None, progress=False,
              log=None, task=None):
    """Run the jobs on Dask, writing each job's outputs and report into out_dir as it finishes.

    weights:   the VGG19 weights file (default: found, or fetched, as for stylize)
    workers:   worker processes of the local cluster (default: see plan_local_cluster)
    scheduler: address of an existing Dask scheduler ("tcp://host:8786") instead of a local cluster
    client:    an existing distributed.Client to use (tests; it is left open)
    progress:  a progress bar over the jobs on stderr; log(line): status lines
    task:      the function the workers run (default run_job; tests wrap it)

    Returns the summary (also written to out_dir/summary.json): one entry per job with its status
    ("done", "skipped", "failed", "cancelled"), error, seconds and worker; counts; "exit_code"
    (0 all complete, 2 some failed on bad input, 1 some failed while running, 130 interrupted).
    Ctrl-C cancels what is left and returns with exit code 130; every finished output stays.
    """
    say = log or (lambda line: None)
    out_dir = check_out_dir(out_dir)
    t0 = time.perf_counter()
    entries = {job["name"]: {"name": job["name"], "kind": job["kind"], "status": "pending",
                             "inputs": job["inputs"], "outputs": [os.path.join(out_dir, n) for n in job["outputs"]],
                             "report": report_path(job, out_dir), "error": None, "exit_code": 0,
                             "seconds": None, "worker": None} for job in jobs}
    summary = {"out_dir": out_dir, "jobs": list(entries.values()), "cluster": None}

    def finish(interrupted=False):
        counts = {s: sum(e["status"] == s for e in entries.values())
                  for s in ("done", "skipped", "failed", "cancelled")}
        summary.update(counts=counts, seconds=time.perf_counter() - t0, interrupted=interrupted,
                       exit_code=_exit_code(entries.values(), interrupted))
        _write_json(os.path.join(out_dir, SUMMARY_NAME), summary)
        return summary

    todo = []
    for job in jobs:
        if is_complete(job, out_dir):
            entries[job["name"]]["status"] = "skipped"
        else:
            todo.append(job)
    if len(todo) < len(jobs):
        say(f"skipping {len(jobs) - len(todo)} of {len(jobs)} jobs whose outputs in {out_dir} are complete")
    if not todo:
        return finish()
    data, unreadable = _read_inputs(todo)
    runnable = []
    for job in todo:
        bad = [unreadable[p] for p in job["inputs"].values() if p in unreadable]
        if bad:
            entries[job["name"]].update(status="failed", error=bad[0], exit_code=2)
        else:
            runnable.append(job)
    if not runnable:
        return finish()
    payload = _load_weights(weights)
    distributed = require_dask()

    own_cluster = own_client = None
    bar = None
    interrupted = False
    pending = set()
    plugin = None
    try:
        if client is None:
            if scheduler is not None:
                try:
                    own_client = client = distributed.Client(scheduler, timeout="20s")
                except (OSError, TimeoutError, ValueError) as exc:
                    raise RunError(f"cannot reach the Dask scheduler at {scheduler} ({_one_line(exc)}); is "
                                   "`dask scheduler` running there, and is the address right?") from None
            else:
                n, threads = plan_local_cluster(len(runnable), runnable, workers)
                say(f"starting a local Dask cluster: {n} worker process{'es' if n > 1 else ''} x "
                    f"{threads} BLAS thread{'s' if threads > 1 else ''}")
                own_cluster = start_local_cluster(n, threads)
                own_client = client = distributed.Client(own_cluster)
        slots = sum(client.nthreads().values())
        if not slots:
            say("waiting for a Dask worker to join the scheduler")
            client.wait_for_workers(1)
            slots = sum(client.nthreads().values())
        summary["cluster"] = {"scheduler": client.scheduler.address, "workers": len(client.nthreads()),
                              "task_threads": slots}
        say(f"{len(runnable)} jobs on {len(client.nthreads())} Dask worker(s) at {client.scheduler.address}; "
            f"outputs go to {out_dir}")

        # Everything a job needs goes out once: the weights to every worker, each input file to
        # the scheduler (a worker fetches it when a job of its needs it).
        token = os.urandom(4).hex()
        plugin = f"handnst-weights-{token}"
        client.register_plugin(WeightsPlugin(payload, plugin), name=plugin)
        paths = sorted({p for job in runnable for p in job["inputs"].values()})
        with warnings.catch_warnings():   # inputs ride in the graph on purpose (see the module docstring)
            warnings.filterwarnings("ignore", message="Large object", category=UserWarning)
            input_futures = {p: client.submit(_keep, data[p], pure=False, key=f"handnst-input-{i}-{token}")
                             for i, p in enumerate(paths)}
        futures = {}
        for job in runnable:
            inputs = {role: (path, input_futures[path]) for role, path in job["inputs"].items()}
            future = client.submit(task or run_job, job, inputs, plugin, pure=False,
                                   key=f"handnst-{job['name']}-{token}")
            futures[future] = job
            entries[job["name"]]["status"] = "queued"
        bar = _Bar(len(runnable), progress, min(slots, len(runnable)))
        pending.update(futures)
        for future in distributed.as_completed(list(futures)):
            job = futures[future]
            pending.discard(future)
            entry = entries[job["name"]]
            try:
                result = future.result()
            except Exception as exc:
                if type(exc).__name__ == "KilledWorker":
                    error = ("its worker died every time it ran it (killed, or out of memory?); see the "
                             "workers' logs")
                else:
                    error = f"{type(exc).__name__}: {_one_line(exc)}"
                result = {"status": "failed", "error": error, "exit_code": 1, "files": {}, "report": None}
            if result["status"] == "done":
                _write_outputs(job, result, out_dir)
            entry.update(status=result["status"], error=result.get("error"), exit_code=result["exit_code"],
                         seconds=result.get("seconds"), worker=result.get("worker"))
            line = (f"{job['name']}: done in {result['seconds']:.1f} s on {result['worker']}"
                    if result["status"] == "done" else f"{job['name']}: failed: {result['error']}")
            if log is not None and progress:
                bar.write(f"handnst: {line}")   # above the bar, not through it
            else:
                say(line)
            bar.update(1, failed=result["status"] == "failed", running=min(slots, len(pending)))
            _write_json(os.path.join(out_dir, SUMMARY_NAME), summary)   # a killed client still leaves one
    except KeyboardInterrupt:
        interrupted = True
        if client is not None and pending:
            client.cancel(list(pending))
        for entry in entries.values():
            if entry["status"] in ("pending", "queued"):
                entry["status"] = "cancelled"
    finally:
        if bar is not None:
            bar.close()
        if plugin is not None and own_cluster is None:
            with contextlib.suppress(Exception):   # a shared cluster should not keep 80 MB per batch
                client.unregister_worker_plugin(plugin)
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
    return finish(interrupted)


def _write_outputs(job, result, out_dir):
    """Each output file atomically, then the report (the mark of a complete job) atomically."""
    from handnst.fileio import atomic_path
    for name, data in result["files"].items():
        with atomic_path(os.path.join(out_dir, name), suffix=".tmp") as tmp:
            with open(tmp, "wb") as fh:
                fh.write(data)
    report = dict(result["report"])
    report["output"] = os.path.join(out_dir, job["outputs"][0])
    report["worker"] = result.get("worker")
    report["batch_job"] = _job_identity(job)
    _write_json(report_path(job, out_dir), report)


__all__ = ["find_images", "stylize_jobs", "train_jobs", "grid_jobs", "grid_picture", "check_stylize_options", "run_batch", "is_complete",
           "plan_local_cluster", "start_local_cluster", "require_dask", "SUMMARY_NAME"]
