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

from handnst.backend import array_module, gemm, matmul, to_host
from handnst.errors import InputError
from handnst.networks.vgg import canonical_layer, min_image_size, scale_of

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


# ------------------------------------------------------------------- guided (spatial) style

# Spatial control (Gatys, Ecker, Bethge, Hertzmann & Shechtman, CVPR 2017, section 4): region r of
# the picture takes its style from its own image. A guidance channel T_r (a mask, 1 inside the
# region, 0 outside, soft in between) is brought to every layer's size, t_r^l of M_l positions, and
# weights the feature maps there:
#
#     F_r      = F diag(t_r)                     the guided feature maps (N x M)
#     G_r      = F_r F_r^T = F diag(t_r^2) F^T    the guided Gram matrix (N x N)
#     M_r      = sum_k t_rk^2                     the region's size at this layer, in positions
#     E_l      = sum_r 1/(4 N^2 M M_r) sum_ij (G_r - A_r)_ij^2
#     dE_l/dF  = sum_r 1/(N^2 M M_r) (D_r F) diag(t_r^2)      D_r = G_r - A_r,  where F > 0
#
# The paper writes E_l = 1/(4 N^2) sum_r lambda_r sum_ij (G_r - A_r)^2 and leaves the region weights
# lambda_r open; lambda_r = 1/(M M_r) makes each region's term the paper's 2016 style loss of that
# region on its own (normalized by its own M_r^2), weighted by its share M_r / M of the picture. With
# one region covering the whole picture, E_l is exactly style_layer_loss.
#
# The target A_r is the guided Gram matrix of the region's style image (under its own mask t_S, or
# everywhere), rescaled from the style's region size to the content's: A_r = (M_r / M_rS) G(F_S
# diag(t_S)). A Gram matrix is a sum over positions, so a region covering a third of the photograph
# would otherwise be asked for the statistics summed over the whole painting; per position, the two
# then agree.
#
# The masks are brought to each layer's size the way the network brings the picture there: 2 x 2
# average pooling before every block, rows and columns past an even size dropped (mask_pyramid).
# Derivation of the gradient: G_r = F W F^T with W = diag(t^2) fixed, so as for the plain Gram
# matrix dE/dF = 2 s (D F W + D^T F W) = 4 s D F W, with s = 1/(4 N^2 M M_r) and D symmetric.

# A pixel counts as covered when the content masks give it at least this much weight in all: one
# step of an 8-bit mask. Below it, a pixel would have no style (its features would be free).
MASK_COVER = 1.0 / 255.0


def mask_pyramid(mask, layers):
    """{layer: t^l}: a (H, W) host mask brought to the size of every requested layer's map.

    Each 2 x 2 average pooling halves the mask exactly as VGG19's pooling halves the picture
    (h // 2, the odd last row or column dropped), so t^l has the layer's (h, w). Plain NumPy on the
    host: masks are small and are made once per run.
    """
    t = np.asarray(mask, dtype=np.float64)
    out, done = {}, 0
    for name in sorted((canonical_layer(n) for n in layers), key=scale_of):
        while 2 ** done < scale_of(name):        # the poolings between the picture and the layer
            h, w = t.shape[0] // 2, t.shape[1] // 2
            t = t[:2 * h, :2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3))
            done += 1
        out[name] = t
    return out


def check_region_masks(masks, what="content", cover=True, labels=None):
    """Clear errors for masks no run can use: not 2-D, empty, outside 0..1, or (cover) leaving pixels
    of the picture without any region. masks: list of (H, W) host arrays of one size; labels: how
    the messages name them (default "<what> mask <i>")."""
    shape = None
    for i, m in enumerate(masks, 1):
        m = np.asarray(m)
        name = labels[i - 1] if labels else f"{what} mask {i}"
        if m.ndim != 2:
            raise InputError(f"{name} must be a 2-D (H, W) array, got shape {m.shape}")
        if shape is not None and m.shape != shape:
            raise InputError(f"{name} is {m.shape[1]}x{m.shape[0]} but the first is {shape[1]}x{shape[0]}: "
                             "resize them to the picture first")
        shape = m.shape
        if not np.isfinite(m).all() or m.min() < 0 or m.max() > 1:
            raise InputError(f"{name} must hold weights between 0 and 1")
        if m.max() < MASK_COVER:
            raise InputError(f"{name} is empty (no pixel is in its region)")
    if cover and masks:
        total = np.sum([np.asarray(m, dtype=np.float64) for m in masks], axis=0)
        bare = total < MASK_COVER
        if bare.any():
            ys, xs = np.nonzero(bare)
            raise InputError(f"the {what} masks do not cover the picture: {bare.mean():.1%} of its pixels are in "
                             f"no region (e.g. x={xs[0]}, y={ys[0]}); every pixel needs a region")


def guided_gram_matrix(F, t):
    """G_r = F diag(t^2) F^T: the Gram matrix of the guided maps F_r = F diag(t). F (N, M), t (M,)."""
    return matmul(F * (t * t), F.T)


def guided_style_layer_loss(F, t, A, M=None):
    """One region's term of E_l: 1/(4 N^2 M M_r) sum (G_r - A)^2 with G_r = F diag(t^2) F^T.

    F: (N, M') feature matrix; t: (M',) guidance weights of the region at this layer (0 on the padded
    layout's extra columns); A: (N, N) target. M: the layer's positions (default F.shape[1]); M_r =
    sum t^2 is the region's. Returns (value, cache); a region with M_r = 0 (gone at this depth) adds 0.
    """
    xp = array_module(F)
    N = F.shape[0]
    M = F.shape[1] if M is None else M
    M_r = float(xp.sum(t * t, dtype=xp.float64))
    if M_r == 0:
        return 0.0, None
    diff = guided_gram_matrix(F, t) - A
    scale = 1.0 / (4.0 * N * N * float(M) * M_r)
    return scale * _sum_sq(diff), (F, t * t, diff, scale)


def guided_style_layer_loss_backward(cache, relu_mask=True, upstream=1.0):
    """d/dF of guided_style_layer_loss: 4 s (D F) diag(t^2), masked to F > 0 unless relu_mask=False.

    Computed as (F^T (4 s upstream D)) with its rows scaled by t^2, then transposed (as for
    style_layer_loss_backward, F^T is the network's contiguous matrix).
    """
    F, w, diff, scale = cache
    grad = (matmul(F.T, (4.0 * scale * upstream) * diff) * w[:, None]).T
    return grad * (F > 0) if relu_mask else grad


def guided_style_gradient_writer(caches, upstream=1.0):
    """The regions' gradients at one layer, summed, as write(out, accumulate) for VGG19.backward.

    out (M', N) receives sum_r diag(t_r^2) F^T (4 s_r upstream D_r): one GEMM per region into the
    buffer when storing, and a temporary per region when adding (the row scaling by t_r^2 rules out
    BLAS's accumulate). Regions gone at this layer (cache None) are skipped.
    """
    caches = [c for c in caches if c is not None]

    def write(out, accumulate=False):
        if not caches:
            if not accumulate:
                out[...] = 0
            return
        for F, w, diff, scale in caches:
            D = (4.0 * scale * upstream) * diff
            if accumulate:
                out += matmul(F.T, D) * w[:, None]
            else:
                matmul(F.T, D, out=out)
                out *= w[:, None]
                accumulate = True
    return write


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

    targets_per_position: take each style's Gram matrix per position, A^l M_x^l / M_a^l (M_x, M_a the
    positions of x's and the style's maps), instead of as it is. The paper's A^l is a sum over the
    style's positions, so a style image larger than x asks for larger feature correlations, not just
    larger motifs; per position, the style's size changes only the scale of its motifs (scale
    control). With a style of x's size the two are the same.

    Spatial control: `regions`, instead of `style`, is a list of (content_mask, style_image) or
    (content_mask, style_image, style_mask): host masks of shape (H, W) with weights in 0..1, the
    content masks at x's size and together covering it, each style mask at its image's size. The
    style loss is then the guided one (see mask_pyramid and guided_style_layer_loss above).
    """

    def __init__(self, net, content, style, *, content_layers=DEFAULT_CONTENT_LAYERS,
                 style_layers=DEFAULT_STYLE_LAYERS, style_layer_weights=None, alpha=1.0, beta=1e3,
                 tv_weight=0.0, tv_exponent=2.0, style_blend_weights=None, regions=None,
                 targets_per_position=False):
        self.net = net
        self.targets_per_position = bool(targets_per_position)
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
        self.region_targets = None
        self.mask_shape = None
        if regions is not None:
            if style is not None or style_blend_weights is not None:
                raise InputError("give the style either as one image (or a blend) or as regions, not both")
            self._set_regions(net, regions)
        elif self.style_layers:
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
                    if self.targets_per_position:       # A / M_a: times x's M at every evaluation
                        h, w = net.map_shape(n)
                        G /= float(h * w)
                    self.gram_targets[n] = G if n not in self.gram_targets else self.gram_targets[n] + G
        self.layers = tuple(dict.fromkeys(self.content_layers + self.style_layers))
        self.last_parts = None

    def _set_regions(self, net, regions):
        """Guided targets: per style layer, a list of (t_r on the padded layout, A_r) -- see above."""
        from handnst import layers as L
        regions = [tuple(r) for r in regions]
        if not regions:
            raise InputError("regions were given but the list is empty: give at least one region")
        if not self.style_layers:
            raise InputError("regions give styles, so they need style layers")
        for i, r in enumerate(regions, 1):
            if len(r) not in (2, 3):
                raise InputError(f"region {i} must be (content_mask, style_image) or (content_mask, style_image, "
                                 f"style_mask), got {len(r)} items")
        content_masks = [np.asarray(to_host(r[0]), dtype=np.float64) for r in regions]
        check_region_masks(content_masks, "content", cover=True,
                           labels=[f"the content mask of region {i}" for i in range(1, len(content_masks) + 1)])
        self.mask_shape = content_masks[0].shape
        if self.content_shape is not None and self.mask_shape != self.content_shape[1:]:
            h, w = self.mask_shape
            raise InputError(f"the content masks are {w}x{h} but the content image is "
                             f"{self.content_shape[2]}x{self.content_shape[1]}: resize them to it")
        xp, dtype = net.xp, net.dtype

        def padded(t):          # (h, w) host weights -> (M',) on the padded grid, zero on its border
            return L.to_padded(xp.asarray(t[None], dtype=dtype)).reshape(-1)

        self.region_targets = {n: [] for n in self.style_layers}
        for i, (r, mask) in enumerate(zip(regions, content_masks), 1):
            img = _check_image(net, f"region {i} style", r[1])
            self._check_size(img, self.style_layers, f"region {i} style")
            style_mask = None if len(r) < 3 or r[2] is None else np.asarray(to_host(r[2]), dtype=np.float64)
            if style_mask is not None:
                if style_mask.shape != tuple(img.shape[1:]):
                    raise InputError(f"the style mask of region {i} is {style_mask.shape[-1]}x{style_mask.shape[0]} "
                                     f"but its style image is {img.shape[2]}x{img.shape[1]}: resize it to the image")
                check_region_masks([style_mask], cover=False, labels=[f"the style mask of region {i}"])
            else:
                style_mask = np.ones(img.shape[1:])
            feats = net.forward(img, self.style_layers, layout="matrix")
            t_content = mask_pyramid(mask, self.style_layers)
            t_style = mask_pyramid(style_mask, self.style_layers)
            for n in self.style_layers:
                M_r, M_rs = float(np.sum(t_content[n] ** 2)), float(np.sum(t_style[n] ** 2))
                if M_r == 0 or M_rs == 0:
                    continue    # the region is gone at this depth (a sliver pooled away): no term
                G_s = guided_gram_matrix(feats[n], padded(t_style[n]))
                self.region_targets[n].append((padded(t_content[n]), (M_r / M_rs) * G_s))

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
        if self.mask_shape is not None and tuple(x.shape[1:]) != self.mask_shape:
            raise InputError(f"x has shape {tuple(x.shape)} but the region masks are {self.mask_shape}")
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
                weight = self.beta * self.style_layer_weights[n]
                if self.region_targets is None:
                    A = self.gram_targets[n] * float(sizes[n]) if self.targets_per_position else self.gram_targets[n]
                    value, cache = style_layer_loss(feats[n], A, M=sizes[n])
                else:
                    value, cache = 0.0, []
                    for t, A in self.region_targets[n]:
                        v, c = guided_style_layer_loss(feats[n], t, A, M=sizes[n])
                        value += v
                        cache.append(c)
                parts["style_per_layer"][n] = value
                parts["style"] += self.style_layer_weights[n] * value
                if with_grad and weight:
                    write = (style_layer_gradient_writer(cache, upstream=weight) if self.region_targets is None
                             else guided_style_gradient_writer(cache, upstream=weight))
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
           "mask_pyramid", "check_region_masks", "guided_gram_matrix", "guided_style_layer_loss",
           "guided_style_layer_loss_backward", "guided_style_gradient_writer",
           "DEFAULT_CONTENT_LAYERS", "DEFAULT_STYLE_LAYERS"]
