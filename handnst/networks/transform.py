"""The image transformation network of feed-forward style transfer (Johnson, Alahi & Fei-Fei, 2016,
with instance normalization as Ulyanov, Vedaldi & Lempitsky, 2016), forward and backward by hand.

Width w (32 by default; 16 is the "half" network) and R residual blocks (5 by default):

    conv1   9x9 stride 1,   3 -> w,   norm1, ReLU            full size
    conv2   3x3 stride 2,   w -> 2w,  norm2, ReLU            1/2 size
    conv3   3x3 stride 2,  2w -> 4w,  norm3, ReLU            1/4 size
    res1 .. resR:  y = x + norm2(conv2(relu(norm1(conv1(x)))))   3x3 stride 1, 4w -> 4w, no ReLU after
    upsample x2, conv4  3x3,  4w -> 2w,  norm4, ReLU          1/2 size
    upsample x2, conv5  3x3,  2w -> w,   norm5, ReLU          full size
    conv6   9x9,            w -> 3                            no normalization, no activation

Every convolution reflection-pads its input by kernel_size // 2 (the stride-2 ones too) and has a
bias; instance normalization uses eps = 1e-5 and the biased variance. Input and output are batches
(N, 3, H, W) in the VGG input space that `handnst.preprocess` produces, H and W multiples of 4 (and
at least 8, so that the smallest map can still be reflection-padded). With w = 32 and R = 5 the
network has 1,679,235 parameters.

    net = TransformNet(width=32, residual_blocks=5, seed=0)
    y = net.forward(x)                    # keeps what the backward pass needs
    dx, grads = net.backward(dy)          # grads keyed like net.params
    net.save("model.h5", attrs={"style": "swirls.jpg"})
    net = load_transform_net("model.h5")

The parameters live in `net.params`, a dict from the layer path ("conv1/weight" (K, C, kh, kw),
"conv1/bias" (K,), "norm1/scale" (C,), "norm1/shift" (C,), "res1/conv1/weight", ...) to arrays on
the net's backend; forward reads them from the dict on every call, so an optimizer may update them
in place or replace them.

The biases of the convolutions in front of an instance normalization (all but conv6) get a
gradient of exactly zero: the normalization subtracts the per-channel mean, which takes any constant
added to a channel away again (see handnst.layers.instance_norm). They are kept all the same, so
that the weights files line up with other tools'. For the same reason the shifts of each residual
block's second normalization get a gradient that is zero in exact arithmetic (a constant added to
the residual stream reaches only convolutions followed by normalizations); those are computed, and
come out as rounding noise.

The two upsampling steps never build the upsampled map: upsampling, reflection padding and conv4
(conv5) run as one layer, `layers.upsample_conv_forward`, four 2x2 convolutions of the small map,
one per output phase (16 products for every 2x2 block of outputs instead of 36, exactly the same
sums); `layers.upsample_conv_forward_naive` is the three layers one after the other.

Training, the batch goes through the residual blocks, conv4 and conv5 as one *stacked* map
(handnst.layers.stacked: each image's padded grid inside one tall padded map), where every
convolution, its input gradient and its weight gradient are products on row slices of the whole
batch with no im2col copy: `_residual_stacked_forward` and `layers.upsample_conv_stacked_forward`.

Applying the network to a large photo: `net.forward(x, cache=False)` keeps nothing for a backward
pass, and runs the residual blocks and the decoder in the padded channels-last layout VGG19 runs in
(`TransformNet._middle_padded`, handnst.layers.padded): there a 3x3 convolution is a few large matrix
products on row slices of the map (Winograd F(2, 3) for the residual blocks, the four phases for
conv4 and conv5) with no im2col copy, reflection padding is the border filled from the interior, and
instance normalization works in place. Same sums in another order: the tests hold the two paths
together to 1e-10 in float64. At 512x384 with w = 32 it takes applying from 1.03 s to 0.60 s on the
2-core machine of the README. Training: `net.backward(dy, need_dx=False)` skips the image's own
gradient.
"""

import json
import math
import os

import numpy as np

from handnst import layers as L
from handnst.backend import array_module, canonical_backend, get_xp, resolve_dtype, to_device, to_host
from handnst.errors import InputError, RunError
from handnst.fileio import atomic_path

FORMAT_NAME = "handnst-transform"
FORMAT_VERSION = 1
VGG_FORMAT_NAME = "handnst-vgg19"
MIN_SIZE = 8
_RESERVED_ATTRS = ("format", "format_version", "width", "residual_blocks", "parameters", "json_attributes")


# ------------------------------------------------------------------------------------- the layout

def conv_specs(width=32, residual_blocks=5):
    """The convolutions in order: (name, in channels, out channels, kernel size, stride, norm name or None)."""
    w = width
    specs = [("conv1", 3, w, 9, 1, "norm1"),
             ("conv2", w, 2 * w, 3, 2, "norm2"),
             ("conv3", 2 * w, 4 * w, 3, 2, "norm3")]
    for r in range(1, residual_blocks + 1):
        specs.append((f"res{r}/conv1", 4 * w, 4 * w, 3, 1, f"res{r}/norm1"))
        specs.append((f"res{r}/conv2", 4 * w, 4 * w, 3, 1, f"res{r}/norm2"))
    specs += [("conv4", 4 * w, 2 * w, 3, 1, "norm4"),
              ("conv5", 2 * w, w, 3, 1, "norm5"),
              ("conv6", w, 3, 9, 1, None)]
    return specs


def parameter_shapes(width=32, residual_blocks=5):
    """Dict (in layer order) from parameter path to shape, for a network of this width and depth."""
    shapes = {}
    for name, c_in, c_out, k, _, norm in conv_specs(width, residual_blocks):
        shapes[f"{name}/weight"] = (c_out, c_in, k, k)
        shapes[f"{name}/bias"] = (c_out,)
        if norm:
            shapes[f"{norm}/scale"] = (c_out,)
            shapes[f"{norm}/shift"] = (c_out,)
    return shapes


def parameter_count(width=32, residual_blocks=5):
    return sum(math.prod(s) for s in parameter_shapes(width, residual_blocks).values())


def _check_architecture(width, residual_blocks):
    for what, value in (("width", width), ("residual_blocks", residual_blocks)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputError(f"{what} must be an integer, got {value!r}")
    if width < 1:
        raise InputError(f"width must be at least 1, got {width}")
    if residual_blocks < 0:
        raise InputError(f"residual_blocks must be 0 or more, got {residual_blocks}")
    return int(width), int(residual_blocks)


def residual_forward(x, fx):
    """The residual addition y = x + f(x). Its backward pass hands dy to both branches."""
    return x + fx, None


def residual_backward(dout, cache):
    """(d skip, d branch) = (dout, dout): the sum's gradient reaches both of its terms unchanged."""
    return dout, dout


# ------------------------------------------------------------------------------------ the network

class TransformNet:
    """Johnson's image transformation network with instance normalization; see the module docstring."""

    def __init__(self, width=32, residual_blocks=5, *, seed=0, backend="numpy", dtype="float32"):
        self.width, self.residual_blocks = _check_architecture(width, residual_blocks)
        self.backend = canonical_backend(backend)
        self.dtype = resolve_dtype(dtype)
        self.xp = get_xp(self.backend)
        self.attrs = {}
        self.params = {name: to_device(value, self.backend, self.dtype)
                       for name, value in initial_parameters(self.width, self.residual_blocks, seed).items()}
        self._tape = None
        self._normalized = {name for name, *_, norm in conv_specs(self.width, self.residual_blocks) if norm}

    # -------------------------------------------------------------------------------- info

    @property
    def shapes(self):
        return parameter_shapes(self.width, self.residual_blocks)

    @property
    def parameter_count(self):
        return sum(int(p.size) for p in self.params.values())

    def __repr__(self):
        return (f"TransformNet(width={self.width}, residual_blocks={self.residual_blocks}, "
                f"backend={self.backend!r}, dtype={self.dtype.name!r}, parameters={self.parameter_count:,})")

    def check_input(self, x):
        """The input as an array of the net's backend and dtype, or a one-line InputError."""
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != 4 or shape[1] != 3:
            raise InputError(f"the transformation network takes a batch of shape (N, 3, H, W), got {shape}")
        N, _, H, W = shape
        if H % 4 or W % 4 or H < MIN_SIZE or W < MIN_SIZE:
            raise InputError(f"the transformation network needs H and W that are multiples of 4 and at least "
                             f"{MIN_SIZE}, got {H} x {W}; pad the picture (reflection) and crop the result")
        if array_module(x) is not self.xp:
            x = to_host(x) if self.xp is np else x
            return to_device(x, self.backend, self.dtype)
        return x.astype(self.dtype, copy=False)

    # ------------------------------------------------------------------------------- forward

    def forward(self, x, cache=True):
        """y = net(x) for x (N, 3, H, W); y has the same shape.

        With cache=True (the default) every layer keeps what its backward pass needs, for one call
        of `backward`; with cache=False nothing is kept (applying the net to a large photo), each
        activation is freed as soon as the next one is computed, and `backward` is refused.
        """
        x = self.check_input(x)
        tape = [] if cache else None
        p = self.params
        xp = self.xp

        # Every layer that feeds a convolution writes its output straight into the interior of that
        # convolution's padded input, and only the border is then filled by reflection: the padding
        # costs no copy of the map. The convolution keeps that padded buffer for its backward pass
        # (the ReLU mask of the layer before reads the interior of the same buffer).

        def pad_of(name):
            return p[f"{name}/weight"].shape[2] // 2

        def padded_for(name, shape):
            """(buffer, interior view) for the padded input of convolution `name` from a map of `shape`."""
            pad = pad_of(name)
            N, C, H, W = shape
            buf = xp.empty((N, C, H + 2 * pad, W + 2 * pad), dtype=self.dtype)
            return buf, buf[:, :, pad:pad + H, pad:pad + W]

        def conv(name, hp, stride, shape):
            """convolution `name` of hp, its input already padded; `shape` is the unpadded input's."""
            out, conv_cache = L.conv_batch_forward(hp, p[f"{name}/weight"], p[f"{name}/bias"], stride)
            if tape is not None:
                tape.append(("conv", name, (conv_cache, (shape, pad_of(name)))))
            return out

        def norm(name, h, relu, into=None):
            """instance norm (+ ReLU) of h; with `into`, written into that convolution's padded input,
            which is returned (else the normalized map)."""
            buf, view = padded_for(into, h.shape) if into else (None, None)
            # h, a convolution's output, is needed by nothing else: normalized in its own memory
            out, norm_cache = L.instance_norm_forward(h, p[f"{name}/scale"], p[f"{name}/shift"], out=view,
                                                      overwrite_x=True)
            if relu:
                xp.maximum(out, 0, out=out)
            if tape is not None:
                tape.append(("norm", name, (norm_cache, out if relu else None)))
            return L.reflect_border(buf, pad_of(into)) if into else out

        def upsample_conv(name, h):
            """upsample x2, reflection pad and convolution `name` (3x3) in one: handnst.layers.upsample_conv
            computes the four output phases from the small map, which is never upsampled."""
            out, up_cache = L.upsample_conv_stacked_forward(h, p[f"{name}/weight"], p[f"{name}/bias"])
            if tape is not None:
                tape.append(("upsample_conv", name, up_cache))
            return out

        R = self.residual_blocks
        N, _, H, W = x.shape
        hp, _ = L.reflection_pad_forward(x, pad_of("conv1"))
        h = conv("conv1", hp, 1, x.shape)
        h = norm("norm1", h, True, into="conv2")
        h = norm("norm2", conv("conv2", h, 2, (N, self.width, H, W)), True, into="conv3")
        h = norm("norm3", conv("conv3", h, 2, (N, 2 * self.width, H // 2, W // 2)), True)
        if tape is None:
            # Applying: the residual blocks and the decoder run in the padded layout, one image at a
            # time (_middle_padded), and write conv6's padded input.
            h6, view6 = padded_for("conv6", (N, self.width, H, W))
            for n in range(N):
                self._middle_padded(h[n], view6[n])
            del h
            return conv("conv6", L.reflect_border(h6, pad_of("conv6")), 1, (N, self.width, H, W))
        if R:
            h = self._residual_stacked_forward(h, tape)
        h = norm("norm4", upsample_conv("conv4", h), True)
        h = norm("norm5", upsample_conv("conv5", h), True, into="conv6")
        y = conv("conv6", h, 1, (N, self.width, H, W))
        self._tape = tape
        return y

    __call__ = forward

    def _middle_padded(self, h, out):
        """The residual blocks, conv4 and conv5 (with their norms and ReLUs) for one image, in the
        padded channels-last layout of handnst.layers.padded, where a 3x3 convolution is a few
        large products on row slices with no im2col copy: the path `forward(cache=False)` takes.

        h (4w, H, W): norm3's output; out (w, 4H, 4W): receives norm5's output (the interior of
        conv6's padded input). Same arithmetic as the cached path: reflection padding is the border
        filled by reflection; the decoder's upsampling reads the edge-padded small map (see
        handnst.layers.upsample_conv). Three buffers of the small map's size are reused by all blocks.
        """
        xp, p = self.xp, self.params
        C, H, W = h.shape
        stream = L.fill_border(L.to_padded(h), H, W)
        t1, t2 = (xp.zeros_like(stream) for _ in range(2))
        scratch = [xp.empty(s, dtype=self.dtype) for s in L.winograd_scratch_shapes(H, W, C, C,
                                                                                     itemsize=self.dtype.itemsize)]

        def conv3x3(name, src, dst):
            U = L.winograd_taps(L.conv_taps(p[f"{name}/weight"]))
            return L.conv3x3_winograd_forward(src, H, W, U, p[f"{name}/bias"], dst, relu=False, scratch=scratch)

        def norm(name, P, h_, w_, relu):
            return L.instance_norm_padded_forward(P, h_, w_, p[f"{name}/scale"], p[f"{name}/shift"], relu=relu)

        for r in range(1, self.residual_blocks + 1):
            norm(f"res{r}/norm1", conv3x3(f"res{r}/conv1", stream, t1), H, W, True)
            L.fill_border(t1, H, W)
            norm(f"res{r}/norm2", conv3x3(f"res{r}/conv2", t1, t2), H, W, False)
            L.interior(stream, H, W)[...] += L.interior(t2, H, W)
            L.fill_border(stream, H, W)
        del t1, t2, scratch
        for name, norm_name in (("conv4", "norm4"), ("conv5", "norm5")):
            w = p[f"{name}/weight"]
            up = xp.empty((L.padded_length(2 * H, 2 * W), w.shape[0]), dtype=self.dtype)
            L.upsample_conv_padded_forward(L.fill_border(stream, H, W, "edge"), H, W, L.phase_taps(w),
                                           p[f"{name}/bias"], up)
            stream, H, W = norm(norm_name, up, 2 * H, 2 * W, True), 2 * H, 2 * W
        L.from_padded_into(stream, H, W, out)

    def _residual_stacked_forward(self, h, tape):
        """The residual blocks for training: h (N, 4w, H, W), norm3's output -> the last block's
        output (N, 4w, H, W), with what the backward pass needs on the tape. The batch runs as one
        stacked map (handnst.layers.stacked): each convolution is Winograd F(2, 3) on row slices of
        the whole batch, with no im2col copy, and the reflection padding is each image's ring."""
        xp, p = self.xp, self.params
        N, C, H, W = h.shape
        Hs, Ws = L.stacked_size(N, H, W)
        stream = L.fill_rings(L.to_stacked(h), N, H, W)
        scratch = [xp.empty(s, dtype=self.dtype) for s in L.winograd_scratch_shapes(Hs, Ws, C, C,
                                                                                     itemsize=self.dtype.itemsize)]

        def conv_norm(name, norm_name, src, relu):
            U = L.winograd_taps(L.conv_taps(p[f"{name}/weight"]))
            c = L.conv3x3_winograd_forward(src, Hs, Ws, U, p[f"{name}/bias"], xp.empty_like(src), relu=False,
                                           scratch=scratch)
            L.zero_rings(c, N, H, W)                        # junk where the convolution straddled two images
            _, norm_cache = L.instance_norm_stacked_forward(c, N, H, W, p[f"{norm_name}/scale"],
                                                            p[f"{norm_name}/shift"], out=c, relu=relu)
            return c, U, norm_cache

        blocks = []
        for r in range(1, self.residual_blocks + 1):
            t, U1, norm1 = conv_norm(f"res{r}/conv1", f"res{r}/norm1", stream, True)
            L.fill_rings(t, N, H, W)
            out, U2, norm2 = conv_norm(f"res{r}/conv2", f"res{r}/norm2", t, False)
            L.image_pixels(out, N, H, W)[...] += L.image_pixels(stream, N, H, W)      # y = x + f(x)
            L.fill_rings(out, N, H, W)
            blocks.append((stream, t, U1, U2, norm1, norm2))
            stream = out
        tape.append(("residual_stack", None, (blocks, scratch, (N, C, H, W))))
        return L.from_stacked(stream, N, H, W)

    def _residual_stacked_backward(self, d, cache, grads):
        """dL/dh for _residual_stacked_forward's input from d = dL/d(its output), filling `grads`."""
        blocks, scratch, (N, C, H, W) = cache               # the forward pass's Winograd buffers
        xp = self.xp
        Hs, Ws = L.stacked_size(N, H, W)
        d = L.to_stacked(d)                                 # dL/d(output pixels); rings zero

        def norm_conv_backward(name, norm_name, dnorm, norm_cache, src, U):
            """through the norm and the convolution: dL/d(src's grid), ring folded onto the pixels"""
            dc, grads[f"{norm_name}/scale"], grads[f"{norm_name}/shift"] = L.instance_norm_stacked_backward(
                dnorm, norm_cache, xp.zeros_like(dnorm))
            taps = L.conv3x3_winograd_weight_gradient(src, dc, Hs, Ws, scratch=scratch)
            grads[f"{name}/weight"] = xp.ascontiguousarray(taps.reshape(3, 3, C, C).transpose(3, 2, 0, 1))
            grads[f"{name}/bias"] = xp.zeros(C, dtype=self.dtype)     # in front of a normalization
            dsrc = L.conv3x3_winograd_backward(dc, Hs, Ws, U, xp.empty_like(dc), scratch=scratch)
            return L.fill_rings_backward(dsrc, N, H, W)

        for r in range(self.residual_blocks, 0, -1):
            stream, t, U1, U2, norm1, norm2 = blocks[r - 1]
            dt = norm_conv_backward(f"res{r}/conv2", f"res{r}/norm2", d, norm2, t, U2)
            dstream = norm_conv_backward(f"res{r}/conv1", f"res{r}/norm1", dt, norm1, stream, U1)
            d = dstream + d                                 # the skip connection's share
        return L.from_stacked(d, N, H, W)

    # ------------------------------------------------------------------------------ backward

    def backward(self, dy, need_dx=True):
        """dx, grads for the last forward(x): dx = dL/dx (N, 3, H, W) for dy = dL/dy, and grads, a
        dict keyed like `params` with dL/dparam (each a new array). The caches are released: each
        forward pass allows one backward pass. With need_dx=False the first convolution skips its
        input gradient and dx is None (training needs only the parameters' gradients)."""
        if self._tape is None:
            raise RunError("backward needs a forward pass with cache=True just before it "
                           "(and each forward pass allows one backward pass)")
        tape, self._tape = self._tape, None
        xp = self.xp
        dy = xp.asarray(dy, dtype=self.dtype) if array_module(dy) is xp else to_device(to_host(dy), self.backend, self.dtype)
        grads = {}
        d = dy
        while tape:
            kind, name, cache = tape.pop()
            if kind == "conv":
                conv_cache, pad_cache = cache
                first = not tape
                dpad, grads[f"{name}/weight"], db = L.conv_batch_backward(d, conv_cache, need_dx=need_dx or not first)
                # In front of an instance normalization the bias gradient is the sum over each channel
                # of the normalization's input gradient, which is exactly zero (it subtracts the
                # channel's mean); the computed sum is only rounding noise, so the exact value is kept.
                grads[f"{name}/bias"] = xp.zeros_like(db) if name in self._normalized else db
                d = None if dpad is None else L.reflection_pad_backward(dpad, pad_cache)
            elif kind == "norm":
                norm_cache, relu_out = cache
                if relu_out is not None:
                    mask = relu_out > 0
                    shared = d is dy                                         # not ours to overwrite
                    d = d * mask if shared else xp.multiply(d, mask, out=d)
                d, grads[f"{name}/scale"], grads[f"{name}/shift"] = L.instance_norm_backward(d, norm_cache)
            elif kind == "upsample_conv":
                d, grads[f"{name}/weight"], db = L.upsample_conv_stacked_backward(d, cache)
                grads[f"{name}/bias"] = xp.zeros_like(db)          # in front of a normalization, as above
            elif kind == "residual_stack":
                d = self._residual_stacked_backward(d, cache, grads)
            del cache
        return d, {name: grads[name] for name in self.params}

    # ---------------------------------------------------------------------------- save / load

    def save(self, path, attrs=None):
        """Write the parameters and the attributes to an HDF5 file, atomically.

        One dataset per parameter, named by its layer path ("conv1/weight", "res1/norm1/scale", ...),
        in the net's dtype. File attributes: `format` ("handnst-transform"), `format_version`, `width`,
        `residual_blocks`, `parameters` (the count), and every entry of `attrs` (the style image, the
        training options, the loss summary...): strings and numbers as they are, anything else (dicts,
        lists, None) as JSON text, listed in the attribute `json_attributes` so that loading decodes it.
        """
        import h5py
        extra = dict(self.attrs)
        extra.update(attrs or {})
        clash = [k for k in extra if k in _RESERVED_ATTRS]
        if clash:
            raise ValueError(f"attribute name(s) {', '.join(clash)} are reserved for the file format")
        path = os.fspath(path)
        try:
            with atomic_path(path, suffix=".h5.tmp") as tmp:
                with h5py.File(tmp, "w") as f:
                    f.attrs["format"] = FORMAT_NAME
                    f.attrs["format_version"] = FORMAT_VERSION
                    f.attrs["width"] = self.width
                    f.attrs["residual_blocks"] = self.residual_blocks
                    f.attrs["parameters"] = self.parameter_count
                    as_json = []
                    for key, value in extra.items():
                        if isinstance(value, (str, bool, int, float, np.integer, np.floating)):
                            f.attrs[str(key)] = value
                        else:
                            f.attrs[str(key)] = json.dumps(value, default=_json_default)
                            as_json.append(str(key))
                    f.attrs["json_attributes"] = json.dumps(as_json)
                    for name, value in self.params.items():
                        f.create_dataset(name, data=to_host(value))
        except PermissionError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror or exc}; choose another output") from None
        except FileNotFoundError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror or exc} (does its folder exist?)") from None
        except OSError as exc:
            raise RunError(f"could not write {path} ({exc.strerror or exc}); nothing was written there") from None
        return path

    def load_params(self, params):
        """Replace the parameters by host arrays `params` (same names and shapes), cast to the net's dtype."""
        for name, shape in self.shapes.items():
            value = params[name]
            if tuple(value.shape) != shape:
                raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {shape}")
            self.params[name] = to_device(np.asarray(value), self.backend, self.dtype)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def initial_parameters(width=32, residual_blocks=5, seed=0):
    """Host float64 parameters, deterministic by seed, as PyTorch initializes Conv2d and InstanceNorm2d:
    weights and biases uniform in +-1/sqrt(fan_in) (fan_in = C*kh*kw; this is kaiming_uniform with
    a = sqrt(5)), normalization scales 1 and shifts 0. Drawn in layer order from one generator."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in parameter_shapes(width, residual_blocks).items():
        if name.endswith("/weight") or name.endswith("/bias"):
            conv = name.rsplit("/", 1)[0]
            fan_in = math.prod(params[f"{conv}/weight"].shape[1:]) if name.endswith("/bias") else math.prod(shape[1:])
            bound = 1.0 / math.sqrt(fan_in)
            params[name] = rng.uniform(-bound, bound, size=shape)
        elif name.endswith("/scale"):
            params[name] = np.ones(shape)
        else:
            params[name] = np.zeros(shape)
    return params


# ------------------------------------------------------------------------------------- loading

def _attr_value(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_model_file(path):
    """(params, meta) from a model file, validated: params maps each parameter path to a host array,
    meta holds `width`, `residual_blocks` and the extra attributes (decoded). Every problem is a
    one-line InputError that says what is wrong with the file."""
    path = os.fspath(path)
    hint = "give a model written by `handnst train`"
    if not os.path.exists(path):
        raise InputError(f"model file {path} does not exist")
    if os.path.isdir(path):
        raise InputError(f"model {path} is a folder, not a model file; {hint}")
    import h5py
    if not h5py.is_hdf5(path):
        raise InputError(f"{path} is not a handnst model (not an HDF5 file); {hint}")
    try:
        with h5py.File(path, "r") as f:
            meta = {key: _attr_value(value) for key, value in f.attrs.items()}
            fmt = meta.get("format")
            if fmt == VGG_FORMAT_NAME:
                raise InputError(f"{path} is the VGG19 weights file (the loss network), not a transformation "
                                 f"network; {hint}")
            if fmt != FORMAT_NAME:
                raise InputError(f"{path} is not a handnst transformation network (its format attribute is "
                                 f"{fmt!r}, expected {FORMAT_NAME!r}); {hint}")
            try:
                version = int(meta.get("format_version", 0))
                width, blocks = int(meta["width"]), int(meta["residual_blocks"])
                _check_architecture(width, blocks)
            except (KeyError, TypeError, ValueError, InputError):
                raise InputError(f"{path}: the width and residual_blocks attributes are missing or invalid; "
                                 f"the model file is damaged") from None
            if version > FORMAT_VERSION:
                raise InputError(f"{path} uses model format version {version}, newer than this handnst "
                                 f"understands ({FORMAT_VERSION}); upgrade handnst")
            params = {}
            for name, shape in parameter_shapes(width, blocks).items():
                node = f.get(name)
                if not isinstance(node, h5py.Dataset):
                    raise InputError(f"{path}: parameter {name} is missing; the model file is incomplete")
                if tuple(node.shape) != shape:
                    raise InputError(f"{path}: parameter {name} has shape {tuple(node.shape)}, expected {shape} "
                                     f"(width {width}, {blocks} residual blocks); the model file is damaged")
                if node.dtype.kind != "f":
                    raise InputError(f"{path}: parameter {name} is {node.dtype}, expected floating point")
                value = node[()]
                if not np.all(np.isfinite(value)):
                    raise InputError(f"{path}: parameter {name} contains NaN or infinite values; the model is "
                                     f"damaged (did its training diverge?)")
                params[name] = value
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{path} cannot be read as a handnst model ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    try:
        as_json = json.loads(meta.pop("json_attributes", "[]"))
    except (TypeError, ValueError):
        as_json = []
    extra = {}
    for key, value in meta.items():
        if key in _RESERVED_ATTRS:
            continue
        if key in as_json:
            try:
                value = json.loads(value)
            except (TypeError, ValueError):
                pass
        extra[key] = value
    return params, {"width": width, "residual_blocks": blocks, "format_version": version, "attrs": extra}


def load_transform_net(path, *, backend="numpy", dtype="float32"):
    """A TransformNet with the parameters of a model file written by `TransformNet.save`.

    Its `attrs` hold the file's extra attributes (style image, training options, loss summary).
    A VGG19 weights file, any file that is not a model, and a model with missing, wrong-shape or
    non-finite parameters are refused with a one-line InputError.
    """
    params, meta = read_model_file(path)
    net = TransformNet(meta["width"], meta["residual_blocks"], backend=backend, dtype=dtype)
    net.load_params(params)
    net.attrs = meta["attrs"]
    return net
