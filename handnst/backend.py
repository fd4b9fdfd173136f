"""One place that decides the array module: NumPy on the CPU, CuPy on the GPU.

Every layer and loss is written against an array module `xp` that it takes from here, in the idiom of
CuPy's `get_array_module`: code never calls `np.` on an array that may live on the device, and every
copy between host and device goes through `to_device` / `to_host`, so it can be seen in the code.

    xp = get_xp("numpy")          # or "cupy"
    xp = array_module(some_array) # the module the array belongs to

The one operation the fast convolution needs beyond plain `xp` is a matrix product that *adds into* an
existing output (BLAS `gemm` with beta = 1): `gemm(a, b, out, accumulate=True)`. On NumPy it calls
SciPy's BLAS directly, so that nine shifted products accumulate without a temporary; on CuPy it uses
cuBLAS through CuPy.
"""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from handnst.errors import InputError

BACKENDS = ("numpy", "cupy")
DTYPES = ("float32", "float64")
_ALIASES = {"cpu": "numpy", "gpu": "cupy", "cuda": "cupy", "np": "numpy", "cp": "cupy"}


def canonical_backend(backend):
    """'cpu'/'numpy' -> 'numpy', 'gpu'/'cupy'/'cuda' -> 'cupy'; anything else is a clear error."""
    name = _ALIASES.get(str(backend).lower(), str(backend).lower())
    if name not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}: use 'cpu' (NumPy) or 'gpu' (CuPy)")
    return name


def _import_cupy():
    try:
        import cupy
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        raise InputError(
            "the GPU backend needs CuPy, which is not importable here "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
            "install the wheel matching your CUDA (e.g. pip install cupy-cuda12x) or use --device cpu"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise InputError(
            f"CuPy {cupy.__version__} is installed but no CUDA device can be used "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); use --device cpu"
        ) from None
    if count < 1:
        raise InputError(f"CuPy {cupy.__version__} is installed but sees no CUDA device; use --device cpu")
    return cupy


def get_xp(backend="numpy"):
    """The array module for a backend name ('numpy'/'cpu' or 'cupy'/'gpu')."""
    return _import_cupy() if canonical_backend(backend) == "cupy" else np


def gpu_available():
    """True when CuPy imports and sees at least one CUDA device (never raises)."""
    try:
        _import_cupy()
        return True
    except InputError:
        return False


def array_module(a):
    """The module (numpy or cupy) that array `a` belongs to: CuPy's get_array_module, without needing CuPy."""
    mod = type(a).__module__
    if mod.startswith("cupy"):
        import cupy
        return cupy
    return np


def backend_of(a):
    return "cupy" if array_module(a) is not np else "numpy"


def resolve_dtype(dtype):
    """'float32' (the default for real runs) or 'float64' (for gradient checks), as a NumPy dtype."""
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise InputError(f"unsupported dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return np.dtype(name)


def to_device(a, backend="numpy", dtype=None):
    """Copy a host array onto `backend` (a no-op for NumPy), optionally casting."""
    xp = get_xp(backend)
    out = xp.asarray(a)
    if dtype is not None:
        out = out.astype(resolve_dtype(dtype), copy=False)
    return out


def to_host(a):
    """A NumPy array with the values of `a`, wherever `a` lives (explicit device -> host copy)."""
    if array_module(a) is np:
        return np.asarray(a)
    return a.get()


def synchronize(xp):
    """Wait for queued device work (for honest timings); nothing to do on NumPy."""
    if xp is not np:
        xp.cuda.Stream.null.synchronize()


def _blas_gemm(dtype):
    from scipy.linalg import blas
    return blas.sgemm if dtype == np.float32 else blas.dgemm


def gemm(a, b, out, accumulate=False, trans_a=False, trans_b=False):
    """out = op(a) @ op(b), or out += op(a) @ op(b) when `accumulate`; op transposes when asked.

    a, b and out are 2-D and C-contiguous as stored (b and out may be contiguous row-slices of bigger
    buffers); `trans_a`/`trans_b` use their transposes without copying them. On NumPy this calls BLAS
    gemm on the transposed, Fortran-ordered views, so nothing is copied and the accumulation happens
    inside the kernel (beta = 1).
    """
    xp = array_module(out)
    if xp is np and out.dtype in (np.float32, np.float64):
        # A C-ordered matrix is the Fortran-ordered view of its transpose, so
        #   out = op(a) @ op(b)   <=>   out.T = op(b).T @ op(a).T
        # and BLAS reads b.T and a.T (Fortran order) plainly, or transposed when op transposes.
        f = _blas_gemm(out.dtype)
        started = None if _product_seconds is None else time.perf_counter()
        f(1.0, b.T, a.T, beta=1.0 if accumulate else 0.0, c=out.T, overwrite_c=1,
          trans_a=1 if trans_b else 0, trans_b=1 if trans_a else 0)
        if started is not None:
            _add_product_seconds(time.perf_counter() - started)
        return out
    _untimed_product()
    return generic_gemm(a, b, out, accumulate, trans_a, trans_b)


# ------------------------------------------------------------------------------ the product clock
#
# How much of an evaluation is matrix products, and how much everything else (transforms, ReLU,
# pooling, copies, the losses)? `handnst bench` asks by starting this clock around an evaluation:
# while it runs, every BLAS call of `gemm` above adds its seconds here. Stopped (None, the default),
# gemm reads no clock at all. Only host BLAS can be timed: CuPy's products are queued on the GPU and
# return before they are done, so a product on the generic path turns the clock's reading into
# "unknown" (None) rather than let it read too little.
# gemm is called from one thread at a time (split_run's helper threads only do elementwise work).
_product_seconds = None


def _add_product_seconds(seconds):
    global _product_seconds
    _product_seconds += seconds


def _untimed_product():
    global _product_seconds
    _product_seconds = None


def start_product_clock():
    """From now on, every BLAS product that `gemm` makes adds its seconds to the clock (from 0)."""
    global _product_seconds
    _product_seconds = 0.0


def stop_product_clock():
    """Seconds spent inside BLAS products since start_product_clock; the clock is off afterwards.
    None when it was not running, or when a product ran where it cannot be timed (on the GPU)."""
    global _product_seconds
    seconds, _product_seconds = _product_seconds, None
    return seconds


def generic_gemm(a, b, out, accumulate=False, trans_a=False, trans_b=False):
    """The same contract with plain `@` (the path CuPy takes, where cuBLAS does the product).

    It works on any backend, so the tests can run the whole network through it on NumPy too.
    """
    prod = (a.T if trans_a else a) @ (b.T if trans_b else b)
    if accumulate:
        out += prod
    else:
        out[...] = prod
    return out


def column_sums(a):
    """a.sum(axis=0) for a 2-D array (L, C), as the product a^T ones through BLAS (gemv): on NumPy
    three times faster than a column-wise sum, whose inner loop is only C long, and summed by BLAS's
    blocked accumulation rather than one running float32 sum per column."""
    xp = array_module(a)
    if xp is not np or a.ndim != 2 or a.dtype not in (np.float32, np.float64) or not a.flags.c_contiguous:
        return a.sum(axis=0)
    from scipy.linalg import blas
    gemv = blas.sgemv if a.dtype == np.float32 else blas.dgemv
    return gemv(1.0, a.T, np.ones(a.shape[0], dtype=a.dtype))


def matmul(a, b, out=None):
    """a @ b for 2-D arrays, through the same BLAS as `gemm` (into `out` if given, C-contiguous).

    Why not plain `@`: NumPy and SciPy each ship their own copy of OpenBLAS, each with its own pool
    of threads, and an OpenBLAS thread keeps spinning for a while after its work is done. Mixing
    `@` (NumPy's copy) with `gemm` (SciPy's) makes the two pools fight over the cores and slows
    the convolutions that follow the loss by a third on a 2-core machine. So the hot path uses one
    BLAS. Operands may be C-ordered or transposed views of C-ordered arrays (no copy then).
    """
    xp = array_module(a)
    if (xp is not np or a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype
            or a.dtype not in (np.float32, np.float64)):
        _untimed_product()
        return xp.matmul(a, b, out=out)

    def stored(m):   # (C-contiguous array holding m, whether m is its transpose)
        if m.flags.c_contiguous:
            return m, False
        if m.flags.f_contiguous:
            return m.T, True
        return np.ascontiguousarray(m), False

    A, trans_a = stored(a)
    B, trans_b = stored(b)
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    return gemm(A, B, out, trans_a=trans_a, trans_b=trans_b)


# ------------------------------------------------------------------------- freed memory, kept

# glibc's malloc hands every block over 128 KiB-32 MiB straight back to the kernel when it is freed,
# so each large NumPy temporary of every call (a feature map, an im2col matrix) comes from fresh
# pages that the kernel must fault in and zero on first touch: about 10,000 faults per 512x384
# forward pass of the transformation network. On the 2-core virtual machine of the README, applying
# took 0.63 s with the freed memory kept against 0.73-1.10 s without (the faults' cost there varies
# with the host), and a training step 1.47-1.52 s against 1.62-1.70 s. The price is some peak
# memory, as freed blocks are no longer given back (measured: apply on 1024x768 474 MiB against 401,
# train --size 256 --batch 4 1.11 GiB against 1.04, stylize --size 512 911 MiB against 899).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BELOW_BYTES = 1 << 30
# An optimization of the pixels (stylize and the other VGG19 objectives) is the other way round: its
# big arrays (the maps, the transformed filters, the Winograd scratch, L-BFGS-B's memory) are made
# once and live for the whole run, and all sit together at the peak. Kept in the heap among the
# smaller blocks that come and go, they leave gaps that the heap never gives back: a 512x512 run
# peaked at 1053 MiB with every block kept against 1011 MiB with blocks from 16 MiB up in mappings
# of their own (measured with /usr/bin/time -v, 30 iterations), and no slower (552 page faults per
# evaluation, under 5 ms of system time). The feed-forward network keeps the 1 GiB bound: its maps
# of tens of MB come and go with every image (apply at 512x384: 4 s of system time in 9 runs with
# the 16 MiB bound against 0.17 s).
OWN_MAPPING_FROM_BYTES = 16 << 20


def keep_freed_memory(own_mapping_from=KEEP_BELOW_BYTES):
    """Ask glibc's malloc to keep freed blocks for reuse instead of returning them to the kernel:
    blocks below `own_mapping_from` bytes come from the heap, which is trimmed only past 1 GiB of
    free space (mallopt M_MMAP_THRESHOLD and M_TRIM_THRESHOLD); bigger ones get mappings of their
    own. The command line calls this, with OWN_MAPPING_FROM_BYTES for the optimizations of the
    pixels; a program using handnst as a library may too. Does nothing where the C library is not
    glibc, or when the environment already sets MALLOC_MMAP_THRESHOLD_ (the user's choice wins).
    Returns whether it took."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is not None:
        return False
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, int(own_mapping_from))) and \
            bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_BELOW_BYTES))
    except (OSError, AttributeError):
        return False


# ------------------------------------------------------------------------------- two threads
#
# BLAS runs the products on every core, but NumPy's elementwise passes (ReLU masks, pooling, the
# Winograd transforms, the losses' differences) run on one. NumPy lets go of the GIL inside them, so
# a second Python thread can take half of a pass and both cores stream memory. One helper thread,
# made on first use and kept, does the second half; the calling thread does the first.

_helper = None
_helper_lock = threading.Lock()
PARALLEL_MIN_ITEMS = 2
PARALLEL_MIN_WORK = 1 << 16
# Off unless HANDNST_THREADS=2: measured at 256x192 on 2 cores, the helper thread made an evaluation
# 15 times slower (7.8 s against 0.53 s), because OpenBLAS's worker keeps spinning on the second core
# for a while after every product, and the Winograd layers alternate products and elementwise passes
# many times per layer. Kept, tested, for BLAS builds whose threads sleep at once.
PARALLEL_THREADS = 2 if os.environ.get("HANDNST_THREADS", "").strip() == "2" else 1


def _helper_pool():
    global _helper
    with _helper_lock:
        if _helper is None:
            _helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="handnst")
        return _helper


def split_run(fn, n, threads=2, work=None, xp=np):
    """fn(lo, hi) over 0..n: fn(0, n) alone, or with threads=2 fn(0, n // 2) here and fn(n // 2, n) on
    the helper thread at the same time. fn must write disjoint parts of its outputs for disjoint
    ranges (each half is an independent slice of the work). `work`, the number of array elements
    the call touches: below PARALLEL_MIN_WORK a second thread costs more than it saves, and fn runs alone.
    xp: the arrays' module; on CuPy the GPU runs each pass in parallel already, and fn runs alone."""
    if (threads < 2 or PARALLEL_THREADS < 2 or n < PARALLEL_MIN_ITEMS or xp is not np
            or (work is not None and work < PARALLEL_MIN_WORK)):
        fn(0, n)
        return
    half = n // 2
    other = _helper_pool().submit(fn, half, n)
    try:
        fn(0, half)
    finally:
        other.result()
