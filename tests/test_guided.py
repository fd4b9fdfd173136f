"""Spatial control with guided Gram matrices: the objective against the formula written out with plain
loops, its gradients against finite differences, and the errors a user can cause."""

import numpy as np
import pytest

from handnst import losses
from handnst.backend import get_xp, to_host
from handnst.errors import InputError
from handnst.gradcheck import LAYER_TOLERANCE, OBJECTIVE_TOLERANCE, check_gradient, region_objective

from backends import BACKENDS, random_net

STYLE = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


def pool_mask_by_loops(mask, times):
    """2x2 average pooling, `times` times, written as loops over the windows (odd edges dropped)."""
    t = np.array(mask, dtype=np.float64)
    for _ in range(times):
        h, w = t.shape[0] // 2, t.shape[1] // 2
        out = np.zeros((h, w))
        for i in range(h):
            for j in range(w):
                out[i, j] = (t[2 * i, 2 * j] + t[2 * i + 1, 2 * j] + t[2 * i, 2 * j + 1] + t[2 * i + 1, 2 * j + 1]) / 4
        t = out
    return t


def independent_region_objective(net, content, regions, x, alpha, beta):
    """alpha L_content + beta sum_l w_l sum_r 1/(4 N^2 M M_r) ||F_r F_r^T - (M_r/M_rS) F_Sr F_Sr^T||^2
    from (C, H, W) responses, masks pooled by loops, every sum in plain NumPy."""
    fx = net.forward(x, ("conv4_2",) + STYLE)
    fx = {n: to_host(v).astype(np.float64) for n, v in fx.items()}
    fc = to_host(net.forward(content, ("conv4_2",))["conv4_2"]).astype(np.float64)
    content_term = 0.5 * np.sum((fx["conv4_2"] - fc) ** 2)
    style_term = 0.0
    for region in regions:
        cmask, style = region[0], region[1]
        smask = region[2] if len(region) > 2 else np.ones(style.shape[1:])
        fs = {n: to_host(v).astype(np.float64) for n, v in net.forward(style, STYLE).items()}
        for block, name in enumerate(STYLE):
            tc = pool_mask_by_loops(cmask, block)
            ts = pool_mask_by_loops(smask, block)
            N, h, w = fx[name].shape
            Fr = (fx[name] * tc).reshape(N, -1)
            Sr = (fs[name] * ts).reshape(N, -1)
            M, M_r, M_rs = h * w, np.sum(tc ** 2), np.sum(ts ** 2)
            D = Fr @ Fr.T - (M_r / M_rs) * (Sr @ Sr.T)
            style_term += 0.2 * np.sum(D ** 2) / (4 * N ** 2 * M * M_r)
    return alpha * content_term + beta * style_term, content_term, style_term


def halves(H, W, seam=4.0):
    left = np.clip((W / 2 + seam / 2 - np.arange(W)) / seam, 0.0, 1.0) * np.ones((H, 1))
    return left, 1.0 - left


@pytest.mark.parametrize("backend", BACKENDS)
def test_region_objective_equals_the_formula_written_out(backend):
    net = random_net(0, "avg", "float64", backend)
    xp = get_xp(backend)
    r = np.random.default_rng(1)
    content, x = (xp.asarray(r.uniform(-100, 100, (3, 37, 26))) for _ in range(2))
    s1, s2 = xp.asarray(r.uniform(-100, 100, (3, 30, 41))), xp.asarray(r.uniform(-100, 100, (3, 35, 33)))
    smask = (r.uniform(size=(35, 33)) > 0.3).astype(float)
    left, right = halves(37, 26)
    regions = [(left, s1), (right, s2, smask)]
    loss = losses.StyleTransferLoss(net, content, None, alpha=2.0, beta=1e3, regions=regions)
    want, c, s = independent_region_objective(net, content, regions, x, 2.0, 1e3)
    parts = loss.parts(x)
    assert parts["content"] == pytest.approx(c, rel=1e-12)
    assert parts["style"] == pytest.approx(s, rel=1e-12)
    assert loss(x)[0] == pytest.approx(want, rel=1e-12)


def test_one_region_covering_everything_is_the_plain_style_loss():
    net = random_net(0, "avg", "float64")
    r = np.random.default_rng(2)
    content, style, x = (r.uniform(-100, 100, (3, 24, 20)) for _ in range(3))
    plain = losses.StyleTransferLoss(net, content, style)
    guided = losses.StyleTransferLoss(net, content, None, regions=[(np.ones((24, 20)), style)])
    v1, g1 = plain(x)
    v2, g2 = guided(x)
    assert v2 == pytest.approx(v1, rel=1e-12)
    np.testing.assert_allclose(g2, g1, rtol=1e-9, atol=1e-12 * np.abs(g1).max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_region_objective_gradient_matches_finite_differences(backend):
    net = random_net(0, "avg", "float64", backend)
    loss, x = region_objective(net)
    value, grad = loss(x)
    assert check_gradient(loss.value, x, grad, entries=8, directions=3, h=1e-3) <= OBJECTIVE_TOLERANCE


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_lists_the_guided_checks(backend):
    from handnst.gradcheck import loss_checks, objective_checks
    name, fn, tol = loss_checks(backend)[-1]
    assert name == "guided style loss (guided Gram)" and tol == LAYER_TOLERANCE == 1e-6
    assert fn() <= tol
    assert "guided regions" in objective_checks(backend)[-1][0]()


def test_guided_loss_gradient_and_writer():
    r = np.random.default_rng(3)
    F = r.uniform(0.05, 1.0, (5, 9))
    t = np.clip(r.uniform(-0.3, 1, 9), 0, 1)
    A = losses.guided_gram_matrix(r.uniform(0, 1, (5, 9)), t)
    grad = losses.guided_style_layer_loss_backward(losses.guided_style_layer_loss(F, t, A, M=11)[1])
    assert check_gradient(lambda z: losses.guided_style_layer_loss(z, t, A, M=11)[0], F, grad) <= LAYER_TOLERANCE
    # The writer stores and adds sum_r of the regions' gradients (transposed, unmasked).
    t2 = 1 - t
    A2 = losses.guided_gram_matrix(r.uniform(0, 1, (5, 9)), t2)
    caches = [losses.guided_style_layer_loss(F, tt, AA, M=11)[1] for tt, AA in ((t, A), (t2, A2))]
    want = sum(losses.guided_style_layer_loss_backward(c, relu_mask=False, upstream=3.0) for c in caches).T
    out = np.full((9, 5), np.nan)
    write = losses.guided_style_gradient_writer(caches, upstream=3.0)
    write(out)
    np.testing.assert_allclose(out, want, rtol=1e-12)
    out2 = np.ones((9, 5))
    write(out2, accumulate=True)
    np.testing.assert_allclose(out2, want + 1, rtol=1e-12)


def test_mask_pyramid_matches_the_networks_map_sizes():
    net = random_net(0, "avg", "float64")
    x = np.zeros((3, 37, 29))
    net.forward(x, STYLE + ("pool4",))
    pyramid = losses.mask_pyramid(np.ones((37, 29)), STYLE + ("pool4",))
    for name in STYLE + ("pool4",):
        assert pyramid[name].shape == net.map_shape(name)
    mask = np.random.default_rng(4).uniform(size=(37, 29))
    for block, name in enumerate(STYLE):
        np.testing.assert_allclose(losses.mask_pyramid(mask, STYLE)[name], pool_mask_by_loops(mask, block))


def test_bad_regions_are_clear_errors():
    net = random_net(0, "avg", "float64")
    r = np.random.default_rng(5)
    content, style = r.uniform(-100, 100, (3, 24, 20)), r.uniform(-100, 100, (3, 24, 20))
    left, right = halves(24, 20)

    def build(regions, **kw):
        return losses.StyleTransferLoss(net, content, kw.pop("style", None), regions=regions, **kw)

    with pytest.raises(InputError, match="the content mask of region 2 is empty"):
        build([(np.ones((24, 20)), style), (np.zeros((24, 20)), style)])
    with pytest.raises(InputError, match=r"do not cover the picture: 50\.0% of its pixels"):
        build([((left > 0.5).astype(float), style)])
    with pytest.raises(InputError, match="content masks are 10x12 but the content image is 20x24"):
        build([(np.ones((12, 10)), style)])
    with pytest.raises(InputError, match="style mask of region 1 is 5x5"):
        build([(np.ones((24, 20)), style, np.ones((5, 5)))])
    with pytest.raises(InputError, match="the style mask of region 1 is empty"):
        build([(np.ones((24, 20)), style, np.zeros((24, 20)))])
    with pytest.raises(InputError, match="between 0 and 1"):
        build([(2 * np.ones((24, 20)), style)])
    with pytest.raises(InputError, match="not both"):
        build([(np.ones((24, 20)), style)], style=style)
    with pytest.raises(InputError, match="list is empty"):
        build([])
    with pytest.raises(InputError, match="region 1 must be"):
        build([(np.ones((24, 20)),)])
    texture = losses.StyleTransferLoss(net, None, None, content_layers=(), regions=[(left, style), (right, style)])
    with pytest.raises(InputError, match="region masks are"):
        texture(np.zeros((3, 20, 24)))


def test_targets_per_position_rescale_the_gram_target_by_the_number_of_positions():
    net = random_net(0, "avg", "float64")
    r = np.random.default_rng(6)
    content, x = r.uniform(-100, 100, (3, 24, 20)), r.uniform(-100, 100, (3, 24, 20))
    same, big = r.uniform(-100, 100, (3, 24, 20)), r.uniform(-100, 100, (3, 50, 38))
    # a style of x's size: the same objective
    assert losses.StyleTransferLoss(net, content, same, targets_per_position=True)(x)[0] == pytest.approx(
        losses.StyleTransferLoss(net, content, same)(x)[0], rel=1e-12)
    # a larger style: E_l with A * M_x / M_a, written out from (C, h, w) responses
    loss = losses.StyleTransferLoss(net, content, big, targets_per_position=True, alpha=0.0)
    fx, fs = net.forward(x, STYLE), net.forward(big, STYLE)
    want = 0.0
    for name in STYLE:
        F = fx[name].reshape(fx[name].shape[0], -1)
        S = fs[name].reshape(fs[name].shape[0], -1)
        N, M = F.shape
        want += 0.2 * np.sum((F @ F.T - (M / S.shape[1]) * (S @ S.T)) ** 2) / (4 * N ** 2 * M ** 2)
    value, grad = loss(x)
    assert loss.parts(x)["style"] == pytest.approx(want, rel=1e-12)
    assert check_gradient(loss.value, x, grad, entries=6, directions=2, h=1e-3) <= OBJECTIVE_TOLERANCE
