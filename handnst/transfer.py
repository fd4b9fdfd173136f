


"""Style transfer end to end: images in, a picture out, and the paper's experiments.

Gatys, Ecker & Bethge (2015/2016) make a picture x that matches the *content* of a photograph p in
a deep layer of VGG19 and the *style* of a painting a (the Gram matrices of several layers):

    x* = argmin_x  alpha L_content(p, x) + beta L_style(a, x) [+ tv_weight L_tv(x)]

over the pixels x themselves, with L-BFGS (here scipy's L-BFGS-B, whose box bounds keep every pixel
a valid colour). This module puts the pieces together:

    image/           files -> (3, H, W) arrays in the weights' input space, and back
    networks/vgg.py  the network, built once per call
    losses.py        the objective L(x) and its hand-written gradient
    optimize.py      the optimizer that drives the pixels, with best-so-far, Ctrl-C and NaN handling
    options.py       every option checked before anything expensive runs
    memory.py        what a run needs, refused before it starts when the machine cannot hold it

and adds what a person running it needs: checks of every option *before* anything expensive runs,
a memory estimate that refuses runs the machine cannot hold, progress, frames, and a `Result` with
the image, the loss history and the timings.

    result = stylize("photo.jpg", "painting.jpg", size=256)
    result.image.save("out.png")

The paper's other experiments:

    reconstruct("photo.jpg", "conv4_2")                  # content reconstruction from white noise
    texture("painting.jpg", ["conv1_1", "conv2_1"])      # style reconstruction from white noise
    grid("photo.jpg", "painting.jpg")                    # Figure 3: style layers x alpha/beta ratios

Everything the network touches (the net, the loss, x) lives on the chosen backend; only the flat
vector of pixels crosses to scipy and back, once per evaluation.
"""

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from handnst import image as _image
from handnst.backend import to_device, to_host
from handnst.controls import (apply_color_control, check_color_options, check_regions, check_style_scale,
                              level_images, load_region_masks, load_style_mask, style_side)
from handnst.errors import InputError
from handnst.image import initial_image
from handnst.losses import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, StyleTransferLoss, parts_to_host
from handnst.memory import available_memory, check_memory, estimate_memory, memory_breakdown, _memory_guard  # noqa: F401
from handnst.levels import (DEFAULT_LEVEL_FACTOR, DEFAULT_NORMALIZATION, content_weight_at, plan_options,
                            level_progress, plan_run, run_plan, shared_net, upsample, upsample_detail,
                            with_level)
from handnst.optimize import make_progress, minimize
from handnst.options import (DEFAULT_CONTENT_WEIGHT, DEFAULT_DEVICE, DEFAULT_INIT, DEFAULT_ITERS,  # noqa: F401
                             DEFAULT_OPTIMIZER, DEFAULT_POOLING, DEFAULT_SEED, DEFAULT_SIZE, DEFAULT_STYLE_WEIGHT,
                             DEFAULT_TV_EXPONENT, DEFAULT_TV_WEIGHT, GRID_LAYER_SETS, GRID_RATIOS, _common_options,
                             _describe_input, _layers, _positive_int, _weights_list, check_min_size)


@dataclass
class Result:
    """What stylize, reconstruct and texture return.

    image:       the picture (PIL RGB), with the content's colours put back under preserve_color
    array:       the final x, a host float32 array (3, H, W) in the network's input space
    history:     one dict per iteration: iteration, evaluations, value, seconds, and the loss parts
                 total, content, style, style_per_layer, tv (of the current iterate)
    timings:     seconds (optimization), setup_seconds (images, network, targets),
                 seconds_per_evaluation, seconds_per_iteration
    iterations:  optimizer iterations completed
    evaluations: objective evaluations (one forward and one backward pass each)
    loss:        the parts of the final image: total, content, style, style_per_layer, tv
    stopped:     why the optimizer stopped (see handnst.optimize.STOP_REASONS): "interrupted" after
                 Ctrl-C and "nonfinite" after a NaN/Inf, both with the best image so far
    message:     one sentence saying why it stopped
    options:     the options of the run, resolved (JSON-friendly)
    frames:      paths of the intermediate frames written (save_every with frame_dir)
    levels:      coarse-to-fine runs: one dict per level (size, iterations, evaluations, seconds,
                 content_weight, loss); iterations, evaluations and seconds above are the sums, the
                 rest is the last level's
    """

    image: object
    array: np.ndarray
    history: list
    timings: dict
    iterations: int
    evaluations: int
    loss: dict
    stopped: str
    message: str = ""
    options: dict = field(default_factory=dict)
    frames: list = field(default_factory=list)
    levels: list = field(default_factory=list)

    @property
    def size(self):
        """(width, height) of the picture."""
        return self.image.size

    def report(self):
        """The JSON report of the run: loss, counts, timings, size, options and a compact history."""
        keys = ("total", "content", "style", "tv")
        return {
            "loss": self.loss,
            "iterations": self.iterations,
            "evaluations": self.evaluations,
            "seconds": self.timings.get("seconds"),
            "seconds_per_evaluation": self.timings.get("seconds_per_evaluation"),
            "seconds_per_iteration": self.timings.get("seconds_per_iteration"),
            "setup_seconds": self.timings.get("setup_seconds"),
            "size": list(self.size),
            "stopped": self.stopped,
            "message": self.message,
            "options": self.options,
            "history": [{"iteration": h["iteration"], "evaluations": h["evaluations"],
                         "seconds": h["seconds"], **{k: h[k] for k in keys if k in h}}
                        for h in self.history],
            **({"levels": self.levels, "wall_seconds": self.timings.get("wall_seconds")} if self.levels else {}),
        }


# ------------------------------------------------------------------------------------------ running

def _load_resized(obj, size, what, memory=None):
    """Load an image and resize its longer side to `size`.

    memory(H, W), if given, is called with the size the image is about to get, *before* resizing:
    so an enormous --size is refused by the memory estimate, with a size that fits, instead of
    being attempted.
    """
    try:
        img = _image.load_image(obj)
    except InputError as exc:
        raise InputError(f"{what}: {exc}") from None
    if memory is not None:
        width, height = img.size
        if size is not None:
            ratio = size / max(width, height)
            width, height = max(1, round(width * ratio)), max(1, round(height * ratio))
        memory(height, width)
    return _image.resize_longer(img, size)


def _frame_writer(save_every, frame_dir, on_frame, convention, colour_source, ext=".png"):
    """A function(info) that turns every save_every-th iterate into a picture; None if not asked."""
    if save_every is None:
        return None, []
    written = []
    if frame_dir is not None:
        if not os.path.isdir(frame_dir):
            raise InputError(f"the frame folder {os.fspath(frame_dir)!r} does not exist; create it first")
        _image.check_output_path(os.path.join(frame_dir, "frame_0000" + ext))

    def write(info):
        iteration = info["iteration"]
        if iteration % save_every:
            return None
        picture = _image.deprocess(info["x"], convention)
        if colour_source is not None:
            picture = _image.restore_chrominance(picture, colour_source)
        if frame_dir is not None:
            path = os.path.join(frame_dir, f"frame_{iteration:04d}{ext}")
            _image.save_image(picture, path)   # atomic: a frame is complete or absent
            written.append(path)
        if on_frame is not None:
            on_frame(iteration, picture)
        return None

    return write, written


def _run(*, content_img, style_imgs, content_layers, style_layers, size_hw, options, net=None,
         callback=None, progress=False, save_every=None, frame_dir=None, on_frame=None,
         colour_source=None, init_img=None, what="style transfer", log=None, regions=None, x0=None, alpha=None):
    """The common core: network, loss, bounds, initial image, optimization, picture.

    content_img / style_imgs are host PIL images already resized (content None for texture, styles
    [] for reconstruction); size_hw is the output's (H, W). `options` holds the validated options.
    regions: (content mask, style PIL image, style mask or None) triples instead of style_imgs.
    x0: a level's start instead of options' init: a host array, or x0(preprocess) -> array;
    alpha: the content weight instead of options' (a level's, see levels.content_weight_at).
    """
    t_setup = time.perf_counter()
    backend = options["device_backend"]
    if net is None:
        # The weights are the last input to check (missing, damaged, wrong shapes, NaN): load them
        # before the status line, so that a bad file is the only line the user sees.
        from handnst.networks.vgg import load_vgg19
        net = load_vgg19(options.get("weights"), pooling=options["pooling"], backend=backend)
    if log is not None:
        # Everything has been checked by now: this line is never followed by an input error.
        H, W = size_hw
        log(f"{what} at {W}x{H} pixels: {options['iters']} {options['optimizer']} iterations on the "
            f"{options['device']} (Ctrl-C stops early and keeps the best image so far)")
    convention = net.convention
    xp = net.xp

    def to_net(img):
        return to_device(_image.preprocess(img, None, convention), net.backend)

    content = to_net(content_img) if content_img is not None else None
    styles = [to_net(s) for s in style_imgs]
    guided = [(m, to_net(s), sm) for m, s, sm in regions] if regions else None
    loss = StyleTransferLoss(
        net, content, styles if styles and not guided else None,
        content_layers=content_layers, style_layers=style_layers,
        style_layer_weights=options.get("style_layer_weights"),
        alpha=options["content_weight"] if alpha is None else alpha, beta=options["style_weight"],
        tv_weight=options["tv_weight"], tv_exponent=options["tv_exponent"],
        style_blend_weights=options.get("style_blend_weights"), regions=guided,
        targets_per_position=options.get("style_scale") is not None or options.get("normalization") == "size-invariant")

    lo, hi = _image.pixel_bounds(convention)
    bounds = (lo.reshape(3, 1, 1), hi.reshape(3, 1, 1))   # one box per channel, broadcast over pixels
    H, W = size_hw
    # The shape carrier for initial_image: the content, or (texture) an array of the output's shape.
    carrier = content if content is not None else xp.zeros((3, H, W), dtype=net.dtype)
    file_array = to_net(init_img) if init_img is not None else None
    if x0 is not None:
        x0 = x0(lambda img: _image.preprocess(img, None, convention)) if callable(x0) else x0
        x0 = to_device(np.clip(x0, bounds[0], bounds[1]).astype(net.dtype), net.backend)
    else:
        x0 = initial_image(options["init_kind"], carrier, styles[0] if styles else (guided[0][1] if guided else None),
                           seed=options["seed"], bounds=bounds, file_array=file_array)
    setup_seconds = time.perf_counter() - t_setup

    frame_fn, frames = _frame_writer(save_every, frame_dir, on_frame, convention, colour_source)
    bar = None
    if progress:
        bar = progress if callable(progress) and not isinstance(progress, bool) else \
            make_progress(options["iters"], enabled=True)

    def per_iteration(info):
        if bar is not None:
            bar(info)
        if frame_fn is not None:
            frame_fn(info)
        if callback is not None:
            return callback(info)
        return None

    try:
        # Overflow to Inf/NaN is detected and reported by the optimizer (stopped="nonfinite"), so
        # NumPy's own RuntimeWarnings would only add noise to that one clear message.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            res = minimize(loss, x0, method=options["optimizer"], iters=options["iters"], bounds=bounds,
                           lr=options["lr"], seed=options["seed"], callback=per_iteration,
                           parts=lambda _x: parts_to_host(loss.last_parts))
    finally:
        if bar is not None and hasattr(bar, "close"):
            bar.close()

    stopped, message = res.stopped, res.message
    try:
        final = parts_to_host(loss.parts(res.x)) if math.isfinite(res.value) else None
    except KeyboardInterrupt:
        # Ctrl-C during the last forward pass: the run is over anyway; report the last known parts.
        final, stopped = None, "interrupted"
        message = message or "interrupted while measuring the final loss"
    if final is None:
        final = {k: v for k, v in (res.history[-1] if res.history else {}).items()
                 if k in ("total", "content", "style", "style_per_layer", "tv")}
        final.setdefault("total", res.value)
    array = to_host(res.x).astype(np.float32)
    picture = _image.deprocess(array, convention)
    if colour_source is not None:
        picture = _image.restore_chrominance(picture, colour_source)
    evaluations = max(res.evaluations, 1)
    timings = {
        "seconds": res.seconds,
        "setup_seconds": setup_seconds,
        "seconds_per_evaluation": res.seconds / evaluations,
        "seconds_per_iteration": res.seconds / max(res.iterations, 1),
    }
    public = {k: v for k, v in options.items() if k not in ("device_backend", "init_kind")}
    return Result(image=picture, array=array, history=res.history, timings=timings,
                  iterations=res.iterations, evaluations=res.evaluations, loss=final, stopped=stopped,
                  message=message, options=public, frames=frames)


def _load_init(opts, size_wh, what="init"):
    """The --init FILE image, resized to exactly the output's (width, height); None for the named kinds."""
    if opts["init_kind"] != "file":
        return None
    img = _load_resized(opts["init"], None, f"the {what} image {opts['init']!r}")
    if img.size != tuple(size_wh):
        img = img.resize(tuple(size_wh), Image.Resampling.LANCZOS)
    return img


def stylize(content, style=None, *, size=DEFAULT_SIZE, style_size=None, iters=DEFAULT_ITERS, init=DEFAULT_INIT,
            seed=DEFAULT_SEED, content_weight=DEFAULT_CONTENT_WEIGHT, style_weight=DEFAULT_STYLE_WEIGHT,
            tv_weight=DEFAULT_TV_WEIGHT, tv_exponent=DEFAULT_TV_EXPONENT,
            content_layers=DEFAULT_CONTENT_LAYERS, style_layers=DEFAULT_STYLE_LAYERS,
            style_layer_weights=None, style_blend_weights=None, pooling=DEFAULT_POOLING,
            optimizer=DEFAULT_OPTIMIZER, lr=None, device=DEFAULT_DEVICE, weights=None, preserve_color=False,
            color_control=None, color_match=None, regions=None, style_scale=None, start_size=None,
            level_factor=DEFAULT_LEVEL_FACTOR, level_iters=None, normalization=DEFAULT_NORMALIZATION,
            callback=None, progress=False, save_every=None, frame_dir=None, on_frame=None, net=None,
            memory_check=True, log=None):
    """Paint `content` in the style of `style`: the paper's main experiment. Returns a Result.

    content:  image path, PIL image or uint8/float array (H, W, 3)
    style:    the same, or a list of them (their Gram matrices are blended with style_blend_weights,
              equal by default)
    size:     longer side of the content (and the output) in pixels, None to keep it as it is
    style_size: longer side of the style image(s); default: the same as `size`
    iters:    optimizer iterations (L-BFGS-B: each needs one or a few evaluations); in a
              coarse-to-fine run, those of the smallest level (see level_iters)
    init:     "content", "noise" (white noise, as in the paper), "content+noise", "style", or an image path
    seed:     seed of the noise inits; the same seed gives the same result bit for bit on one backend
    content_weight, style_weight: alpha and beta of the paper; tv_weight, tv_exponent: optional smoothness
    content_layers, style_layers, style_layer_weights: the paper's conv4_2 and conv1_1..conv5_1 at 1/5 each
    pooling:  "avg" (the paper) or "max"; optimizer: "lbfgs" (default), "adam", "sgd" or "sign"; lr for those
    device:   "cpu" (NumPy) or "gpu" (CuPy); weights: a VGG19 weights file (default: found, or fetched)
    color_control, color_match, regions, style_scale: Gatys et al.'s (2017) colour, spatial and scale
              controls (see controls.py): "luminance" (= preserve_color) or "histogram" with "chol",
              "pca" or "sym"; [(content_mask, style[, style_mask]), ...] instead of `style`; a factor
    start_size, level_factor, level_iters, normalization: coarse-to-fine from start_size up to size,
              and the weight convention, "paper" or "size-invariant" (see levels.py)
    callback: callback(info) after every iteration (see handnst.optimize.minimize); True stops the run
    progress: True for a progress bar on stderr (or any callable taking the same info; one bar per level)
    save_every, frame_dir, on_frame: every save_every iterations, the current picture is written to
              frame_dir/frame_0010.png (atomically) and/or passed to on_frame(iteration, image) (in
              a coarse-to-fine run, at the last level)
    net:      an already built VGG19 to reuse (its pooling and backend then win)
    memory_check: refuse runs whose memory estimate exceeds the available memory (RunError)
    log:      log(line) is called once all checks have passed and the network is built

    Every option is checked before the network is loaded. Ctrl-C and NaN/Inf do not raise: the
    Result then holds the best image so far and `stopped` says "interrupted" or "nonfinite".
    """
    if content is None:
        raise InputError("stylize needs a content image; for texture synthesis use texture()")
    regions = check_regions(regions)
    styles_in = [] if style is None else list(style) if isinstance(style, (list, tuple)) else [style]
    if regions and styles_in:
        raise InputError("give the style either as style image(s) or as regions (--region), not both")
    if not regions and (not styles_in or any(s is None for s in styles_in)):
        raise InputError("stylize needs at least one style image (or regions)")
    if regions and style_blend_weights is not None:
        raise InputError("style blend weights apply to several style images, not to regions")
    size = _positive_int("--size", size, allow_none=True)
    style_size = _positive_int("--style-size", style_size, allow_none=True)
    style_scale = check_style_scale(style_scale, style_size)
    control, method = check_color_options(preserve_color, color_control, color_match)
    plan = plan_run(size, start_size, level_factor, iters, level_iters, normalization)
    content_layers = _layers("content", content_layers, allow_empty=True)
    style_layers = _layers("style", style_layers, allow_empty=True)
    if not content_layers and not style_layers:
        raise InputError("give content layers, style layers, or both")
    style_layer_weights = _weights_list("style layer weight", style_layer_weights, len(style_layers), "style layers")
    style_blend_weights = _weights_list("style blend weight", style_blend_weights, len(styles_in), "style images")
    if save_every is not None:
        save_every = _positive_int("--save-every", save_every)
    opts = _common_options(iters=iters, init=init, seed=seed, content_weight=content_weight,
                           style_weight=style_weight, tv_weight=tv_weight, tv_exponent=tv_exponent,
                           pooling=pooling if net is None else net.pooling, optimizer=optimizer, lr=lr,
                           device=device if net is None else net.backend, weights=weights)

    # Images, on the host: decoded and checked before the network exists.
    all_layers = content_layers + style_layers
    sources = [r[1] for r in regions] if regions else styles_in
    content_img = _load_resized(content, size, "content image",
                                _memory_guard(memory_check, all_layers, opts, "this stylization", len(sources)))
    side = max(content_img.size)
    hint = (lambda fits: f"use --style-scale {fits / side:.2f} or smaller") if style_scale else \
        "--style-size" if style_size else "--size"
    guard = _memory_guard(memory_check, all_layers, opts, "this stylization", len(sources), hint)
    style_imgs = [_load_resized(s, style_side(side, style_size, style_scale) if (size or style_scale) else style_size,
                                "style image", guard) for s in sources]
    init_img = _load_init(opts, content_img.size)
    masks = style_masks = None
    if regions:
        masks = load_region_masks(regions, content_img.size)
        style_masks = [load_style_mask(r[2], s.size, i) for i, (r, s) in enumerate(zip(regions, style_imgs), 1)]
    content_img, style_imgs, colour_source = apply_color_control(content_img, style_imgs, control, method)
    if control == "luminance" and init_img is not None:
        init_img = _image.luminance_image(init_img)
    W, H = content_img.size
    if memory_check:
        largest = max([(H, W)] + [(s.size[1], s.size[0]) for s in style_imgs], key=lambda hw: hw[0] * hw[1])
        check_memory(largest, content_layers + style_layers, opts["device_backend"],
                     optimizer=opts["optimizer"], n_styles=len(style_imgs), what="this stylization")
    sides = [p[0] for p in plan] if plan else [side]
    per_level = level_images(content_img, style_imgs, sides, masks, style_masks)
    for c, st, _ in per_level:
        check_min_size(c.size, all_layers, "content", "--start-size" if plan else "--size")
        for s in st:
            check_min_size(s.size, style_layers, "style", "a larger --start-size: the style needs a longer side of"
                           if plan else "--style-size")

    opts.update({
        "content": _describe_input(content), "styles": [_describe_input(s) for s in sources],
        "size": size, "style_size": style_size, "style_scale": style_scale, "content_layers": list(content_layers),
        "style_layers": list(style_layers), "style_layer_weights": style_layer_weights,
        "style_blend_weights": style_blend_weights, "preserve_color": control == "luminance",
        "color_control": control, "color_match": method, "normalization": normalization,
        "regions": [[_describe_input(x) for x in r if x is not None] for r in regions] if regions else None,
        "save_every": save_every, **plan_options(plan, start_size, level_factor),
    })

    def run_level(index, _side, level_iters_k, previous):
        c, st, reg = per_level[index]
        last = index == len(per_level) - 1
        Hk, Wk = c.size[1], c.size[0]
        alpha = content_weight_at(opts["content_weight"], (Hk, Wk), normalization, (H, W) if plan else None)
        return _run(content_img=c, style_imgs=st, regions=reg, content_layers=content_layers,
                    style_layers=style_layers, size_hw=(Hk, Wk), net=net_for_levels(),
                    options=dict(opts, iters=level_iters_k or opts["iters"], level_content_weight=alpha),
                    alpha=alpha, x0=None if previous is None else lambda vgg: upsample_detail(
                        previous.array, vgg(per_level[index - 1][0]), vgg(c)),
                    callback=with_level(callback, index + 1 if plan else None),
                    progress=level_progress(progress, plan), save_every=save_every if last else None,
                    frame_dir=frame_dir, on_frame=on_frame, colour_source=colour_source,
                    init_img=init_img if index == 0 else None, log=log,
                    what=f"stylization level {index + 1} of {len(per_level)}" if plan else "stylization")

    net_for_levels = shared_net(net, opts, bool(plan))
    return run_plan(plan, run_level, opts)


def reconstruct(image, layer="conv4_2", *, size=DEFAULT_SIZE, iters=DEFAULT_ITERS, init="noise", seed=DEFAULT_SEED,
                tv_weight=DEFAULT_TV_WEIGHT, tv_exponent=DEFAULT_TV_EXPONENT, pooling=DEFAULT_POOLING,
                optimizer=DEFAULT_OPTIMIZER, lr=None, device=DEFAULT_DEVICE, weights=None, callback=None,
                progress=False, save_every=None, frame_dir=None, on_frame=None, net=None, memory_check=True,
                log=None):
    """Content reconstruction (the paper's Figure 1, bottom row): the image whose `layer` responses
    match those of `image`, found from white noise. Lower layers give back the pixels almost exactly;
    higher layers keep the objects and their arrangement but lose the exact pixel values.

    `layer` may also be a list (their content losses add up). Other options as in stylize.
    """
    size = _positive_int("--size", size, allow_none=True)
    layers = _layers("content", layer)
    if save_every is not None:
        save_every = _positive_int("--save-every", save_every)
    if init in ("style",):
        raise InputError("reconstruct has no style image: use --init noise (the paper), content, or an image path")
    opts = _common_options(iters=iters, init=init, seed=seed, content_weight=1.0, style_weight=0.0,
                           tv_weight=tv_weight, tv_exponent=tv_exponent,
                           pooling=pooling if net is None else net.pooling, optimizer=optimizer, lr=lr,
                           device=device if net is None else net.backend, weights=weights)
    img = _load_resized(image, size, "image", _memory_guard(memory_check, layers, opts, "this reconstruction", 0))
    check_min_size(img.size, layers, "input")
    init_img = _load_init(opts, img.size)
    W, H = img.size
    if memory_check:
        check_memory((H, W), layers, opts["device_backend"], optimizer=opts["optimizer"], n_styles=0,
                     what="this reconstruction")
    opts.update({"image": _describe_input(image), "size": size, "content_layers": list(layers),
                 "style_layers": [], "save_every": save_every})
    return _run(content_img=img, style_imgs=[], content_layers=layers, style_layers=(), size_hw=(H, W),
                options=opts, net=net, callback=callback, progress=progress, save_every=save_every,
                frame_dir=frame_dir, on_frame=on_frame, init_img=init_img, what="reconstruction",
                log=log)


def texture(style, layers=DEFAULT_STYLE_LAYERS, *, size=DEFAULT_SIZE, iters=DEFAULT_ITERS, init="noise",
            seed=DEFAULT_SEED, style_layer_weights=None, tv_weight=DEFAULT_TV_WEIGHT,
            tv_exponent=DEFAULT_TV_EXPONENT, pooling=DEFAULT_POOLING, optimizer=DEFAULT_OPTIMIZER, lr=None,
            device=DEFAULT_DEVICE, weights=None, callback=None, progress=False, save_every=None, frame_dir=None,
            on_frame=None, net=None, memory_check=True, log=None, start_size=None, level_factor=DEFAULT_LEVEL_FACTOR,
            level_iters=None):
    """Style reconstruction / texture synthesis (the paper's Figure 1, top row): an image, from white
    noise, whose Gram matrices at `layers` match those of `style`. With conv1_1 alone only colours
    and fine grain survive; adding deeper layers brings larger and larger structures of the style.

    The output has the style image's shape at `size`. Other options (start_size for coarse-to-fine
    among them) as in stylize.
    """
    if style is None:
        raise InputError("texture needs a style image")
    size = _positive_int("--size", size, allow_none=True)
    layers = _layers("style", layers)
    style_layer_weights = _weights_list("style layer weight", style_layer_weights, len(layers), "style layers")
    if save_every is not None:
        save_every = _positive_int("--save-every", save_every)
    if init in ("content", "content+noise"):
        raise InputError("texture has no content image: use --init noise (the paper), style, or an image path")
    opts = _common_options(iters=iters, init=init, seed=seed, content_weight=0.0, style_weight=1.0,
                           tv_weight=tv_weight, tv_exponent=tv_exponent,
                           pooling=pooling if net is None else net.pooling, optimizer=optimizer, lr=lr,
                           device=device if net is None else net.backend, weights=weights)
    plan = plan_run(size, start_size, level_factor, iters, level_iters, DEFAULT_NORMALIZATION)
    img = _load_resized(style, size, "style image", _memory_guard(memory_check, layers, opts, "this texture"))
    per_level = [_image.resize_longer(img, p[0]) for p in plan] if plan else [img]
    for im in per_level:
        check_min_size(im.size, layers, "style", "--start-size" if plan else "--size")
    init_img = _load_init(opts, per_level[0].size)
    W, H = img.size
    if memory_check:
        check_memory((H, W), layers, opts["device_backend"], optimizer=opts["optimizer"], what="this texture")
    opts.update({"style": _describe_input(style), "size": size, "content_layers": [],
                 "style_layers": list(layers), "style_layer_weights": style_layer_weights,
                 "save_every": save_every, **plan_options(plan, start_size, level_factor)})

    def run_level(index, _side, level_iters_k, previous):
        im, last = per_level[index], index == len(per_level) - 1
        return _run(content_img=None, style_imgs=[im], content_layers=(), style_layers=layers,
                    size_hw=(im.size[1], im.size[0]), options=dict(opts, iters=level_iters_k or opts["iters"]),
                    net=net_for_levels(), callback=with_level(callback, index + 1 if plan else None),
                    progress=level_progress(progress, plan), save_every=save_every if last else None,
                    frame_dir=frame_dir, on_frame=on_frame, init_img=init_img if index == 0 else None, log=log,
                    x0=None if previous is None else upsample(previous.array, im.size[1], im.size[0]),
                    what=f"texture level {index + 1} of {len(per_level)}" if plan else "texture")

    net_for_levels = shared_net(net, opts, bool(plan))
    return run_plan(plan, run_level, opts)


def grid(content, style, *, ratios=GRID_RATIOS, layer_sets=GRID_LAYER_SETS, size=128, iters=100, init="noise",
         seed=DEFAULT_SEED, content_layers=DEFAULT_CONTENT_LAYERS, tv_weight=DEFAULT_TV_WEIGHT,
         pooling=DEFAULT_POOLING, optimizer=DEFAULT_OPTIMIZER, lr=None, device=DEFAULT_DEVICE, weights=None,
         title=None, on_cell=None, progress=False, results=None, log=None):
    """The paper's Figure 3 as one labelled PIL image.

    Rows: the style layer sets {conv1_1}, {conv1_1, conv2_1}, ..., {conv1_1 ... conv5_1} (each layer
    weighted equally within its set). Columns: alpha/beta ratios (content_weight = 1, style_weight =
    1 / ratio). Every cell starts from the same image (white noise with `seed`, as in the paper), so
    the cells differ only by the objective. The network is built once for the whole grid.

    on_cell(row, column, result) is called after each cell; `results`, if a list, receives every
    Result; log(line) is called once the checks have passed. With the defaults (20 cells of 128 pixels, 100 iterations) it takes a while on a CPU.
    """
    try:
        ratios = [float(r) for r in ratios]
    except (TypeError, ValueError):
        raise InputError(f"the ratios must be numbers, not {ratios!r}") from None
    if not ratios or any(not (math.isfinite(r) and r > 0) for r in ratios):
        raise InputError(f"every alpha/beta ratio must be a positive finite number, not {ratios!r}")
    layer_sets = [_layers("style", s) for s in layer_sets]
    if not layer_sets:
        raise InputError("give at least one set of style layers")
    size = _positive_int("--size", size, allow_none=True)
    content_layers = _layers("content", content_layers)
    opts = _common_options(iters=iters, init=init, seed=seed, content_weight=1.0, style_weight=1.0,
                           tv_weight=tv_weight, tv_exponent=DEFAULT_TV_EXPONENT, pooling=pooling,
                           optimizer=optimizer, lr=lr, device=device, weights=weights)
    # Check the images and the memory once, for the deepest layers used, before building the network.
    all_layers = tuple(dict.fromkeys(content_layers + tuple(n for s in layer_sets for n in s)))
    content_img = _load_resized(content, size, "content image", _memory_guard(True, all_layers, opts, "this grid"))
    style_img = _load_resized(style, size, "style image", _memory_guard(True, all_layers, opts, "this grid"))
    check_min_size(content_img.size, all_layers, "content")
    check_min_size(style_img.size, tuple(n for s in layer_sets for n in s), "style")
    W, H = content_img.size
    largest = max([(H, W), (style_img.size[1], style_img.size[0])], key=lambda hw: hw[0] * hw[1])
    check_memory(largest, all_layers, opts["device_backend"], optimizer=opts["optimizer"], what="this grid")

    total = len(layer_sets) * len(ratios)
    from handnst.networks.vgg import load_vgg19
    net = load_vgg19(opts["weights"], pooling=opts["pooling"], backend=opts["device_backend"])
    if log is not None:
        log(f"grid of {total} stylizations at {W}x{H} pixels, {opts['iters']} {opts['optimizer']} iterations "
            f"each, on the {opts['device']}")
    cells = []
    for r, layers in enumerate(layer_sets):
        row = []
        for c, ratio in enumerate(ratios):
            res = stylize(content_img, style_img, size=None, iters=opts["iters"], init=opts["init"], seed=opts["seed"],
                          content_weight=1.0, style_weight=1.0 / ratio, tv_weight=opts["tv_weight"],
                          content_layers=content_layers, style_layers=layers, optimizer=opts["optimizer"],
                          lr=opts["lr"], net=net, memory_check=False,
                          progress=progress)
            res.options.update({"row": r, "column": c, "ratio": ratio})
            row.append(res.image)
            if results is not None:
                results.append(res)
            if on_cell is not None:
                on_cell(r, c, res)
            if res.stopped in ("interrupted",):
                raise KeyboardInterrupt
        cells.append(row)
    return grid_picture(cells, layer_sets, ratios, opts["iters"], title)


def grid_picture(cells, layer_sets, ratios, iters, title=None):
    """Figure 3's labelled picture from its cells (rows of PIL images: one row per style-layer set,
    one column per alpha/beta ratio); shared by grid() and grids run as a batch (handnst.batch)."""
    row_labels = [_set_label(s) for s in layer_sets]
    col_labels = [f"alpha/beta\n= {r:g}" for r in ratios]
    if title is None:
        title = (f"style layers (rows) x content/style ratio (columns), {len(layer_sets) * len(ratios)} runs of "
                 f"{iters} iterations")
    return _image.make_grid(cells, row_labels, col_labels, title=title)


def _set_label(layers):
    if len(layers) == 1:
        return layers[0]
    return f"{layers[0]}\n..{layers[-1]}"


__all__ = ["Result", "stylize", "reconstruct", "texture", "grid", "grid_picture", "estimate_memory", "memory_breakdown",
           "available_memory", "check_memory", "check_min_size", "GRID_LAYER_SETS", "GRID_RATIOS"]
