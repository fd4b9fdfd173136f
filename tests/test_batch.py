"""Batches on Dask: a local cluster of two worker processes runs small stylize jobs.

What is shown: the pictures equal those of the same jobs run one after another in this process
(same seeds, same pixels, compared exactly); a worker killed in the middle of a job has that job
rerun elsewhere, and it completes; a job with a bad input fails alone, with its one-line error; a
second run skips the jobs that are complete; the command's exit codes, Ctrl-C included.

Tiny images (32 pixels) and a few iterations; BLAS on one thread everywhere (conftest sets it for
this process, and the cluster's workers get one thread each), so that the two sides compute the
same products in the same order.
"""

import functools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from handnst import batch, transfer
from handnst import jobs as jobs_module
from handnst.errors import InputError
from handnst.image import sample_path

distributed = pytest.importorskip("distributed", reason="needs the cluster extra: pip install 'handnst[cluster]'")

CONTENT = sample_path("content")
OTHER = sample_path("coffee")
STYLE = sample_path("style")
OPTIONS = {"size": 32, "iters": 3, "init": "noise", "seed": 7, "content_weight": 1.0, "style_weight": 1e3}


@pytest.fixture(scope="module")
def client():
    cluster = batch.start_local_cluster(workers=2, threads=1)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def net(real_weights_path):
    from handnst.networks.vgg import load_vgg19
    return load_vgg19(real_weights_path)


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def worker_pid(entry):
    return int(entry["worker"].rsplit(":", 1)[1])


def by_name(summary):
    return {e["name"]: e for e in summary["jobs"]}


# ------------------------------------------------------------------------- jobs, without a cluster

def test_folders_expand_to_their_images_and_every_pair_is_a_job(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("b.png", "a.jpg", ".hidden.png", "notes.txt"):
        (folder / name).write_bytes(b"x")
    jobs = batch.stylize_jobs([str(folder)], [STYLE, OTHER], {"size": 32})
    assert [j["name"] for j in jobs] == ["a__swirls", "a__coffee", "b__swirls", "b__coffee"]
    assert all(j["outputs"] == [j["name"] + ".png"] for j in jobs)


@pytest.mark.parametrize("contents, options, words", [
    (["/no/such/folder"], {}, "does not exist"),
    ([CONTENT], {"style_layers": ["conv9_9"]}, "conv9_9"),
    ([CONTENT], {"style_layer_weights": [1, 2]}, "one per style layer"),
    ([CONTENT], {"init": "/no/such.png"}, "--init"),
])
def test_bad_options_and_paths_stop_the_batch_before_it_starts(contents, options, words):
    with pytest.raises(InputError, match=words):
        batch.stylize_jobs(contents, [STYLE], options)


def test_two_jobs_that_would_write_one_file_are_refused(tmp_path):
    other = tmp_path / "chelsea.png"
    Image.open(CONTENT).save(other)
    with pytest.raises(InputError, match="chelsea__swirls.png"):
        batch.stylize_jobs([CONTENT, str(other)], [STYLE])


def test_the_local_cluster_uses_every_core_once():
    jobs = batch.stylize_jobs([CONTENT], [STYLE], {"size": 32})
    for cores in (1, 2, 3, 8):
        for n_jobs in (1, 2, 8):
            workers, threads = batch.plan_local_cluster(n_jobs, jobs, cores=cores)
            assert 1 <= workers <= min(cores, n_jobs)
            assert threads == cores // workers    # the cores the workers leave go to BLAS, none twice
    assert batch.plan_local_cluster(8, jobs, workers=3, cores=2) == (3, 1)


# ---------------------------------------------------------------------------- on a local cluster

@pytest.mark.slow
def test_outputs_equal_the_same_jobs_run_one_after_another_and_a_rerun_skips_them(
        client, net, real_weights_path, tmp_path):
    jobs = batch.stylize_jobs([CONTENT, OTHER], [STYLE], OPTIONS)
    out = tmp_path / "out"
    summary = batch.run_batch(jobs, str(out), weights=real_weights_path, client=client)
    assert summary["exit_code"] == 0 and summary["counts"]["done"] == 2, summary
    for job in jobs:
        entry = by_name(summary)[job["name"]]
        assert worker_pid(entry) != os.getpid()          # it ran in a worker process
        alone = transfer.stylize(job["inputs"]["content"], job["inputs"]["style"], net=net, **OPTIONS)
        np.testing.assert_array_equal(pixels(out / job["outputs"][0]), np.asarray(alone.image))
        report = json.loads((out / f"{job['name']}.json").read_text())
        assert report["iterations"] == alone.iterations and report["evaluations"] == alone.evaluations
        assert report["loss"]["total"] == pytest.approx(alone.loss["total"], rel=1e-6)
        assert report["options"]["content"] == job["inputs"]["content"]      # the user's path, not the worker's
        assert report["size"] == list(alone.size) and len(report["history"]) == alone.iterations
    assert json.loads((out / batch.SUMMARY_NAME).read_text())["counts"]["done"] == 2
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]    # no temporary files left

    # Again: nothing runs and nothing is rewritten.
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*__*")}
    again = batch.run_batch(jobs, str(out), weights=real_weights_path, client=client)
    assert again["counts"] == {"done": 0, "skipped": 2, "failed": 0, "cancelled": 0}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*__*")} == before

    # A job whose report is gone (it was interrupted before its end) runs again, and only it;
    # so does every job when the options change.
    (out / f"{jobs[0]['name']}.json").unlink()
    resumed = batch.run_batch(jobs, str(out), weights=real_weights_path, client=client)
    assert [by_name(resumed)[j["name"]]["status"] for j in jobs] == ["done", "skipped"]
    changed = batch.stylize_jobs([CONTENT, OTHER], [STYLE], dict(OPTIONS, iters=2))
    assert not any(batch.is_complete(j, str(out)) for j in changed)


@pytest.mark.slow
def test_a_job_with_a_bad_input_fails_alone_with_its_one_line_error(client, real_weights_path, tmp_path):
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not the rest of a PNG file")
    jobs = batch.stylize_jobs([str(corrupt), CONTENT], [STYLE], dict(OPTIONS, iters=2))
    out = tmp_path / "out"
    summary = batch.run_batch(jobs, str(out), weights=real_weights_path, client=client)
    status = {name: e["status"] for name, e in by_name(summary).items()}
    assert status == {"broken__swirls": "failed", "chelsea__swirls": "done"}
    # It failed on its worker (the file is there and not empty), and the error names the user's file.
    error = by_name(summary)["broken__swirls"]["error"]
    assert str(corrupt) in error and "handnst-job-" not in error and "\n" not in error
    assert summary["exit_code"] == 2 and summary["counts"]["failed"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["chelsea__swirls.json", "chelsea__swirls.png", "summary.json"]


@pytest.mark.slow
def test_a_grid_run_as_a_batch_is_the_grid_run_here(client, net, real_weights_path, tmp_path):
    ratios, layer_sets = [1e-3, 1e-2], [["conv1_1"], ["conv1_1", "conv2_1"]]
    options = {"size": 32, "iters": 2, "seed": 3}
    jobs = batch.grid_jobs(CONTENT, STYLE, options, ratios=ratios, layer_sets=layer_sets)
    assert [j["name"] for j in jobs] == ["cell_0_0", "cell_0_1", "cell_1_0", "cell_1_1"]
    summary = batch.run_batch(jobs, str(tmp_path), weights=real_weights_path, client=client)
    assert summary["exit_code"] == 0, summary
    results = []
    here = transfer.grid(CONTENT, STYLE, ratios=ratios, layer_sets=layer_sets, results=results,
                         weights=real_weights_path, **options)
    for job, result in zip(jobs, results):
        np.testing.assert_array_equal(pixels(tmp_path / job["outputs"][0]), np.asarray(result.image))
    np.testing.assert_array_equal(np.asarray(batch.grid_picture(str(tmp_path), jobs, ratios, layer_sets)),
                                  np.asarray(here))


@pytest.mark.slow
def test_train_jobs_give_the_networks_that_training_here_gives(client, real_weights_path, tmp_path):
    from handnst import train
    from handnst.networks.transform import load_transform_net
    from handnst.networks.vgg import load_vgg19
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in (CONTENT, OTHER):
        Image.open(path).save(photos / (os.path.basename(path)[:-4] + ".png"))
    tiny = dict(size=32, batch=2, width=4, residual_blocks=1, iters=2, seed=5)
    jobs = batch.train_jobs([STYLE], tiny, data=str(photos))
    assert [j["outputs"] for j in jobs] == [["swirls.h5"]]
    summary = batch.run_batch(jobs, str(tmp_path / "out"), weights=real_weights_path, client=client)
    assert summary["exit_code"] == 0, summary
    here = train.train(STYLE, data=str(photos), vgg=load_vgg19(real_weights_path, pooling=train.DEFAULT_POOLING),
                       **tiny)
    there = load_transform_net(str(tmp_path / "out" / "swirls.h5"))
    assert sorted(there.params) == sorted(here.net.params)
    for name, value in here.net.params.items():
        np.testing.assert_array_equal(there.params[name], value, err_msg=name)
    report = json.loads((tmp_path / "out" / "swirls.json").read_text())
    assert report["options"]["style"] == STYLE and report["options"]["data"] == str(photos)


def _die_once(job, inputs, weights, *, victim, marker):
    """Test hook around run_job: the first worker to start `victim` writes its pid and dies at once."""
    if job["name"] == victim and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
        os._exit(1)   # no cleanup, no exception: as if the machine had killed it
    return jobs_module.run_job(job, inputs, weights)


@pytest.mark.slow
def test_a_killed_worker_has_its_job_retried_elsewhere_and_it_completes(client, real_weights_path, tmp_path):
    import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the workers cannot import this file
    jobs = batch.stylize_jobs([CONTENT, OTHER], [STYLE], dict(OPTIONS, iters=2))
    marker = tmp_path / "died"
    task = functools.partial(_die_once, victim=jobs[0]["name"], marker=str(marker))
    summary = batch.run_batch(jobs, str(tmp_path / "out"), weights=real_weights_path, client=client, task=task)
    assert marker.exists(), "the hook did not run: the test shows nothing"
    entry = by_name(summary)[jobs[0]["name"]]
    assert entry["status"] == "done" and summary["exit_code"] == 0, summary
    assert worker_pid(entry) != int(marker.read_text())   # finished by another process than the one that died
    assert (tmp_path / "out" / jobs[0]["outputs"][0]).is_file()


# ------------------------------------------------------------------------------------- the command

def run_cli(args, cwd, weights=None, python_prefix=()):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if weights:
        env["HANDNST_WEIGHTS"] = str(weights)
    return subprocess.run([sys.executable, *python_prefix, "-m", "handnst", "batch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_without_dask_the_command_says_how_to_install_it(tmp_path):
    # `distributed` set to None in sys.modules makes its import fail, as if it were not installed.
    code = ("import sys, runpy; sys.modules['distributed'] = None; sys.argv = ['handnst'] + sys.argv[1:]; "
            "runpy.run_module('handnst', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code, "batch", "--content", CONTENT, "--style", STYLE,
                           "-o", "out"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and 'pip install "handnst[cluster]"' in proc.stderr
    assert not (tmp_path / "out").exists()


def test_bad_input_is_one_line_exit_2_before_any_cluster(tmp_path):
    proc = run_cli(["--content", "missing/", "--style", STYLE, "-o", "out"], tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "missing/" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_command_runs_a_batch_on_a_running_cluster_then_resumes_it(client, real_weights_path, tmp_path):
    # --scheduler: the module's cluster stands in for one started with `dask scheduler` / `dask worker`.
    args = ["--content", CONTENT, OTHER, "--style", STYLE, "-o", "out", "--size", "32", "--iters", "1",
            "--scheduler", client.scheduler.address]
    proc = run_cli(args, tmp_path, real_weights_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 done" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "chelsea__swirls.json", "chelsea__swirls.png", "coffee__swirls.json", "coffee__swirls.png", "summary.json"]
    again = run_cli(args, tmp_path, real_weights_path)
    assert again.returncode == 0 and "2 skipped" in again.stdout, again.stderr


@pytest.mark.slow
def test_grid_with_a_scheduler_runs_its_cells_as_a_batch(client, real_weights_path, tmp_path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", HANDNST_WEIGHTS=str(real_weights_path))
    proc = subprocess.run([sys.executable, "-m", "handnst", "grid", CONTENT, STYLE, "-o", "grid.png", "--ratios", "1e-3",
                           "--size", "32", "--iters", "1", "--scheduler", client.scheduler.address, "--json", "grid.json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "grid_cells").glob("cell_*.png"))) == 5     # one per style-layer set
    report = json.loads((tmp_path / "grid.json").read_text())
    assert [c["row"] for c in report["cells"]] == [0, 1, 2, 3, 4] and report["size"] == list(Image.open(
        tmp_path / "grid.png").size)


@pytest.mark.slow
def test_train_with_a_scheduler_trains_one_network_per_style(client, real_weights_path, tmp_path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", HANDNST_WEIGHTS=str(real_weights_path))
    proc = subprocess.run([sys.executable, "-m", "handnst", "train", STYLE, OTHER, "-o", "models", "--size", "32",
                           "--batch", "1", "--iters", "1", "--width", "4", "--residual-blocks", "1",
                           "--scheduler", client.scheduler.address], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    from handnst.networks.transform import load_transform_net
    for name in ("swirls", "coffee"):
        assert load_transform_net(str(tmp_path / "models" / f"{name}.h5")).width == 4
    refused = subprocess.run([sys.executable, "-m", "handnst", "train", STYLE, "-o", "models", "--resume",
                              "--scheduler", client.scheduler.address], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and "--resume" in refused.stderr and refused.stderr.count("\n") == 1


@pytest.mark.slow
def test_ctrl_c_cancels_the_batch_and_keeps_the_finished_pictures(real_weights_path, tmp_path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", HANDNST_WEIGHTS=str(real_weights_path))
    out = tmp_path / "out"

    def as_in_a_terminal():
        os.setsid()   # its own process group, which Ctrl-C signals as a whole
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(
        [sys.executable, "-m", "handnst", "batch", "--content", CONTENT, OTHER, "--style", STYLE, OTHER, CONTENT,
         "-o", "out", "--size", "32", "--iters", "8", "--workers", "2"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=as_in_a_terminal)
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    summary = json.loads((out / batch.SUMMARY_NAME).read_text())
    assert summary["interrupted"] and summary["counts"]["cancelled"] >= 1
    done = [e for e in summary["jobs"] if e["status"] == "done"]
    assert done and all(os.path.isfile(os.path.join(tmp_path, e["outputs"][0])) for e in done)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert "resume" in stderr
