"""The paper's losses, each with its analytic gradient, and the total objective.

Notation of Gatys, Ecker & Bethge: a layer l has N_l filters, each a feature map of M_l = h*w
positions, stored as the feature matrix F^l of shape (N_l, M_l). P^l are the content image's features,
A^l the style image's Gram matrix. Every function takes and returns arrays of the network's backend.

    content:  L_content = 1/2 sum_ij (F_ij - P_ij)^2
              dL/dF     = (F - P)                                  where F > 0, else 0
    Gram:     G_ij      = sum_k F_ik F_jk               (G = F F^T, N_l x N_l)
    style:    E_l       = 1/(4 N_l^2 M_l^2) sum_ij (G_ij - A_ij)^2
              dE_l/dF   = 1/(N_l^2 M_l^2) ((F^T (G - A))^T)        where F > 0, else 0
              L_style   = sum_l w_l E_l
    TV:       L_tv      = sum_ij ((x[i+1,j] - x[i,j])^2 + (x[i,j+1] - x[i,j])^2)^(p/2), per channel

The "where F > 0" in the paper's gradients is the ReLU: F is a rectified response, so changing the
pre-activation moves F only where F > 0. The functions here apply that mask when `relu_mask=True`
(the paper's formula, checked on its own in the tests); `StyleTransferLoss` leaves it to the network,
whose backward pass applies the very same ReLU mask, so it is not computed twice.
"""

import numpy as np

from handnst.backend import array_module, gemm, matmul
from handnst.errors import InputError
from handnst.networks.vgg import canonical_layer, min_image_size

DEFAULT_CONTENT_LAYERS = ("conv4_2",)
DEFAULT_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


def _sum_sq(a):
    """sum(a^2) as a Python float, accumulated in float64 even for float32 arrays."""
    xp = array_module(a)
    return float(xp.sum(xp.square(a), dtype=xp.float64))


# --------------------------------------------------------------------------------------- content

def content_loss(F, P):
    """L_content = 1/2 sum (F - P)^2 for feature matrices F, P of the same shape. Returns (value, cache)."""
    diff = F - P
    return 0.5 * _sum_sq(diff), (F, diff)


def content_loss_backward(cache, relu_mask=True, upstream=1.0):
    """dL_content/dF = F - P, masked to F > 0 (the paper's form) unless relu_mask=False.

    `upstream` is the scalar dL/dL_content of a larger objective (alpha in the total loss); the
    chain rule multiplies it in.
    """
    F, diff = cache
    grad = diff if upstream == 1.0 else upstream * diff
    return grad * (F > 0) if relu_mask else grad


# ----------------------------------------------------------------------------------------- style

def gram_matrix(F):
    """G = F F^T: G_ij = sum_k F_ik F_jk, the inner products between the N_l feature maps (N_l x N_l).

    (`matmul(F, F.T)` is `F @ F.T` through the one BLAS the whole hot path uses; see backend.matmul.)
    """
    return matmul(F, F.T)


def style_layer_loss(F, A, M=None):
    """E_l = 1/(4 N^2 M^2) sum (G - A)^2 with G = F F^T. Returns (value, cache).

    F: (N, M') feature matrix; A: (N, N) target Gram matrix. M is the number of positions M_l; it
    defaults to F.shape[1] -- pass it when F carries extra all-zero columns (the network's padded
    layout), which change neither G nor the gradient but would change M.
    """
    N = F.shape[0]
    M = F.shape[1] if M is None else M
    G = gram_matrix(F)
    diff = G - A
    scale = 1.0 / (4.0 * N * N * float(M) * float(M))
    return scale * _sum_sq(diff), (F, diff, scale)


def style_layer_gradient_writer(cache, upstream=1.0):
    """style_layer_loss_backward without the mask, as a function write(out, accumulate) for VGG19.backward.

    It stores (or adds, when accumulate) the gradient, transposed, into `out` (M', N): the padded
    channels-last matrix the network keeps for the layer's gradient. out = F^T D is one GEMM, and
    with accumulate BLAS adds it to what `out` holds (beta = 1): no array of the gradient's size is
    made. (For the lessons, style_layer_loss_backward returns the same gradient as an array.)
    """
    F, diff, scale = cache
    D = (4.0 * scale * upstream) * diff
    Ft = F.T

    def write(out, accumulate=False):
        if not accumulate:
            matmul(Ft, D, out=out)
        elif Ft.flags.c_contiguous and out.flags.c_contiguous:
            gemm(Ft, D, out, accumulate=True)
        else:
            out += matmul(Ft, D)             # a layout gemm cannot add into in place: one temporary
    return write


def _both(first, second):
    """Two gradients for one layer (content and style there): a writer that stores the first, adds the second."""
    def write(out, accumulate=False):
        for part in (first, second):
            if callable(part):
                part(out, accumulate=accumulate)
            elif accumulate:
                out += part.T
            else:
                out[...] = part.T
            accumulate = True
    return write


def style_layer_loss_backward(cache, relu_mask=True, upstream=1.0, out=None):
    """dE_l/dF = 1/(N^2 M^2) ((F^T (G - A))^T), masked to F > 0 unless relu_mask=False.

    Derivation: E = s sum_ij D_ij^2 with D = F F^T - A and s = 1/(4 N^2 M^2). Then
    dE/dF_ak = s sum_ij 2 D_ij (d(F F^T)_ij / dF_ak) = 2 s (D F + D^T F)_ak = 4 s (D F)_ak since D is
    symmetric, and 4 s D F = 1/(N^2 M^2) D F = 1/(N^2 M^2) ((F^T D)^T). It is computed as F^T D, then
    transposed: for the network's matrices F^T is the contiguous one, so this order needs no copy.

    `upstream` is the scalar dL/dE_l of a larger objective (beta w_l in the total loss). Every scalar
    is multiplied into the small N x N matrix D first, so the big N x M gradient is written once.
    `out`, optional: an (M, N) C-ordered array to write F^T D into. (StyleTransferLoss does not
    store this gradient at all: see style_layer_gradient_writer.)
    """
    F, diff, scale = cache
    grad = matmul(F.T, (4.0 * scale * upstream) * diff, out=out).T
    return grad * (F > 0) if relu_mask else grad


# ------------------------------------------------------------------------------ total variation

def tv_loss(x, exponent=2.0):
    """L_tv = sum over channels and pixels of (dv^2 + dh^2)^(p/2), with p = `exponent`.

    dv[i, j] = x[i+1, j] - x[i, j] and dh[i, j] = x[i, j+1] - x[i, j], taken as 0 where the neighbour
    is outside the image (last row for dv, last column for dh). With p = 2 this is exactly the sum of
    all squared neighbour differences; p = 2.5 gives the exponent 1.25 some implementations use.
    x: (C, H, W). Returns (value, cache).
    """
    xp = array_module(x)
    dv = xp.zeros_like(x)
    dh = xp.zeros_like(x)
    dv[:, :-1, :] = x[:, 1:, :] - x[:, :-1, :]
    dh[:, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    s = dv * dv + dh * dh
    q = exponent / 2.0
    value = float(xp.sum(s if q == 1.0 else s ** q, dtype=xp.float64))
    return value, (dv, dh, s, q)


def tv_loss_backward(cache):
    """dL_tv/dx, right at the border too.

    With w = q s^(q-1) (the derivative of s^q, taken as 0 where s = 0 and q < 1 would blow up),
    dL/d(dv[i,j]) = 2 w dv and dL/d(dh[i,j]) = 2 w dh. Since dv[i, j] = x[i+1, j] - x[i, j], that
    gradient is added to x[i+1, j] and subtracted from x[i, j]; likewise for dh along columns. Border
    pixels simply have fewer differences touching them.
    """
    dv, dh, s, q = cache
    xp = array_module(dv)
    if q == 1.0:
        av, ah = 2.0 * dv, 2.0 * dh
    else:
        positive = s > 0
        w = q * xp.where(positive, s, 1.0) ** (q - 1.0) * positive
        av, ah = 2.0 * w * dv, 2.0 * w * dh
    dx = -av - ah
    dx[:, 1:, :] += av[:, :-1, :]
    dx[:, :, 1:] += ah[:, :, :-1]
    return dx


# ------------------------------------------------------------------------------ total objective

def _check_weight(name, value, allow_zero=True):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise InputError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return v


def _check_image(net, name, img):
    if array_module(img) is not net.xp:
        raise InputError(f"the {name} image must be on the network's backend ({net.backend}); "
                         "move it with handnst.backend.to_device")
    if img.ndim != 3 or img.shape[0] != 3:
        raise InputError(f"the {name} image must have shape (3, H, W), got {tuple(img.shape)}")
    return img.astype(net.dtype, copy=False)


class StyleTransferLoss:
    """L(x) = alpha L_content(x) + beta L_style(x) + tv_weight L_tv(x), and its gradient dL/dx.

        loss = StyleTransferLoss(net, content, style)
        value, grad = loss(x)          # one forward and one backward pass through the network
        loss.parts(x)                  # {"total", "content", "style", "style_per_layer", "tv"}

    content, style and x are (3, H, W) arrays in the network's input space, on its backend; the style
    may have another size (its Gram matrices A are taken as they are, as in the paper). `style` may
    also be a list of images, whose Gram matrices are blended with `style_blend_weights` (normalised
    to sum to 1; equal by default). content=None with no content layers gives texture synthesis;
    style=None with no style layers gives content reconstruction. The targets P^l and A^l are
    computed once, here.
    """

    def __init__(self, net, content, style, *, content_layers=DEFAULT_CONTENT_LAYERS,
                 style_layers=DEFAULT_STYLE_LAYERS, style_layer_weights=None, alpha=1.0, beta=1e3,
                 tv_weight=0.0, tv_exponent=2.0, style_blend_weights=None):
        self.net = net
        self.content_layers = tuple(dict.fromkeys(canonical_layer(n) for n in content_layers))
        self.style_layers = tuple(dict.fromkeys(canonical_layer(n) for n in style_layers))
        self.alpha = _check_weight("the content weight (alpha)", alpha)
        self.beta = _check_weight("the style weight (beta)", beta)
        self.tv_weight = _check_weight("the total-variation weight", tv_weight)
        self.tv_exponent = _check_weight("the total-variation exponent", tv_exponent, allow_zero=False)
        if self.tv_exponent < 1:
            raise InputError("the total-variation exponent must be at least 1 (2 is the usual choice)")
        if style_layer_weights is None:
            style_layer_weights = [1.0 / len(self.style_layers)] * len(self.style_layers) if self.style_layers else []
        style_layer_weights = [_check_weight("a style layer weight", w) for w in style_layer_weights]
        if len(style_layer_weights) != len(self.style_layers):
            raise InputError(f"{len(style_layer_weights)} style layer weights given for "
                             f"{len(self.style_layers)} style layers: give one per layer")
        self.style_layer_weights = dict(zip(self.style_layers, style_layer_weights))
        if not self.content_layers and not self.style_layers and self.tv_weight == 0:
            raise InputError("the objective is empty: give content layers, style layers or a TV weight")

        self.content_shape = None
        self.content_targets = {}
        if self.content_layers:
            if content is None:
                raise InputError("content layers were given but no content image")
            content = _check_image(net, "content", content)
            self.content_shape = tuple(content.shape)
            feats = net.forward(content, self.content_layers, layout="matrix")
            # copies (the network's buffers are reused by the next forward pass) in the features'
            # own memory order, so F - P runs over two arrays laid out alike: 2.4x faster at conv4_2
            self.content_targets = {n: feats[n].copy(order="K") for n in self.content_layers}

        self.gram_targets = {}
        if self.style_layers:
            if style is None:
                raise InputError("style layers were given but no style image")
            styles = list(style) if isinstance(style, (list, tuple)) else [style]
            if style_blend_weights is None:
                style_blend_weights = [1.0] * len(styles)
            blend = [_check_weight("a style blend weight", w) for w in style_blend_weights]
            if len(blend) != len(styles) or sum(blend) <= 0:
                raise InputError(f"give one positive blend weight per style image ({len(styles)} images, "
                                 f"{len(blend)} weights)")
            blend = [w / sum(blend) for w in blend]
            for w_s, img in zip(blend, styles):
                img = _check_image(net, "style", img)
                self._check_size(img, self.style_layers, "style")
                feats = net.forward(img, self.style_layers, layout="matrix")
                for n in self.style_layers:
                    G = w_s * gram_matrix(feats[n])
                    self.gram_targets[n] = G if n not in self.gram_targets else self.gram_targets[n] + G
        self.layers = tuple(dict.fromkeys(self.content_layers + self.style_layers))
        self.last_parts = None

    @staticmethod
    def _check_size(img, layers, what):
        need = min_image_size(layers) if layers else 1
        _, H, W = img.shape
        if min(H, W) < need:
            raise InputError(f"the {what} image is {W}x{H} pixels but the chosen layers need at least "
                             f"{need}x{need}; use a larger size or shallower layers")

    def _evaluate(self, x, with_grad):
        net = self.net
        x = _check_image(net, "input", x)
        if self.content_shape is not None and tuple(x.shape) != self.content_shape:
            raise InputError(f"x has shape {tuple(x.shape)} but the content image has {self.content_shape}")
        parts = {"content": 0.0, "style": 0.0, "style_per_layer": {}, "tv": 0.0}
        grads = {}
        if self.layers:
            self._check_size(x, self.layers, "input")
            feats = net.forward(x, self.layers, layout="matrix")
            sizes = {n: net.map_shape(n)[0] * net.map_shape(n)[1] for n in self.layers}
            for n in self.content_layers:
                value, cache = content_loss(feats[n], self.content_targets[n])
                parts["content"] += value
                if with_grad and self.alpha:
                    grads[n] = content_loss_backward(cache, relu_mask=False, upstream=self.alpha)
            for n in self.style_layers:
                value, cache = style_layer_loss(feats[n], self.gram_targets[n], M=sizes[n])
                parts["style_per_layer"][n] = value
                parts["style"] += self.style_layer_weights[n] * value
                weight = self.beta * self.style_layer_weights[n]
                if with_grad and weight:
                    write = style_layer_gradient_writer(cache, upstream=weight)
                    grads[n] = _both(grads[n], write) if n in grads else write
        grad = None
        if with_grad:
            # The network applies each layer's ReLU mask itself on the way down.
            grad = net.backward(grads, layout="matrix") if grads else net.xp.zeros_like(x)
        if self.tv_weight:
            value, cache = tv_loss(x, self.tv_exponent)
            parts["tv"] = value
            if with_grad:
                grad += self.tv_weight * tv_loss_backward(cache)
        parts["total"] = self.alpha * parts["content"] + self.beta * parts["style"] + self.tv_weight * parts["tv"]
        self.last_parts = parts
        return parts, grad

    def __call__(self, x):
        """(L(x), dL/dx): the value as a Python float, the gradient as an array like x."""
        parts, grad = self._evaluate(x, with_grad=True)
        return parts["total"], grad

    def value(self, x):
        """L(x) alone: a forward pass, no backward."""
        return self._evaluate(x, with_grad=False)[0]["total"]

    def parts(self, x):
        """The pieces of L(x): content (L_content), style (L_style = sum_l w_l E_l), style_per_layer
        (each E_l, before its weight w_l), tv (L_tv) and total (alpha, beta and tv_weight applied)."""
        return self._evaluate(x, with_grad=False)[0]


def parts_to_host(parts):
    """A JSON-friendly copy of a parts dict (plain floats)."""
    out = {k: float(v) for k, v in parts.items() if k != "style_per_layer"}
    out["style_per_layer"] = {k: float(v) for k, v in parts.get("style_per_layer", {}).items()}
    return out


__all__ = ["content_loss", "content_loss_backward", "gram_matrix", "style_layer_loss",
           "style_layer_loss_backward", "tv_loss", "tv_loss_backward", "StyleTransferLoss",
           "DEFAULT_CONTENT_LAYERS", "DEFAULT_STYLE_LAYERS"]
