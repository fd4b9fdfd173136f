"""Where a benchmark ran: CPU, cores, BLAS, library versions, load, GPU (for `handnst bench`'s report)."""

import os
import platform

import numpy as np

from handnst.backend import canonical_backend, get_xp


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _blas_of(module):
    """Name and version of the BLAS a module (numpy or scipy) was built with, from its show_config."""
    try:
        config = module.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return {"name": blas.get("name"), "version": blas.get("version")}
    except Exception:       # older versions print instead of returning a dict
        return {"name": None, "version": None}


def machine_info(backend="numpy"):
    """A JSON-friendly description of where the numbers were taken: CPU, cores, BLAS, versions, GPU."""
    import scipy
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        # handnst.backend.gemm calls SciPy's BLAS wrappers, so SciPy's BLAS is the one that runs.
        "blas": _blas_of(scipy),
        "numpy_blas": _blas_of(np),
        # Other processes busy on the same cores make every timing slower: the load says if they were.
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                       if k in os.environ},
    }
    try:   # optional: threadpoolctl knows the thread count each loaded BLAS really uses
        import threadpoolctl
        info["threadpools"] = [{k: p.get(k) for k in ("internal_api", "version", "num_threads")}
                               for p in threadpoolctl.threadpool_info()]
    except Exception:
        pass
    if canonical_backend(backend) == "cupy":
        cupy = get_xp("cupy")
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props.get("name", b"")
        info["gpu"] = {
            "name": name.decode(errors="replace") if isinstance(name, bytes) else str(name),
            "memory_bytes": int(props.get("totalGlobalMem", 0)),
            "cupy": cupy.__version__,
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        }
    return info
