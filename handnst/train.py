"""Training a feed-forward style network (Johnson, Alahi & Fei-Fei 2016), every gradient by hand.

Optimization-based style transfer (handnst.transfer) solves one problem per picture. Johnson et al.
instead train an image transformation network T once per style, on many photographs x, to make
pictures y = T(x) whose VGG19 features have the content of x and the Gram matrices of the style:

    L(x) = alpha L_content(phi(T(x)), phi(x)) + beta sum_l w_l E_l(T(x), a) + gamma L_tv(T(x))

with the losses of handnst.losses, in the paper's form (content 1/2 sum (F - P)^2 at relu2_2; style
E_l = 1/(4 N_l^2 M_l^2) sum (G - A)^2 at relu1_2, relu2_2, relu3_3 and relu4_3, w_l proportional to
1/N_l^2 as in Johnson et al., see below). Then

    dL/dtheta = dT/dtheta^T  dL/dy,     dL/dy = VGG19.backward(dL/dF at the loss layers)

so one training step is: a batch of crops x (handnst.data), y = T.forward(x), for each image of the
batch a VGG19 forward pass on x (the content target) and on y, the loss gradients at the layers, one
VGG19 backward pass to dL/dy, then T.backward(dL/dy) for dL/dtheta and one Adam step on every
parameter. The batch loss is the mean of the images' losses.

The style's Gram matrices A^l are computed once, from the style image at `style_size`, and scaled
to the crops' number of positions M_l: A^l = G^l(a) M_l / M_l(a). That makes E_l compare Gram
matrices *per position*, (1/4N^2) sum (G/M - G(a)/M(a))^2, so the style image may have any size
(Johnson's Gram matrices are divided by C H W for the same reason).

Long runs: `checkpoint_every` writes a checkpoint (parameters, Adam moments, the step, the crop
generator's state, the loss history) atomically; Ctrl-C finishes the step it is in and writes one as
well; `resume=` continues from one exactly as if the run had never stopped: the same crops, the same
parameters, bit for bit.
"""

import hashlib
import math
import os
import signal
import sys
import threading
import time
import types
from dataclasses import dataclass, field

import numpy as np

from handnst import image as _image
from handnst.backend import canonical_backend, get_xp, synchronize, to_device
from handnst.checkpoint import Adam, default_checkpoint_path, load_checkpoint, save_checkpoint  # noqa: F401
from handnst.errors import InputError, RunError
from handnst.losses import (_both, content_loss, content_loss_backward, gram_matrix, style_layer_gradient_writer,
                            style_layer_loss, tv_loss, tv_loss_backward)
from handnst.networks.vgg import POOLINGS, canonical_layer, min_image_size

# ------------------------------------------------------------------------------------------ defaults
#
# Johnson et al.'s layers (VGG16's relu3_3 and relu4_3 exist in VGG19 too) and max pooling (the
# pooling VGG was trained with; Johnson et al. use the network as it is). The weights are chosen
# for the paper's form of the losses; see the README, "Feed-forward style transfer", for how they
# relate to Johnson's normalisation.
DEFAULT_CONTENT_LAYERS = ("conv2_2",)
DEFAULT_STYLE_LAYERS = ("conv1_2", "conv2_2", "conv3_3", "conv4_3")
# Johnson et al.'s Gram matrices are divided by C H W and their style loss is a mean over the C^2
# entries: per layer that is 4 E_l / C_l^2, so their equal layer weights put 1/C_l^2 on our E_l. The
# default layer weights keep that balance (normalised to sum 1; for the default layers, with 64,
# 128, 256 and 512 channels: 0.753, 0.188, 0.047, 0.012).
DEFAULT_SIZE = 256
DEFAULT_BATCH = 4
DEFAULT_ITERS = 2000
DEFAULT_LR = 1e-3
DEFAULT_WIDTH = 32
DEFAULT_RESIDUAL_BLOCKS = 5
DEFAULT_CONTENT_WEIGHT = 1.0
# The content loss sums over the crop's positions and grows with size^2; the style loss compares
# Gram matrices per position and does not. So the default style weight is per pixel of the crop:
# beta = 0.02 * size^2 (82 at 64 px, 328 at 128, 1311 at 256), one look at every crop size. Chosen
# by training at 64 and 128 px and looking at unseen photos (see the README).
DEFAULT_STYLE_WEIGHT_PER_PIXEL = 0.02
DEFAULT_STYLE_WEIGHT = None
DEFAULT_TV_WEIGHT = 0.0
DEFAULT_POOLING = "max"
DEFAULT_SEED = 0
PREVIEW_SIZE = 256

# Options that change what the run computes: a checkpoint resumes only under the same ones.
_RESUME_KEYS = ("width", "residual_blocks", "size", "batch", "lr", "seed", "content_weight", "style_weight",
                "tv_weight", "content_layers", "style_layers", "style_layer_weights", "style_size", "pooling", "style_digest",
                "data_digest", "weights_digest")


@dataclass
class TrainResult:
    """What train returns.

    net:      the transformation network (handnst.networks.transform.TransformNet), trained
    history:  one dict per step: step, total, content, style, style_per_layer, tv, seconds (since the
              start of the run, resumed runs included) and step_seconds
    timings:  seconds (this session's training), seconds_per_step, setup_seconds, and the mean
              seconds per step of each part: data, transform_forward, loss (VGG forward and backward
              and the loss gradients), transform_backward, adam
    step:     steps done (the first `resumed_from` of them by an earlier session)
    stopped:  "max_iters", or "interrupted" after Ctrl-C (a checkpoint was written)
    checkpoint: the path of the last checkpoint written, or None
    frames:   the preview pictures written (save_every)
    """

    net: object
    history: list
    timings: dict
    step: int
    stopped: str
    options: dict = field(default_factory=dict)
    resumed_from: int = 0
    checkpoint: object = None
    frames: list = field(default_factory=list)
    data: dict = field(default_factory=dict)

    def loss_summary(self):
        """First and last losses (means over the first and last 10% of steps, at least one step)."""
        h = [r for r in self.history if math.isfinite(r.get("total", math.nan))]
        if not h:
            return {}
        k = max(1, len(h) // 10)
        first = {key: float(np.mean([r[key] for r in h[:k]])) for key in ("total", "content", "style", "tv")}
        last = {key: float(np.mean([r[key] for r in h[-k:]])) for key in ("total", "content", "style", "tv")}
        return {"steps": len(h), "window": k, "first": first, "last": last,
                "fall": 1.0 - last["total"] / first["total"] if first["total"] else None}

    def report(self):
        return {
            "steps": self.step,
            "resumed_from": self.resumed_from,
            "stopped": self.stopped,
            "loss": self.history[-1] if self.history else {},
            "loss_summary": self.loss_summary(),
            "timings": self.timings,
            "options": self.options,
            "data": self.data,
            "checkpoint": self.checkpoint,
            "frames": self.frames,
            "history": self.history,
        }


# -------------------------------------------------------------------------------------- validation

def _int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be a whole number >= {minimum}, not {value!r}")
    return int(value)


def _float(name, value, positive=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise InputError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, not {value!r}")
    return v


def _layers(name, layers):
    names = tuple(dict.fromkeys(canonical_layer(n) for n in ([layers] if isinstance(layers, str) else layers)))
    if not names:
        raise InputError(f"give at least one {name} layer")
    for n in names:
        if not n.startswith("conv"):
            raise InputError(f"{name} layer {n} is a pooling layer; use the relu/conv layers (e.g. relu2_2)")
    return names


def _digest_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _digest_array(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


# --------------------------------------------------------------------------------------- the loss

class PerceptualLoss:
    """Johnson et al.'s loss for a batch, with dL/dy, on one VGG19 (images one at a time).

        parts, dy = loss(x, y)     # x: the crops, y = T(x); both (B, 3, S, S) on the net's backend

    The value is the mean over the batch of alpha L_content + beta sum_l w_l E_l + tv_weight L_tv;
    parts has the means of each term ("content", "style", "tv", "style_per_layer") and "total".
    """

    def __init__(self, vgg, style, size, *, content_layers=DEFAULT_CONTENT_LAYERS, style_layers=DEFAULT_STYLE_LAYERS,
                 content_weight=DEFAULT_CONTENT_WEIGHT, style_weight=DEFAULT_STYLE_WEIGHT,
                 tv_weight=DEFAULT_TV_WEIGHT, style_layer_weights=None):
        self.vgg = vgg
        self.content_layers = tuple(content_layers)
        self.style_layers = tuple(style_layers)
        if style_weight is None:
            style_weight = DEFAULT_STYLE_WEIGHT_PER_PIXEL * size * size
        self.alpha, self.beta, self.gamma = float(content_weight), float(style_weight), float(tv_weight)
        if style_layer_weights is None:
            style_layer_weights = johnson_layer_weights(self.style_layers)
        if len(style_layer_weights) != len(self.style_layers):
            raise InputError(f"{len(style_layer_weights)} style layer weights for {len(self.style_layers)} style "
                             "layers: give one per layer")
        self.style_layer_weights = dict(zip(self.style_layers, (float(w) for w in style_layer_weights)))
        self.layers = tuple(dict.fromkeys(self.content_layers + self.style_layers))
        self.size = int(size)
        # Gram targets, once: per position, scaled to the crops' M_l.
        feats = vgg.forward(style, self.style_layers, layout="matrix")
        self.gram_targets = {}
        for n in self.style_layers:
            h, w = vgg.map_shape(n)
            M_style = h * w
            s = self.size // _scale(n)
            self.gram_targets[n] = gram_matrix(feats[n]) * (float(s * s) / M_style)
        self.positions = {n: (self.size // _scale(n)) ** 2 for n in self.style_layers}

    def __call__(self, x, y):
        vgg = self.vgg
        B = x.shape[0]
        parts = {"content": 0.0, "style": 0.0, "tv": 0.0, "style_per_layer": {n: 0.0 for n in self.style_layers}}
        dy = vgg.xp.empty_like(y)
        for i in range(B):
            targets = vgg.forward(x[i], self.content_layers, layout="matrix")
            targets = {n: targets[n].copy(order="K") for n in self.content_layers}
            feats = vgg.forward(y[i], self.layers, layout="matrix")
            grads = {}
            for n in self.content_layers:
                value, cache = content_loss(feats[n], targets[n])
                parts["content"] += value / B
                if self.alpha:
                    grads[n] = content_loss_backward(cache, relu_mask=False, upstream=self.alpha / B)
            for n in self.style_layers:
                value, cache = style_layer_loss(feats[n], self.gram_targets[n], M=self.positions[n])
                parts["style_per_layer"][n] += value / B
                parts["style"] += self.style_layer_weights[n] * value / B
                weight = self.beta * self.style_layer_weights[n] / B
                if weight:
                    write = style_layer_gradient_writer(cache, upstream=weight)
                    grads[n] = _both(grads[n], write) if n in grads else write
            if grads:
                dy[i] = vgg.backward(grads, layout="matrix")
            else:
                dy[i] = 0
            if self.gamma:
                value, cache = tv_loss(y[i])
                parts["tv"] += value / B
                dy[i] += (self.gamma / B) * tv_loss_backward(cache)
        parts["total"] = self.alpha * parts["content"] + self.beta * parts["style"] + self.gamma * parts["tv"]
        return parts, dy


def calibrate_output(net, x):
    """Start the output layer at the photos' scale: a data-dependent initialisation (as in LSUV).

    The network's layers are initialised for outputs of about unit size, but its pictures live in
    VGG's input space, where pixels span about -120..150. Adam moves each weight by about `lr` per
    step, so conv6 would need hundreds of steps only to grow to that scale, and the pictures stay
    grey meanwhile. So, once, on the first batch x: per output channel c, conv6's weights are scaled
    by s_c = std(x_c) / std(y_c) and its bias set so that mean(y_c) = mean(x_c).
    """
    xp = net.xp
    y = net.forward(x, cache=False)
    w, b = net.params["conv6/weight"], net.params["conv6/bias"]
    for c in range(y.shape[1]):
        sy = float(xp.std(y[:, c]))
        s = float(xp.std(x[:, c])) / sy if sy > 0 else 1.0
        w[c] *= s
        b[c] = float(xp.mean(x[:, c])) - s * (float(xp.mean(y[:, c])) - float(b[c]))


def johnson_layer_weights(layers):
    """Weights w_l proportional to 1 / N_l^2 (N_l channels), summing to 1: Johnson et al.'s balance."""
    from handnst.networks.vgg import CONV_LAYERS
    channels = {name: cout for name, _, cout in CONV_LAYERS}
    raw = [1.0 / channels[canonical_layer(n)] ** 2 for n in layers]
    return [r / sum(raw) for r in raw]


def _scale(name):
    from handnst.networks.vgg import scale_of
    return scale_of(name)


# ------------------------------------------------------------------------------------- Ctrl-C

class _StopRequest:
    """SIGINT sets a flag; the loop stops at the end of the step, so the parameters and the Adam
    state are never half updated. A second Ctrl-C outside the update interrupts at once."""

    def __init__(self):
        self.requested = 0
        self.updating = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        self.requested += 1
        if self.requested >= 2 and not self.updating:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


# -------------------------------------------------------------------------------------- training

def train(style, *, data=None, size=DEFAULT_SIZE, batch=DEFAULT_BATCH, iters=DEFAULT_ITERS, lr=DEFAULT_LR,
          width=DEFAULT_WIDTH, residual_blocks=DEFAULT_RESIDUAL_BLOCKS, seed=DEFAULT_SEED,
          content_weight=DEFAULT_CONTENT_WEIGHT, style_weight=DEFAULT_STYLE_WEIGHT, tv_weight=DEFAULT_TV_WEIGHT,
          content_layers=DEFAULT_CONTENT_LAYERS, style_layers=DEFAULT_STYLE_LAYERS, style_layer_weights=None,
          style_size=None, pooling=DEFAULT_POOLING, device="cpu", weights=None, checkpoint=None, checkpoint_every=None,
          resume=None, save_every=None, preview=None, on_frame=None, callback=None, progress=False, log=None,
          vgg=None):
    """Train a transformation network on `style`. Returns a TrainResult (its .net is the network).

    style:      the style image (path, PIL image or array)
    data:       a folder of photographs (recursive), None for the bundled ones (handnst.data)
    size:       side of the square training crops; batch: crops per step; iters: steps in all
                (a resumed run stops at `iters` too)
    lr:         Adam's step size; width, residual_blocks: the network (32 and 5 in Johnson et al.)
    seed:       seeds the network's initial weights and the crops: same seed, same run, bit for bit
    content_weight, style_weight, tv_weight, content_layers, style_layers: the loss (module docstring);
                style_weight None is 0.02 * size^2 (see DEFAULT_STYLE_WEIGHT_PER_PIXEL)
    style_layer_weights: w_l, one per style layer (default proportional to 1/N_l^2, as Johnson et al.)
    style_size: longer side of the style image when its Gram matrices are taken (default `size`)
    pooling:    VGG19's pooling, "max" (default, as the network was trained) or "avg"
    device:     "cpu" (NumPy) or "gpu" (CuPy); weights: the VGG19 file (found automatically)
    checkpoint: where checkpoints go; checkpoint_every: write one every N steps (and on Ctrl-C when
                a checkpoint path is given); resume: a checkpoint path to continue from
    save_every: every N steps call on_frame(step, picture) with the network's picture of `preview`
                (a photo; default the bundled chelsea.jpg, which is not among the training photos)
    callback:   called with each step's history dict; return True to stop
    progress:   True for a tqdm bar on stderr; log(line): status lines
    vgg:        a VGG19 to use instead of loading one (tests)
    """
    from handnst.data import PhotoCrops
    from handnst.networks.transform import TransformNet
    from handnst.apply import stylize_array

    t_setup = time.perf_counter()
    # ---- options, all checked before anything is loaded
    size = _int("the crop size", size, 16)
    if size % 4:
        raise InputError(f"the crop size must be a multiple of 4 (the network halves it twice), not {size}")
    opts = {
        "size": size,
        "batch": _int("the batch size", batch),
        "iters": _int("the number of steps", iters),
        "lr": _float("the learning rate", lr, positive=True),
        "width": _int("the width", width),
        "residual_blocks": _int("the number of residual blocks", residual_blocks, 0),
        "seed": _int("the seed", seed, 0),
        "content_weight": _float("the content weight", content_weight),
        "style_weight": (_float("the style weight", style_weight) if style_weight is not None
                         else DEFAULT_STYLE_WEIGHT_PER_PIXEL * size * size),
        "tv_weight": _float("the total-variation weight", tv_weight),
        "content_layers": list(_layers("content", content_layers)),
        "style_layers": list(_layers("style", style_layers)),
        "style_layer_weights": None,
        "style_size": _int("the style size", style_size, 16) if style_size is not None else size,
        "pooling": pooling,
    }
    if style_layer_weights is None:
        opts["style_layer_weights"] = johnson_layer_weights(opts["style_layers"])
    else:
        opts["style_layer_weights"] = [_float("a style layer weight", w) for w in style_layer_weights]
        if len(opts["style_layer_weights"]) != len(opts["style_layers"]):
            raise InputError(f"{len(style_layer_weights)} style layer weights for {len(opts['style_layers'])} style "
                             "layers: give one per layer")
    if pooling not in POOLINGS:
        raise InputError(f"unknown pooling {pooling!r}: use 'max' (default) or 'avg'")
    need = min_image_size(opts["content_layers"] + opts["style_layers"])
    if size < need:
        raise InputError(f"crops of {size} pixels are too small for the chosen layers (they need at least {need})")
    for name, value in (("checkpoint_every", checkpoint_every), ("save_every", save_every)):
        if value is not None:
            _int(name.replace("_", " "), value)
    if checkpoint_every is not None and checkpoint is None:
        raise InputError("checkpoint_every needs a checkpoint path")
    backend = canonical_backend(device)
    get_xp(backend)
    opts["device"] = "gpu" if backend == "cupy" else "cpu"

    try:
        style_img = _image.load_image(style)
    except InputError as exc:
        raise InputError(f"the style image: {exc}") from None
    style_img = _image.resize_longer(style_img, opts["style_size"])
    if min(style_img.size) < need:
        raise InputError(f"the style image is {style_img.size[0]}x{style_img.size[1]} pixels at --style-size "
                         f"{opts['style_size']}; the chosen layers need at least {need} pixels a side")
    preview_img = None
    if save_every is not None:
        try:
            preview_img = _image.load_image(preview if preview is not None else _image.sample_path("chelsea"))
        except InputError as exc:
            raise InputError(f"the --preview photo: {exc}") from None
        preview_img = _image.resize_longer(preview_img, PREVIEW_SIZE)
    opts["style"] = os.fspath(style) if isinstance(style, (str, os.PathLike)) else f"<{type(style).__name__}>"
    opts["style_digest"] = _digest_array(np.asarray(style_img))

    resumed = load_checkpoint(resume) if resume is not None else None
    warnings = []
    crops = PhotoCrops(data, size=size, seed=opts["seed"],
                       warn=(log or warnings.append))
    opts["data"] = "bundled" if data is None else os.fspath(data)
    opts["data_digest"] = hashlib.sha256("\n".join(os.path.relpath(p, crops.folder) for p in crops.photos)
                                         .encode()).hexdigest()[:16]

    if vgg is None:
        from handnst.networks.vgg import load_vgg19
        vgg = load_vgg19(weights, pooling=pooling, backend=backend)
    elif vgg.pooling != pooling or vgg.backend != backend:
        raise InputError("the given VGG19 has another pooling or backend than the options")
    opts["weights"] = vgg.source
    opts["weights_digest"] = _digest_file(vgg.source) if vgg.source and os.path.isfile(str(vgg.source)) else str(vgg.source)
    crops.convention = vgg.convention

    net = TransformNet(opts["width"], opts["residual_blocks"], seed=opts["seed"], backend=backend)
    adam = Adam(net.params, lr=opts["lr"])
    history, start, elapsed0 = [], 0, 0.0
    if resumed is not None:
        old = resumed["options"]
        for key in _RESUME_KEYS:
            if old.get(key) != opts.get(key):
                shown = {"style_digest": "style image", "data_digest": "photo folder", "weights_digest": "VGG19 weights"}
                what = shown.get(key, "--" + key.replace("_", "-"))
                raise InputError(f"the checkpoint {os.fspath(resume)!r} was made with another {what} "
                                 f"({old.get(key)!r}, now {opts.get(key)!r}); resume with the options it was made with")
        for group, target in (("params", net.params), ("adam_m", adam.m), ("adam_v", adam.v)):
            arrays = resumed[group]
            for k, a in target.items():
                if k not in arrays or arrays[k].shape != tuple(a.shape):
                    raise InputError(f"the checkpoint {os.fspath(resume)!r} does not fit the network ({group}/{k})")
                a[...] = to_device(arrays[k], backend)
        adam.t = resumed["adam_t"]
        crops.set_state(resumed["data_state"])
        history = resumed["history"]
        start = resumed["step"]
        elapsed0 = resumed["elapsed"]
        if start >= opts["iters"]:
            raise InputError(f"the checkpoint is at step {start} already; give --iters larger than {start} to go on")
    else:
        state = crops.state()                    # the first batch, drawn again by step 1
        calibrate_output(net, to_device(crops.batch(opts["batch"]), backend))
        crops.set_state(state)

    style_x = to_device(_image.preprocess(style_img, None, vgg.convention), backend)
    loss = PerceptualLoss(vgg, style_x, size, content_layers=opts["content_layers"],
                          style_layers=opts["style_layers"], content_weight=opts["content_weight"],
                          style_weight=opts["style_weight"], tv_weight=opts["tv_weight"],
                          style_layer_weights=opts["style_layer_weights"])
    preview_x = to_device(_image.preprocess(preview_img, None, vgg.convention), backend) if preview_img else None
    public = {k: v for k, v in opts.items() if not k.endswith("_digest")}
    public["input_convention"] = dict(vgg.convention)
    setup_seconds = time.perf_counter() - t_setup
    if log is not None:
        log(f"training a width-{opts['width']} network with {opts['residual_blocks']} residual blocks on "
            f"{len(crops)} photos ({crops.folder}), crops of {size} px, batch {opts['batch']}, steps "
            f"{start + 1}..{opts['iters']} on the {opts['device']}"
            + (" (Ctrl-C stops after the current step and writes a checkpoint)" if checkpoint else ""))

    bar = None
    if progress:
        from tqdm import tqdm
        import sys
        bar = tqdm(total=opts["iters"], initial=start, unit="step", file=sys.stderr, dynamic_ncols=True,
                   disable=not (progress is True or progress == "force") or
                   (progress is True and not sys.stderr.isatty()))

    parts_time = {k: 0.0 for k in ("data", "transform_forward", "loss", "transform_backward", "adam")}
    frames = []
    stopped = "max_iters"
    last_checkpoint = None
    xp = net.xp
    t_run = time.perf_counter()
    step = start

    def clock(key, t0):
        synchronize(xp)
        t1 = time.perf_counter()
        parts_time[key] += t1 - t0
        return t1

    def write_checkpoint():
        nonlocal last_checkpoint
        elapsed = elapsed0 + time.perf_counter() - t_run
        last_checkpoint = save_checkpoint(checkpoint, net, adam, crops.state(), step, history, opts, elapsed)

    with _StopRequest() as stop:
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                while step < opts["iters"]:
                    if stop.requested:
                        stopped = "interrupted"
                        break
                    t0 = time.perf_counter()
                    x = to_device(crops.batch(opts["batch"]), backend)
                    t1 = clock("data", t0)
                    y = net.forward(x)
                    t2 = clock("transform_forward", t1)
                    parts, dy = loss(x, y)
                    t3 = clock("loss", t2)
                    _, grads = net.backward(dy, need_dx=False)
                    t4 = clock("transform_backward", t3)
                    if not math.isfinite(parts["total"]):
                        raise RunError(f"the loss became {parts['total']} at step {step + 1}; try a smaller --lr "
                                       "or smaller loss weights" + (f" (the last checkpoint is {last_checkpoint})"
                                                                     if last_checkpoint else ""))
                    stop.updating = True
                    adam.step(net.params, grads)
                    step += 1
                    stop.updating = False
                    t5 = clock("adam", t4)
                    record = {"step": step, "total": parts["total"], "content": parts["content"],
                              "style": parts["style"], "tv": parts["tv"],
                              "style_per_layer": {n: float(v) for n, v in parts["style_per_layer"].items()},
                              "seconds": elapsed0 + t5 - t_run, "step_seconds": t5 - t0}
                    history.append(record)
                    if bar is not None:
                        bar.set_postfix({"loss": f"{parts['total']:.4g}", "content": f"{parts['content']:.3g}",
                                         "style": f"{parts['style']:.3g}"}, refresh=False)
                        bar.update(1)
                    if save_every and (step % save_every == 0 or step == opts["iters"]) and on_frame is not None:
                        picture = _image.deprocess(stylize_array(net, preview_x), vgg.convention)
                        frames.append(on_frame(step, picture))
                    if checkpoint_every and (step % checkpoint_every == 0 or step == opts["iters"]):
                        write_checkpoint()
                    if callback is not None and callback(record):
                        stopped = "callback"
                        break
        except KeyboardInterrupt:
            stopped = "interrupted"
        finally:
            if bar is not None:
                bar.close()
        if stopped == "interrupted" and checkpoint is not None and step > start:
            write_checkpoint()
    seconds = time.perf_counter() - t_run
    done = max(step - start, 1)
    timings = {"seconds": seconds, "seconds_per_step": seconds / done, "setup_seconds": setup_seconds,
               "seconds_total_all_sessions": elapsed0 + seconds,
               **{f"{k}_seconds_per_step": v / done for k, v in parts_time.items()}}
    data_info = {"folder": crops.folder, "bundled": crops.bundled, "photos": len(crops),
                 "skipped": crops.skipped, "failed_to_decode": len(crops.failed)}
    if warnings:
        data_info["warnings"] = warnings
    return TrainResult(net=net, history=history, timings=timings, step=step, stopped=stopped, options=public,
                       resumed_from=start, checkpoint=last_checkpoint, frames=[f for f in frames if f],
                       data=data_info)


def model_attributes(result):
    """The file attributes of a trained model: the style, every option, a loss summary."""
    return {
        "style_image": result.options.get("style"),
        "input_convention": result.options.get("input_convention"),
        "training_options": result.options,
        "steps": int(result.step),
        "loss_summary": result.loss_summary(),
        "handnst_version": __import__("handnst").__version__,
    }


# `handnst.train(...)` is this module's train(). Importing a submodule makes it an attribute of the
# package (handnst.train is then this module, not the function the lazy table in handnst/__init__.py
# hands out), so the module itself forwards calls to train(): both spellings work in any import order.
class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
