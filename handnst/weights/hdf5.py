"""The project's HDF5 weights format: reading and validating it, writing it atomically."""

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from handnst.errors import InputError, RunError
from handnst.fileio import atomic_path
from handnst.weights.layout import CONV_NAMES, WEIGHT_SHAPES


FORMAT_NAME = "handnst-vgg19"
FORMAT_VERSION = 1
DEFAULT_FILENAME = "vgg19.h5"
ENV_VAR = "HANDNST_WEIGHTS"
FETCH_HINT = "run `handnst weights fetch` to download them"


# ------------------------------------------------------------------------- atomic writes of files

def _check_output_folder(path):
    """Create the folder of `path` if needed and make sure a file can be created there, so that a
    bad --output is refused before a download or a conversion, not after it (InputError)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"--output {path} is a directory; give a file name such as {path / DEFAULT_FILENAME}")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot write {path}: {ancestor} is a file, not a folder; choose another --output")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder {path.parent} for {path} ({exc.strerror or exc}); "
                         f"choose another --output") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
    except OSError as exc:   # a read-only or foreign folder
        raise InputError(f"cannot write {path}: the folder {path.parent} is not writable ({exc.strerror or exc}); "
                         f"choose another --output") from None
    os.close(fd)
    os.unlink(probe)


@contextmanager
def _atomic_path(path):
    """Yield a temporary path next to `path` that replaces it in one step on success (see
    handnst.fileio.atomic_path); a folder that cannot be written is a clear InputError."""
    path = Path(path)
    _check_output_folder(path)
    try:
        with atomic_path(path, suffix=".h5.tmp") as tmp:
            yield tmp
    except PermissionError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}; choose another --output") from None
    except OSError as exc:
        # a full disk, a vanished folder: the old file (if any) is untouched and no temporary is left
        raise RunError(f"could not write {path} ({exc.strerror or exc}); nothing was written there") from None


# ------------------------------------------------------------------------------- the HDF5 format

def _check_convention(conv, origin):
    """Validate an input-convention dict; returns a clean copy with floats and lists."""
    try:
        order = str(conv["channel_order"])
        scale = float(conv["scale"])
        mean = [float(v) for v in conv["mean"]]
        std = None if conv.get("std") is None else [float(v) for v in conv["std"]]
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{origin}: the input convention (channel_order, scale, mean, std) is missing or "
                         f"malformed; re-create the file with `handnst weights fetch --force`") from None
    ok = (order in ("RGB", "BGR") and np.isfinite(scale) and scale > 0 and len(mean) == 3
          and np.all(np.isfinite(mean)) and (std is None or (len(std) == 3 and np.all(np.isfinite(std))
                                                             and min(std) > 0)))
    if not ok:
        raise InputError(f"{origin}: invalid input convention (channel_order={order}, scale={scale}, "
                         f"mean={mean}, std={std}); re-create the file with `handnst weights fetch --force`")
    return {"channel_order": order, "scale": scale, "mean": mean, "std": std}


def _check_params(params, origin):
    """Check that `params` holds all 16 layers with the right shapes, float32 and finite values."""
    missing = [name for name in CONV_NAMES if name not in params]
    if missing:
        raise InputError(f"{origin}: missing layer(s) {', '.join(missing)}; this is not a complete VGG19")
    for name in CONV_NAMES:
        w, b = params[name]
        (w_shape, b_shape) = WEIGHT_SHAPES[name]
        for what, array, shape in (("weight", w, w_shape), ("bias", b, b_shape)):
            if tuple(array.shape) != shape:
                raise InputError(f"{origin}: {name} {what} has shape {tuple(array.shape)}, expected {shape}; "
                                 f"this is not VGG19")
            if array.dtype != np.float32:
                raise InputError(f"{origin}: {name} {what} is {array.dtype}, expected float32")
            if not np.all(np.isfinite(array)):
                raise InputError(f"{origin}: {name} {what} contains NaN or infinite values; the file is "
                                 f"damaged, fetch it again with `handnst weights fetch --force`")


def _attr_value(value):
    """h5py attribute -> plain Python (str, float, int, list)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_attr_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_weights(path):
    """Read and validate a weights file in the project's format.

    Returns (params, meta): params maps each of the 16 names conv1_1 ... conv5_4 to
    (weight float32 (out, in, 3, 3), bias float32 (out,)); meta holds the root attributes as plain
    Python values plus "convention", the input-convention dict. Every problem is an InputError.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise InputError(f"weights file {path} does not exist; {FETCH_HINT}")
    import h5py
    if not h5py.is_hdf5(path):
        raise InputError(f"{path} is not an HDF5 file (damaged, truncated, or another format); fetch the "
                         f"weights again with `handnst weights fetch --force`, or convert other formats "
                         f"with `handnst weights convert`")
    try:
        with h5py.File(path, "r") as f:
            meta = {key: _attr_value(value) for key, value in f.attrs.items()}
            if meta.get("format") != FORMAT_NAME:
                hint = (" (it looks like a Keras weights file: convert it with "
                        f"`handnst weights convert {path} --output weights/vgg19.h5`)"
                        if "block1_conv1" in f else "")
                raise InputError(f"{path} is not a handnst weights file: its `format` attribute is "
                                 f"{meta.get('format')!r}, expected {FORMAT_NAME!r}{hint}")
            if int(meta.get("format_version", 0)) > FORMAT_VERSION:
                raise InputError(f"{path} uses format version {meta.get('format_version')}, newer than this "
                                 f"handnst understands ({FORMAT_VERSION}); upgrade handnst")
            missing = [name for name in CONV_NAMES
                       if not (name in f and "weight" in f[name] and "bias" in f[name])]
            if missing:
                raise InputError(f"{path}: missing layer(s) {', '.join(missing)}; fetch the weights again "
                                 f"with `handnst weights fetch --force`")
            params = {}
            for name in CONV_NAMES:
                group = f[name]
                params[name] = (group["weight"][()], group["bias"][()])
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"cannot read {path} ({exc}); the file is damaged or truncated, fetch it again "
                         f"with `handnst weights fetch --force`") from None
    _check_params(params, path)
    meta["convention"] = _check_convention(
        {"channel_order": meta.get("channel_order"), "scale": meta.get("scale"),
         "mean": meta.get("mean"), "std": meta.get("std")}, path)
    return params, meta


def file_stamp(path):
    """(size, modification time) of a file: enough to notice that it was replaced since it was read."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def load_layer(path, name, stamp=None):
    """One layer's (weight, bias) read again from a weights file that load_weights has read before.

    The network keeps in memory only the filters it runs with; when it needs a layer's plain filters
    again (another map size asks for another Winograd form), it reads them from the file here.
    `stamp`, the file_stamp taken at the first reading: a file changed since then is an InputError,
    because its weights would no longer be the ones the network was built from.
    """
    path = str(path)
    try:
        if stamp is not None and file_stamp(path) != tuple(stamp):
            raise InputError(f"the weights file {path} changed while handnst was using it; run again")
        import h5py
        with h5py.File(path, "r") as f:
            w, b = f[name]["weight"][()], f[name]["bias"][()]
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"cannot read {name} from {path} again ({exc}): the weights file was moved or "
                         f"damaged while handnst was using it; run again") from None
    return w, b


def save_weights(path, params, meta):
    """Write `params` (as returned by load_weights) and `meta` atomically in the project's format.

    `meta` needs "convention" (the input-convention dict); "source", "license", "attribution" and
    "source_sha256" are recorded when given, like any other plain string or number entry.
    """
    _check_params(params, "weights to save")
    convention = _check_convention(meta.get("convention") or {}, "weights to save")
    import h5py
    with _atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["channel_order"] = convention["channel_order"]
            f.attrs["scale"] = convention["scale"]
            f.attrs["mean"] = np.asarray(convention["mean"], dtype=np.float64)
            if convention["std"] is not None:     # no std attribute means "do not divide"
                f.attrs["std"] = np.asarray(convention["std"], dtype=np.float64)
            for key, value in meta.items():
                if key in ("convention", "format", "format_version", "channel_order", "scale", "mean", "std"):
                    continue
                if isinstance(value, (str, int, float)):
                    f.attrs[key] = value
            for name in CONV_NAMES:
                w, b = params[name]
                group = f.create_group(name)
                group.create_dataset("weight", data=np.ascontiguousarray(w, dtype=np.float32))
                group.create_dataset("bias", data=np.ascontiguousarray(b, dtype=np.float32))
    return str(path)
