"""VGG19's convolutional part, as the paper uses it: 16 convolutions with ReLU, and 5 poolings.

    net = load_vgg19()                               # pretrained weights from HDF5 (see handnst/weights/)
    feats = net.forward(x, ["conv4_2", "conv1_1"])   # x: (3, H, W) in the weights' input space
    dx = net.backward({"conv4_2": dF})               # dL/dx for gradients given at any layers

Naming follows the paper (and Caffe, whose ReLU works in place): `convX_Y` is the *rectified*
response of that convolution; `reluX_Y` is accepted as the same thing. `poolX` is the pooled map.

The forward pass goes only as deep as the deepest requested layer and keeps what the backward pass
needs and nothing else: the rectified output of each convolution (its ReLU mask; max pooling finds its
winners in it too). The convolution's input is not kept, because dL/dx of a convolution needs only
the weights; no weight gradients are ever computed here. Internally every map is stored in the
padded channels-last layout of `layers/padded.py`, in buffers reused from one evaluation to the next.

Each convolution runs with the algorithm that does the least work for its shape (`VGG19.algorithm`):
Winograd F(4x4, 3x3) from conv3_1 on where the map is big enough for 48 4x4 tiles
(`layers.conv3x3_winograd4x4_forward`: 36 products for every 4x4 block of outputs instead of 144),
F(2x2, 3x3) there otherwise (`layers.conv3x3_winograd2d_forward`: 16 for every 2x2 block instead of
36), Winograd F(2, 3) along the rows for conv1_2 .. conv2_2 (`layers.conv3x3_winograd_forward`: 12
products for two output rows instead of 18), and one im2col product for conv1_1
(`layers.conv3x3_forward`). `VGG19(..., conv="direct")` runs nine products everywhere; all agree to
float rounding (tested). The Winograd filters are made on first use and kept, one form per layer
(for conv3_1 .. conv5_1: 36 (C, K) matrices per layer for F(4x4, 3x3), 203 MB in all; 16 for
F(2x2, 3x3), 90 MB).
"""

import functools
import math
import time

from handnst import layers as L
from handnst.backend import array_module, canonical_backend, get_xp, resolve_dtype, synchronize
from handnst.errors import InputError
from handnst.weights import KERAS_CONVENTION, ensure_weights, file_stamp, load_layer, load_weights
from handnst.weights.layout import CONV_LAYERS, CONV_NAMES, WEIGHT_SHAPES  # noqa: F401  (the table lives with the file format)

LAYER_ORDER = (
    "conv1_1", "conv1_2", "pool1",
    "conv2_1", "conv2_2", "pool2",
    "conv3_1", "conv3_2", "conv3_3", "conv3_4", "pool3",
    "conv4_1", "conv4_2", "conv4_3", "conv4_4", "pool4",
    "conv5_1", "conv5_2", "conv5_3", "conv5_4", "pool5",
)
POOLINGS = ("avg", "max")
CONV_ALGORITHMS = ("auto", "direct")
# Which convolution runs where (measured in time per layer, forward and backward, on 2 cores; see
# the module docstring): every layer with 64 or more input channels runs a Winograd algorithm.
# With 128+ channels in and 256+ out (conv3_1 onwards) it is two-dimensional: F(4x4, 3x3) where the
# map has the area of at least 48 4x4 tiles (at 512x384, conv3_x 82 -> 56 ms and conv4_x 60 -> 38 ms
# per forward pass against F(2x2, 3x3); at 256x192, conv3_x 19.6 -> 14.9 ms and conv4_x 16.1 -> 13.5
# ms; sides that are not multiples of 4 end in part tiles), F(2x2, 3x3) on smaller maps (conv5_1 at
# 256x192, 12 tiles: 8.3 ms against 11.4). conv1_2 .. conv2_2 take F(2, 3) along the rows (0.68-0.77
# of the direct time; there the two-dimensional transforms cost more than the products they save:
# F(4x4, 3x3) measured 5-30% slower than F(2, 3) on conv1_2 and conv2_1, no faster on conv2_2; and
# bigger tiles on these first layers cost float32 digits: F(4, 3) along the rows there took the
# objective's gradient on noise images from 2.3e-6 to 6.6e-4 of float64 for 1% of speed).
# conv1_1, with its 3 input channels, stays direct. Measured again (1 December 2026, Intel Xeon with
# AVX-512, F(4x4, 3x3)'s transforms as products), forward + backward against F(2, 3) along the rows:
# conv3_2 47 ms against 69 at 512x384 and 13.2 against 16.8 at 256x192; conv2_2 would now gain too
# (74 ms against 87 at 512x384) but the whole objective's float32 gradient at 256x170 then moved
# from 8.2e-5 of float64 (what the direct float32 convolutions give) to 5.1e-4, so it stays on F(2, 3).
WINOGRAD_MIN_CHANNELS = 64
WINOGRAD_2D_MIN_IN = 128
WINOGRAD_2D_MIN_OUT = 256
WINOGRAD_4X4_MIN_TILES = 48
# The backward pass convolves the gradient of the last convolution of a block in place, this many
# bytes of rows at a time (see VGG19._conv_backward_in_place): the band buffer replaces one of the
# map's size (68 MB after conv1_2 at 512x512), and maps smaller than two bands keep a buffer.
BAND_BYTES = 8 << 20
# With average pooling, the last convolution of blocks 1 and 3 keeps only its ReLU mask, as bools:
# once the pool has read its map, no pass needs the values. The map itself is written into the
# next block's maps, which share one buffer for this: that block overwrites it in the forward pass,
# and the backward pass, which reaches this convolution after that block is done with, writes the
# convolution's gradient there (pool_relu_backward_from_mask) and runs its backward pass in place.
# At 512x512 that turns 68 + 17 MB of maps into 17 + 4 MB of masks. Not for block 2 (block 3 would
# then hold conv2_2's map while block 2 must hold conv1_2's) nor block 4 (conv5_1 alone is smaller
# than conv4_4's map).
MASK_ONLY = {"conv1_2": ("conv2_1", "conv2_2"), "conv3_4": ("conv4_1", "conv4_2", "conv4_3", "conv4_4")}
# algorithm -> (filter transform, scratch shapes, forward, backward) of its kernels, all with the same signatures
WINOGRAD_KERNELS = {
    "4x4": (L.winograd4x4_taps, L.winograd4x4_scratch_shapes, L.conv3x3_winograd4x4_forward,
            L.conv3x3_winograd4x4_backward),
    "2d": (L.winograd2d_taps, L.winograd2d_scratch_shapes, L.conv3x3_winograd2d_forward,
           L.conv3x3_winograd2d_backward),
    "rows": (L.winograd_taps, L.winograd_scratch_shapes, L.conv3x3_winograd_forward, L.conv3x3_winograd_backward),
}


# algorithm -> the pairs of its scratch buffers that may share memory (see VGG19._scratch)
SCRATCH_SHARED = {"4x4": L.winograd4x4.SCRATCH_SHARED}


def canonical_layer(name):
    """'relu4_2' -> 'conv4_2'; checks that the name exists, with a helpful message if not."""
    key = str(name).strip().lower()
    if key.startswith("relu"):
        key = "conv" + key[4:]
    if key not in LAYER_ORDER:
        raise InputError(f"unknown VGG19 layer {name!r}: use one of conv1_1..conv5_4 (or relu1_1..relu5_4) "
                         f"and pool1..pool5, e.g. {', '.join(CONV_NAMES[:2])}, conv4_2, pool3")
    return key


def block_of(name):
    """The block (1..5) a layer belongs to: conv3_2 -> 3, pool3 -> 3."""
    return int(canonical_layer(name)[4])


def scale_of(name):
    """How many times the map of a layer is smaller than the image: 2 ** (number of poolings before it)."""
    name = canonical_layer(name)
    return 2 ** (block_of(name) - (0 if name.startswith("pool") else 1))


def min_image_size(layers):
    """Smallest image side for which every requested layer still has at least one pixel."""
    return max(scale_of(n) for n in layers)


class VGG19:
    """The network: weights on one backend, and the state of the last forward pass for backward."""

    def __init__(self, params, *, convention, pooling="avg", backend="numpy", dtype="float32", source=None,
                 conv="auto", reload=None):
        """params: name -> (weight (K, C, 3, 3), bias (K,)) for the 16 convolutions.

        reload: optional function name -> (weight, bias) that reads a layer from the weights file
        again (load_vgg19 passes one). With it, the layers that run two-dimensional Winograd (conv3_1
        onwards, including conv5_2 .. conv5_4 that the paper's objective never reaches) keep no plain
        filters in memory, only the transformed ones they run with: 75 MB less. The plain filters are
        read again when needed (another map size asks for the other Winograd form, `weights()`).
        """
        if pooling not in POOLINGS:
            raise InputError(f"unknown pooling {pooling!r}: use 'avg' (the paper's choice) or 'max'")
        if conv not in CONV_ALGORITHMS:
            raise InputError(f"unknown convolution algorithm {conv!r}: use 'auto' (Winograd where it pays) or 'direct'")
        self.conv = conv
        self.backend = canonical_backend(backend)
        self.xp = get_xp(self.backend)
        self.dtype = resolve_dtype(dtype)
        self.pooling = pooling
        self.convention = dict(convention)
        self.source = source
        self._reload = reload
        self._shape, self._taps, self._bias = {}, {}, {}
        for name in CONV_NAMES:
            w, b = params[name]
            self._shape[name] = (w.shape[1], w.shape[0])   # (C, K)
            self._bias[name] = self.xp.asarray(b, dtype=self.dtype)
            if reload is None or self.algorithm(name) in ("direct", "rows"):   # "rows" filters are views of the taps
                self._taps[name] = self._as_taps(w)
        self._filters = {}                  # name -> (algorithm, its transformed filters), built on first use
        self._buffers = {}
        self._size = None                   # (H, W) of the maps in the buffers
        self._state = None
        # Set to a dict to time every layer: ("forward" | "backward", name) -> list of seconds, one
        # entry per pass (the benchmark does this; a backward entry includes the layer's ReLU mask).
        self.layer_times = None

    def __repr__(self):
        return (f"VGG19(pooling={self.pooling!r}, conv={self.conv!r}, backend={self.backend!r}, dtype={self.dtype.name!r}, "
                f"input={self.convention.get('channel_order')} x{self.convention.get('scale')})")

    def weights(self, name):
        """Filters (K, C, 3, 3) and biases (K,) of a convolution (a view of its taps)."""
        name = canonical_layer(name)
        taps = self._plain_taps(name)
        _, C, K = taps.shape
        return taps.reshape(3, 3, C, K).transpose(3, 2, 0, 1), self._bias[name]

    def _as_taps(self, w):
        w = self.xp.asarray(w, dtype=self.dtype)    # explicit host -> device copy
        return L.conv_taps(w)                      # (9, C, K), the layout the GEMMs want

    def _plain_taps(self, name):
        """The (9, C, K) taps of a convolution: the kept ones, or read again from the weights file."""
        taps = self._taps.get(name)
        return taps if taps is not None else self._as_taps(self._reload(name)[0])

    # ------------------------------------------------------------------------------ buffers
    def _buffer(self, key, rows, cols, dtype=None):
        dtype = self.dtype if dtype is None else dtype
        buf = self._buffers.get(key)
        if buf is None or buf.shape != (rows, cols) or buf.dtype != dtype:
            buf = self.xp.empty((rows, cols), dtype=dtype)
            self._buffers[key] = buf
        return buf

    def release(self):
        """Free the reused buffers and the forward state (they are rebuilt on the next forward)."""
        self._buffers.clear()
        self._state = None

    # ------------------------------------------------------------------------- convolutions
    def algorithm(self, name, H=None, W=None):
        """How convolution `name` runs on an H x W map: "4x4" (Winograd F(4x4, 3x3)), "2d" (F(2x2, 3x3)),
        "rows" (Winograd F(2, 3) along the rows) or "direct" (nine products). Without a map size, the
        choice for maps too small for F(4x4, 3x3)."""
        C, K = self._shape[canonical_layer(name)]
        if self.conv == "direct" or C < WINOGRAD_MIN_CHANNELS:
            return "direct"
        if min(C, K) >= WINOGRAD_2D_MIN_IN and K >= WINOGRAD_2D_MIN_OUT:
            if H is not None and W is not None and H * W >= 16 * WINOGRAD_4X4_MIN_TILES:
                return "4x4"
            return "2d"
        return "rows"

    def uses_winograd(self, name):
        """Whether convolution `name` runs with a Winograd algorithm (on maps of even size)."""
        return self.algorithm(name) != "direct"

    def _transformed_filters(self, name, how):
        """The filters of convolution `name` transformed for algorithm `how`, made on first use and kept.
        A layer keeps one form: when a map of another size switches it between F(2x2, 3x3) and
        F(4x4, 3x3) (the levels of a coarse-to-fine run), the other form is dropped and remade when
        needed again (tens of milliseconds), so the kept filters never pass the 203 MB above."""
        kept = self._filters.get(name)
        if kept is None or kept[0] != how:
            self._filters.pop(name, None)
            kept = self._filters[name] = (how, WINOGRAD_KERNELS[how][0](self._plain_taps(name)))
        return kept[1]

    def _arena(self, key, size):
        """A flat buffer of at least `size` elements that only grows (shared by all layers)."""
        arena = self._buffers.get(key)
        if arena is None or arena.size < size:
            self._buffers.pop(key, None)
            arena = self._buffers[key] = self.xp.empty(size, dtype=self.dtype)
        return arena

    def _scratch(self, shapes, shared=()):
        """Views of the given shapes carved from one flat buffer that only grows (shared by all layers).
        shared: pairs (i, j) of the kernel's buffers that may use the same memory (never in use at
        the same time); the smaller of the two then starts where the bigger one does."""
        sizes = [math.prod(shape) for shape in shapes]
        inside = {}
        for i, j in shared:                 # the smaller inside the bigger (i inside j when equal)
            small, big = (j, i) if sizes[j] < sizes[i] else (i, j)
            inside[small] = big
        starts, end = {}, 0
        for k, size in enumerate(sizes):
            if k not in inside:
                starts[k], end = end, end + size
        arena = self._arena("winograd", end)
        return [arena[starts[inside.get(k, k)]:starts[inside.get(k, k)] + size].reshape(shape)
                for k, (shape, size) in enumerate(zip(shapes, sizes))]

    def _conv(self, name, P, H, W, out, backward=False, how=None):
        """One convolution pass; `how` overrides the algorithm chosen for an H x W map (a band of a
        bigger map keeps the algorithm, and the transformed filters, of the whole map)."""
        C, K = self._shape[name]
        if backward:
            C, K = K, C
        how = how or self.algorithm(name, H, W)
        if how != "direct":
            _, shapes, forward, backward_pass = WINOGRAD_KERNELS[how]
            scratch = self._scratch(shapes(H, W, C, K, itemsize=self.dtype.itemsize), SCRATCH_SHARED.get(how, ()))
            U = self._transformed_filters(name, how)
            if backward:
                return backward_pass(P, H, W, U, out, scratch=scratch)
            return forward(P, H, W, U, self._bias[name], out, scratch=scratch)
        taps = self._plain_taps(name)      # kept for every layer that runs direct
        if backward:
            return L.conv3x3_backward(P, H, W, taps, out)
        return L.conv3x3_forward(P, H, W, taps, self._bias[name], out)

    def _conv_backward_in_place(self, name, G, H, W):
        """dL/dP of convolution `name` from its masked output gradient G, written over G (a map of
        the forward pass that is dead now), BAND_BYTES of rows at a time. A map smaller than two
        bands, the direct algorithm (its backward pass scatters from the interior rows only, which a
        band cannot do) and a layer with other channel counts in and out use a buffer instead."""
        C, K = self._shape[name]
        how = self.algorithm(name, H, W)
        row_bytes = (W + 2) * C * self.dtype.itemsize
        bands = -(-H * row_bytes // BAND_BYTES)                   # ceil
        if C != K or how == "direct" or bands < 2:
            out = self._buffer(("grad", G.shape), *G.shape)
            return self._conv_backward(name, G, H, W, out)
        band = -(-H // bands)
        band += -band % 4                                        # whole tiles of every Winograd algorithm
        scratch = self._arena("band", L.padded_length(band, W) * C)
        return L.conv_in_place_by_bands(lambda Pb, h, out: self._conv(name, Pb, h, W, out, backward=True, how=how),
                                        G, H, W, band, scratch)

    def _conv_forward(self, name, P, H, W, out):
        return self._conv(name, P, H, W, out)

    def _conv_backward(self, name, dY, H, W, out):
        return self._conv(name, dY, H, W, out, backward=True)

    def _mask_only_places(self, names, deepest, H, W):
        """For this forward pass: ({conv name: the view its map is written into}, {conv name: its
        mask buffer}) of the MASK_ONLY convolutions that qualify: average pooling, not asked for,
        their next block computed whole, and its maps big enough to hold theirs."""
        places, masks = {}, {}
        for conv, block in MASK_ONLY.items():
            s, t = scale_of(conv), scale_of(block[0])
            rows, C = L.padded_length(H // s, W // s), self._shape[conv][1]
            rows_next, C_next = L.padded_length(H // t, W // t), self._shape[block[0]][1]
            # Buffers of the other arrangement, from an earlier pass at this size (the content
            # image's, which stops at conv4_2), are dropped, so that the two never coexist.
            if (self.pooling != "avg" or conv in names or LAYER_ORDER.index(block[-1]) > deepest
                    or len(block) * rows_next * C_next < rows * C):
                self._buffers.pop(("block of", conv), None)
                self._buffers.pop(("mask", conv), None)
                continue
            for name in (conv, *block):
                self._buffers.pop(name, None)
            shared = self._buffer(("block of", conv), len(block) * rows_next, C_next)
            for i, name in enumerate(block):
                places[name] = shared[i * rows_next:(i + 1) * rows_next]
            places[conv] = shared.reshape(-1)[:rows * C].reshape(rows, C)
            masks[conv] = self._buffer(("mask", conv), rows, C, dtype=bool)
        return places, masks

    # ------------------------------------------------------------------------------ forward
    def _check_input(self, x):
        if array_module(x) is not self.xp:
            raise InputError(f"the image is a {type(x).__module__} array but the network runs on "
                             f"{self.backend}: move it with handnst.backend.to_device first")
        if x.ndim != 3 or x.shape[0] != 3:
            raise InputError(f"the network takes one image of shape (3, H, W), got {tuple(x.shape)}")
        return x.astype(self.dtype, copy=False)

    def forward(self, x, layers, layout="chw"):
        """Responses of the requested layers to image x (3, H, W), as a dict name -> array.

        layout "chw": each response is a new (C, h, w) array.
        layout "matrix": each response is the paper's feature matrix F of shape (C, M') -- a view
        into the network's buffers, valid until the next forward or backward -- whose columns are the positions
        of the padded grid: M' > h*w, the extra columns are exactly zero, so sums, Gram matrices and
        products with F come out as if they were not there (pass M = h*w where the count matters).
        """
        if layout not in ("chw", "matrix"):
            raise InputError(f"unknown layout {layout!r}: use 'chw' or 'matrix'")
        names = [canonical_layer(n) for n in ([layers] if isinstance(layers, str) else layers)]
        if not names:
            raise InputError("ask for at least one layer")
        x = self._check_input(x)
        _, H, W = x.shape
        need = min_image_size(names)
        if min(H, W) < need:
            raise InputError(f"the image is {W}x{H} pixels but layer {max(names, key=scale_of)} needs at least "
                             f"{need}x{need} (it sees the image {need} times smaller)")
        deepest = max(LAYER_ORDER.index(n) for n in names)
        # The last pass's maps are dead from here on. When the size changes (the style image after
        # the content, the levels of a coarse-to-fine run), free them all now rather than as each
        # is replaced, so that two sizes' maps never coexist (280 MB at 512x384).
        self._state = None
        if self._size != (H, W):
            self._buffers.clear()
            self._size = (H, W)
        P = L.to_padded(x, out=self._buffer("input", L.padded_length(H, W), 3))
        maps = {}
        places, masks = self._mask_only_places(names, deepest, H, W)
        clock = self._clock()
        for name in LAYER_ORDER[:deepest + 1]:
            if name.startswith("conv"):
                out = places.get(name)
                if out is None:
                    out = self._buffer(name, L.padded_length(H, W), self._shape[name][1])
                P = self._conv_forward(name, P, H, W, out)
                if name in masks:
                    self.xp.greater(P, 0, out=masks[name])
            else:
                H2, W2 = H // 2, W // 2
                out = self._buffer(name, L.padded_length(H2, W2), P.shape[1])
                P = L.pool_forward_padded(P, H, W, out, self.pooling)
                H, W = H2, W2
            maps[name] = (P, H, W)
            clock("forward", name)
        self._state = {"shape": x.shape, "maps": maps, "deepest": deepest, "masks": masks}
        if layout == "matrix":
            return {n: maps[n][0].T for n in names}
        return {n: L.from_padded(*maps[n]) for n in names}

    def map_shape(self, name):
        """(h, w) of a layer's map in the last forward pass (M_l = h * w in the paper)."""
        if self._state is None or canonical_layer(name) not in self._state["maps"]:
            raise InputError(f"layer {name} was not computed by the last forward pass")
        _, h, w = self._state["maps"][canonical_layer(name)]
        return h, w

    # ----------------------------------------------------------------------------- backward
    def backward(self, grads, layout="chw"):
        """dL/dx (3, H, W) for the gradients dL/dF given at any layers of the last forward pass.

        grads: dict name -> gradient with the shape of that layer's forward response in `layout`.
        Gradients at several layers add up on the way down, as the chain rule says.

        A gradient may also be a function `write(out, accumulate)` that stores it (accumulate False)
        or adds it (True) into `out`, the layer's gradient as a padded channels-last matrix (rows, C),
        i.e. the transpose of the "matrix" layout. StyleTransferLoss gives its style gradients this
        way: each is one matrix product that BLAS can add straight into the network's buffer, so no
        (M', N) array is ever stored for it (93 MB less at 512x384) and no extra pass adds it in.
        """
        if self._state is None:
            raise InputError("call forward before backward (each forward pass allows one backward pass: "
                             "the backward pass reuses the stored maps as scratch space)")
        if not grads:
            raise InputError("give the gradient at one layer at least")
        maps, masks = self._state["maps"], self._state["masks"]
        given = {}
        for name, g in grads.items():
            key = canonical_layer(name)
            if key not in maps:
                raise InputError(f"no gradient can flow from {name}: the last forward pass stopped before it")
            given[key] = g
        lowest = max(LAYER_ORDER.index(n) for n in given)
        _, H0, W0 = self._state["shape"]
        # From here on the stored maps are used up: once a convolution's ReLU mask has been applied,
        # its map is dead and its buffer receives the gradient for the layer below; the first
        # convolution of a block writes into the pooled map it read (which no backward pass needs).
        # That saves a full set of gradient buffers (a third of the memory at 512x384), at the
        # price of one backward pass per forward pass.
        self._state = None
        g = None
        clock = self._clock()
        for index in range(lowest, -1, -1):
            name = LAYER_ORDER[index]
            P, H, W = maps[name]
            if name in given:
                fresh = g is None
                if fresh:
                    g = self._buffer(("grad", P.shape), *P.shape)
                if callable(given[name]):
                    given[name](g, accumulate=not fresh)
                else:
                    incoming = self._as_padded(given[name], H, W, P.shape[1], layout)
                    if fresh:
                        g[...] = incoming
                    else:
                        g += incoming
            if g is None:
                continue
            if name.startswith("conv"):
                if g is P:
                    # The pool above wrote the gradient over this map, ReLU mask included.
                    g = self._conv_backward_in_place(name, g, H, W)
                    clock("backward", name)
                    continue
                L.relu_mask_backward(g, masks.get(name, P))     # (a bool mask: the same test)
                rows, C = L.padded_length(H, W), self._shape[name][0]
                below = LAYER_ORDER[index - 1] if index else None
                if P.shape == (rows, C):
                    out = P
                elif below and below.startswith("pool") and below not in given and maps[below][0].shape == (rows, C):
                    out = maps[below][0]    # a pooled map: no backward pass reads it (and no loss here)
                else:
                    out = self._buffer(("grad", (rows, C)), rows, C)
                g = self._conv_backward(name, g, H, W, out)
            else:
                below_name = LAYER_ORDER[index - 1]
                below, Hb, Wb = maps[below_name]
                if below_name in given:
                    # A loss at the map below still needs the map (a Gram gradient reads it): keep it.
                    out = self._buffer(("grad", below.shape), *below.shape)
                    g = L.pool_backward_padded(g, below, Hb, Wb, out, self.pooling)
                elif below_name in masks:
                    # Only the mask was kept; `below` is room in the next block's dead maps.
                    g = L.pool_relu_backward_from_mask(g, masks[below_name], Hb, Wb, below)
                else:
                    g = L.pool_relu_backward_in_place(g, below, Hb, Wb, self.pooling)
            clock("backward", name)
        return L.from_padded(g, H0, W0)

    def _clock(self):
        """A function clock(direction, name) that books the time since its last call to that layer
        in self.layer_times (a no-op when layer_times is None)."""
        times = self.layer_times
        if times is None:
            return lambda direction, name: None
        xp = self.xp
        synchronize(xp)
        last = [time.perf_counter()]

        def clock(direction, name):
            synchronize(xp)
            now = time.perf_counter()
            times.setdefault((direction, name), []).append(now - last[0])
            last[0] = now
        return clock

    def _as_padded(self, g, H, W, C, layout):
        if array_module(g) is not self.xp:
            raise InputError(f"gradients must live on the network's backend ({self.backend})")
        if layout == "matrix":
            if g.shape != (C, L.padded_length(H, W)):
                raise InputError(f"a gradient of shape {tuple(g.shape)} does not match the layer's feature matrix "
                                 f"({C}, {L.padded_length(H, W)})")
            return g.T
        if tuple(g.shape) != (C, H, W):
            raise InputError(f"a gradient of shape {tuple(g.shape)} does not match the layer ({C}, {H}, {W})")
        return L.to_padded(g.astype(self.dtype, copy=False))


def random_vgg19(seed=0, *, pooling="avg", backend="numpy", dtype="float32", conv="auto"):
    """A VGG19 with He-initialised random weights in the pretrained layout (for tests and lessons)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    params = {}
    for name, cin, cout in CONV_LAYERS:
        std = (2.0 / (9 * cin)) ** 0.5
        params[name] = (std * rng.standard_normal((cout, cin, 3, 3), dtype=np.float32),
                        0.01 * rng.standard_normal(cout, dtype=np.float32))
    return VGG19(params, convention=KERAS_CONVENTION, pooling=pooling, backend=backend, dtype=dtype,
                 source=f"random (He initialisation, seed {seed})", conv=conv)


def load_vgg19(path=None, *, pooling="avg", backend="numpy", dtype="float32", conv="auto"):
    """The pretrained VGG19 from an HDF5 file in handnst's format.

    path None: the first of $HANDNST_WEIGHTS, weights/vgg19.h5 in the source tree and the user cache;
    if there is none, the default weights are fetched first (and the reason printed on stderr).
    """
    found = ensure_weights(path)
    stamp = file_stamp(found)
    params, meta = load_weights(found)
    return VGG19(params, convention=meta["convention"], pooling=pooling, backend=backend, dtype=dtype,
                 source=found, conv=conv, reload=functools.partial(load_layer, found, stamp=stamp))
