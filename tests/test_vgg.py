"""The network: forward/backward against a composition of the textbook layers, API contracts."""

import numpy as np
import pytest

from handnst import layers as L
from handnst.backend import get_xp, to_host
from handnst.errors import InputError
from handnst.networks.vgg import LAYER_ORDER, canonical_layer, min_image_size, random_vgg19

from backends import BACKENDS, random_net


def reference_forward(net, x, upto):
    """VGG19 built from the (C, H, W) textbook layers, the obvious way."""
    outs, caches, h = {}, [], x
    for name in LAYER_ORDER[:LAYER_ORDER.index(upto) + 1]:
        if name.startswith("conv"):
            w, b = net.weights(name)
            h, conv_cache = L.conv_forward(h, w, b)
            h, relu_cache = L.relu_forward(h)
            caches.append((name, conv_cache, relu_cache))
        else:
            h, cache = (L.avg_pool_forward if net.pooling == "avg" else L.max_pool_forward)(h)
            caches.append((name, cache, None))
        outs[name] = h
    return outs, caches


def reference_backward(net, caches, grads):
    g = None
    for name, c1, c2 in reversed(caches):
        if name in grads:
            g = grads[name] if g is None else g + grads[name]
        if g is None:
            continue
        if name.startswith("conv"):
            g = L.conv_backward(L.relu_backward(g, c2), c1)
        else:
            g = (L.avg_pool_backward if net.pooling == "avg" else L.max_pool_backward)(g, c1)
    return g


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pooling", ["avg", "max"])
@pytest.mark.parametrize("shape", [(3, 37, 42), (3, 16, 16)])
def test_forward_backward_equal_textbook_composition(backend, pooling, shape):
    net = random_net(1, pooling, "float64", backend)
    xp = get_xp(backend)
    r = np.random.default_rng(0)
    x = xp.asarray(r.normal(0, 50, shape))
    layers = ["conv1_1", "relu2_1", "pool2", "conv3_1", "conv4_2", "conv5_1"]
    out = net.forward(x, layers)
    assert set(out) == {canonical_layer(n) for n in layers}
    ref, caches = reference_forward(net, x, "conv5_1")
    for name, value in out.items():
        np.testing.assert_allclose(to_host(value), to_host(ref[name]), rtol=1e-10, atol=1e-10 * float(abs(ref[name]).max()))
    grads = {n: xp.asarray(r.normal(size=v.shape)) for n, v in out.items()}
    want = reference_backward(net, caches, grads)
    np.testing.assert_allclose(to_host(net.backward(grads)), to_host(want), rtol=1e-9, atol=1e-12 * float(abs(want).max()))
    # the matrix layout gives the same gradient
    net.forward(x, layers, layout="matrix")
    dx = net.backward({n: L.to_padded(g).T for n, g in grads.items()}, layout="matrix")
    np.testing.assert_allclose(to_host(dx), to_host(want), rtol=1e-9, atol=1e-12 * float(abs(want).max()))


def test_matrix_layout_is_zero_off_the_image_and_matches_chw():
    net = random_net(2, dtype="float64")
    x = np.random.default_rng(1).normal(0, 50, (3, 20, 24))
    chw = net.forward(x, ["conv2_1"])["conv2_1"]
    F = net.forward(x, ["conv2_1"], layout="matrix")["conv2_1"]
    h, w = net.map_shape("conv2_1")
    assert (h, w) == (10, 12) and F.shape == (128, L.padded_length(10, 12))
    grid = F.T[:(h + 2) * (w + 2)].reshape(h + 2, w + 2, 128)
    np.testing.assert_array_equal(grid[1:-1, 1:-1].transpose(2, 0, 1), chw)
    assert np.count_nonzero(F) == np.count_nonzero(chw)        # nothing outside the image
    np.testing.assert_allclose(F @ F.T, chw.reshape(128, -1) @ chw.reshape(128, -1).T, rtol=1e-12)


def test_forward_stops_at_the_deepest_requested_layer():
    net = random_net(0, dtype="float32")
    net.forward(np.zeros((3, 32, 32), np.float32), ["conv2_1"])
    assert list(net._state["maps"]) == ["conv1_1", "conv1_2", "pool1", "conv2_1"]


def test_float32_agrees_with_float64():
    x = np.random.default_rng(3).normal(0, 50, (3, 24, 20))
    n32, n64 = random_net(4, dtype="float32"), random_net(4, dtype="float64")
    a = n32.forward(x.astype(np.float32), ["conv4_1"])["conv4_1"]
    b = n64.forward(x, ["conv4_1"])["conv4_1"]
    assert a.dtype == np.float32
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


def test_buffers_are_reused_between_evaluations():
    net = random_net(0, dtype="float32")
    x = np.random.default_rng(0).normal(0, 50, (3, 32, 32)).astype(np.float32)
    net.forward(x, ["conv3_1"], layout="matrix")
    first = {k: id(v) for k, v in net._buffers.items()}
    net.backward({"conv3_1": np.ones((256, L.padded_length(8, 8)), np.float32)}, layout="matrix")
    net.forward(x, ["conv3_1"], layout="matrix")
    assert all(id(net._buffers[k]) == v for k, v in first.items())


def test_layer_names_and_sizes():
    assert canonical_layer("relu4_2") == canonical_layer("conv4_2") == "conv4_2"
    assert min_image_size(["conv1_1"]) == 1 and min_image_size(["conv5_1"]) == 16 and min_image_size(["pool5"]) == 32
    with pytest.raises(InputError, match="conv1_1"):
        canonical_layer("conv6_1")
    net = random_net(0, dtype="float32")
    with pytest.raises(InputError, match="16x16"):
        net.forward(np.zeros((3, 15, 40), np.float32), ["conv5_1"])
    with pytest.raises(InputError, match="shape"):
        net.forward(np.zeros((4, 16, 16), np.float32), ["conv1_1"])
    with pytest.raises(InputError, match="forward"):
        random_vgg19(0).backward({"conv1_1": np.zeros((64, 4, 4), np.float32)})
    net.forward(np.zeros((3, 16, 16), np.float32), ["conv2_1"])
    with pytest.raises(InputError, match="stopped before"):
        net.backward({"conv3_1": np.zeros((256, 4, 4), np.float32)})
    with pytest.raises(InputError, match="pooling"):
        random_vgg19(0, pooling="median")


def test_weights_view_round_trips_the_filters():
    net = random_net(7, dtype="float64")
    w, b = net.weights("conv2_1")
    assert w.shape == (128, 64, 3, 3) and b.shape == (128,)
    np.testing.assert_array_equal(L.conv_taps(np.ascontiguousarray(w)), net._taps["conv2_1"])


def test_chw_responses_are_copies_even_for_1x1_maps():
    # conv5_1 of a 16x16 image is 1x1: its (C, 1, 1) view is contiguous, and must still be a copy.
    net = random_net(0, dtype="float64")
    r = np.random.default_rng(0)
    a = net.forward(r.normal(0, 50, (3, 16, 16)), ["conv5_1"])["conv5_1"]
    saved = a.copy()
    net.forward(r.normal(0, 50, (3, 16, 16)), ["conv5_1"])
    np.testing.assert_array_equal(a, saved)


def test_one_backward_per_forward():
    # backward reuses the stored maps as scratch space, so a second backward must be refused clearly
    net = random_vgg19(0)
    x = np.random.default_rng(0).normal(0, 50, (3, 16, 16)).astype(np.float32)
    out = net.forward(x, ["conv2_1"])
    first = net.backward({"conv2_1": np.ones_like(out["conv2_1"])})
    with pytest.raises(InputError, match="one backward pass"):
        net.backward({"conv2_1": np.ones_like(out["conv2_1"])})
    net.forward(x, ["conv2_1"])
    np.testing.assert_array_equal(net.backward({"conv2_1": np.ones_like(out["conv2_1"])}), first)


def test_network_through_the_generic_gemm_path_used_on_cupy(monkeypatch):
    # No GPU here: run the network with the product CuPy uses (plain `@`) instead of NumPy's BLAS call,
    # so the device code path is exercised on the CPU side with the same backend-agnostic layers.
    from handnst import backend, layers

    net = random_net(3, dtype="float64")
    for shape in ((20, 18), (96, 128)):                 # conv3_1 on a 5x4 map (F(2x2, 3x3)) and a 24x32 one (F(4x4, 3x3))
        _network_through_generic_gemm(monkeypatch, backend, layers, net, shape)


def _network_through_generic_gemm(monkeypatch, backend, layers, net, shape):
    monkeypatch.undo()
    x = np.random.default_rng(5).normal(0, 50, (3,) + shape)
    want = net.forward(x, ["conv1_1", "conv3_1"])
    dwant = net.backward({n: np.ones_like(v) for n, v in want.items()})
    for module in (layers.padded, layers.winograd, layers.winograd2d, layers.winograd4x4):   # every layer module that calls BLAS
        monkeypatch.setattr(module, "gemm", backend.generic_gemm)
    got = net.forward(x, ["conv1_1", "conv3_1"])
    for n in want:
        np.testing.assert_allclose(got[n], want[n], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.backward({n: np.ones_like(v) for n, v in got.items()}), dwant, rtol=1e-11, atol=1e-11)


def test_each_convolution_runs_the_algorithm_chosen_for_its_shape():
    auto, direct = random_vgg19(3, dtype="float64"), random_vgg19(3, dtype="float64", conv="direct")
    convs = [n for n in LAYER_ORDER if n.startswith("conv")]
    assert [auto.algorithm(n) for n in convs] == ["direct"] + ["rows"] * 3 + ["2d"] * 12
    assert [auto.algorithm(n, 13, 9) for n in convs] == ["direct"] + ["rows"] * 3 + ["2d"] * 12   # odd maps too
    # F(4x4, 3x3) from the area of 48 4x4 tiles on (conv3_1 onwards only), part tiles allowed
    assert [auto.algorithm(n, 24, 32) for n in convs] == ["direct"] + ["rows"] * 3 + ["4x4"] * 12
    assert [auto.algorithm(n, 25, 31) for n in convs] == ["direct"] + ["rows"] * 3 + ["4x4"] * 12
    assert {auto.algorithm("conv4_2", *hw) for hw in ((20, 32), (24, 30), (12, 16))} == {"2d"}
    assert not any(direct.uses_winograd(n) for n in convs) and auto.uses_winograd("conv1_2")
    assert {direct.algorithm(n, 96, 128) for n in convs} == {"direct"}


# (64, 32): even maps down to conv5, all F(2x2) from conv3; (52, 38): odd ones (conv3 13x9, conv5 3x2);
# (128, 96): conv3_x on 32x24 maps, 48 whole 4x4 tiles, with F(4x4, 3x3); (124, 102): conv3_x on
# 31x25 maps, F(4x4, 3x3) with part tiles at the bottom and the right.
@pytest.mark.parametrize("shape,two_d", [((64, 32), "2d"), ((52, 38), "2d"), ((128, 96), "4x4"), ((124, 102), "4x4")])
def test_winograd_network_agrees_with_the_direct_one(shape, two_d):
    auto, direct = random_vgg19(3, dtype="float64"), random_vgg19(3, dtype="float64", conv="direct")
    x = np.random.default_rng(5).normal(0, 50, (3,) + shape)
    layers = ["conv1_2", "conv2_2", "conv3_4", "conv4_2", "conv5_1"]
    a, d = auto.forward(x, layers), direct.forward(x, layers)
    used = {name: how for name, (how, _) in auto._filters.items()}
    assert used == {"conv1_2": "rows", "conv2_1": "rows", "conv2_2": "rows",
                    "conv3_1": two_d, "conv3_2": two_d, "conv3_3": two_d, "conv3_4": two_d,
                    "conv4_1": "2d", "conv4_2": "2d", "conv4_3": "2d", "conv4_4": "2d", "conv5_1": "2d"}
    for n in layers:
        np.testing.assert_allclose(a[n], d[n], rtol=1e-11, atol=1e-11 * float(abs(d[n]).max()))
    grads = {n: np.random.default_rng(6).normal(size=v.shape) for n, v in a.items()}
    ga, gd = auto.backward(grads), direct.backward(grads)
    np.testing.assert_allclose(ga, gd, rtol=1e-10, atol=1e-11 * float(abs(gd).max()))


def test_a_layer_keeps_one_form_of_its_winograd_filters():
    # A coarse-to-fine run switches conv3_x between F(2x2, 3x3) (small maps) and F(4x4, 3x3): each
    # layer keeps only the form its last map needed, so the filters never take the memory of both.
    net = random_vgg19(4)
    x_small, x_big = (np.random.default_rng(7).normal(0, 50, (3,) + s).astype(np.float32) for s in ((32, 32), (128, 96)))
    for x, how in ((x_small, "2d"), (x_big, "4x4"), (x_small, "2d")):
        net.forward(x, ["conv3_2"])
        assert {n: h for n, (h, _) in net._filters.items() if n.startswith("conv3")} == {"conv3_1": how, "conv3_2": how}
        assert net._filters["conv3_2"][1].shape[0] == {"2d": 16, "4x4": 36}[how]


def _weights_file(tmp_path):
    """A weights file in the project's format, with He-initialised random filters."""
    from handnst.networks.vgg import CONV_LAYERS
    from handnst.weights import KERAS_CONVENTION, save_weights
    rng = np.random.default_rng(9)
    params = {name: (rng.standard_normal((cout, cin, 3, 3), dtype=np.float32) * np.float32((2 / (9 * cin)) ** 0.5),
                     rng.standard_normal(cout, dtype=np.float32) * np.float32(0.01)) for name, cin, cout in CONV_LAYERS}
    return save_weights(tmp_path / "vgg.h5", params, {"convention": KERAS_CONVENTION, "source": "random, for tests"})


def test_a_loaded_network_reads_again_the_filters_it_does_not_keep(tmp_path):
    # From conv3_1 on, a network loaded from a file keeps only its Winograd filters; when a map of
    # another size needs the other form, the plain filters come from the file again, and the
    # results are exactly those of a network that kept every filter in memory.
    from handnst.networks.vgg import VGG19, load_vgg19
    from handnst.weights import KERAS_CONVENTION, load_weights
    path = _weights_file(tmp_path)
    params, _ = load_weights(path)
    net = load_vgg19(path)
    everything = VGG19(params, convention=KERAS_CONVENTION)
    small = ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]
    assert sorted(net._taps) == small and len(everything._taps) == 16
    w, b = net.weights("conv5_4")
    np.testing.assert_array_equal(w, params["conv5_4"][0])
    np.testing.assert_array_equal(b, params["conv5_4"][1])
    for shape, how in (((32, 32), "2d"), ((128, 96), "4x4"), ((32, 32), "2d")):
        x = np.random.default_rng(10).normal(0, 50, (3,) + shape).astype(np.float32)
        got, want = net.forward(x, ["conv3_2"]), everything.forward(x, ["conv3_2"])
        assert net._filters["conv3_2"][0] == how
        np.testing.assert_array_equal(got["conv3_2"], want["conv3_2"])
        np.testing.assert_array_equal(net.backward({"conv3_2": got["conv3_2"]}),
                                      everything.backward({"conv3_2": want["conv3_2"]}))
    assert sorted(net._taps) == small


def test_a_weights_file_changed_or_gone_during_a_run_is_a_clear_error(tmp_path):
    import os
    from handnst.networks.vgg import load_vgg19
    path = _weights_file(tmp_path)
    net = load_vgg19(path)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))        # as if rewritten
    with pytest.raises(InputError, match="changed while handnst was using it"):
        net.weights("conv3_1")
    os.remove(path)
    with pytest.raises(InputError, match="moved or damaged"):
        net.forward(np.zeros((3, 32, 32), np.float32), ["conv3_1"])


def test_unknown_convolution_algorithm_is_a_clear_error():
    with pytest.raises(InputError, match="convolution algorithm"):
        random_vgg19(0, conv="fft")


def test_a_gradient_can_be_written_into_the_network_by_a_function():
    net = random_net(4, dtype="float64")
    x = np.random.default_rng(7).normal(0, 50, (3, 20, 16))
    out = net.forward(x, ["conv2_1", "conv3_1"], layout="matrix")
    r = np.random.default_rng(8)
    g2, g3 = (r.normal(size=out[n].shape) * (out[n] != 0) for n in ("conv2_1", "conv3_1"))
    want = net.backward({"conv2_1": g2, "conv3_1": g3}, layout="matrix")
    calls = []

    def write(g):
        def w(out, accumulate=False):
            calls.append(accumulate)
            if accumulate:
                out += g.T
            else:
                out[...] = g.T
        return w

    net.forward(x, ["conv2_1", "conv3_1"], layout="matrix")
    got = net.backward({"conv2_1": write(g2), "conv3_1": write(g3)}, layout="matrix")
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert calls == [False, True]      # the deepest one stores, the next one adds


def test_a_loss_at_a_pooled_map_still_reads_it_in_the_backward_pass():
    # conv2_1's backward pass writes into pool1's buffer only when no gradient is given at pool1:
    # a style loss there reads pool1's map when the backward pass reaches it.
    net = random_vgg19(3, dtype="float64")
    x = np.random.default_rng(12).normal(0, 50, (3, 24, 20))
    out = net.forward(x, ["pool1", "conv2_1"], layout="matrix")
    g2 = np.random.default_rng(13).normal(size=out["conv2_1"].shape) * (out["conv2_1"] != 0)
    want = net.backward({"pool1": out["pool1"].copy(), "conv2_1": g2}, layout="matrix")
    view = net.forward(x, ["pool1", "conv2_1"], layout="matrix")["pool1"]     # the network's own buffer

    def write(o, accumulate=False):       # like the style loss's writer: reads the map when called
        if accumulate:
            o += view.T
        else:
            o[...] = view.T
    np.testing.assert_allclose(net.backward({"pool1": write, "conv2_1": g2}, layout="matrix"), want, rtol=1e-12)


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_backward_in_place_by_bands_gives_the_same_gradient(monkeypatch, pooling):
    # The last convolution of each block convolves its gradient over its own map, band by band, when
    # the map is at least two bands: here every block is (a few hundred bytes a band), with conv3_4 on
    # F(4x4, 3x3) with part tiles (a 32x25 map). No buffer of a pooled block's size is made for it.
    from handnst.networks import vgg
    x = np.random.default_rng(16).normal(0, 50, (3, 128, 100))
    layers = ["conv1_1", "conv2_1", "conv3_1", "conv4_2", "conv5_1"]
    gradients = {}
    for band_bytes in (1 << 40, 1 << 10):
        monkeypatch.setattr(vgg, "BAND_BYTES", band_bytes)
        net = random_vgg19(3, pooling=pooling, dtype="float64")
        out = net.forward(x, layers)
        grads = {n: np.random.default_rng(17).normal(size=v.shape) for n, v in out.items()}
        gradients[band_bytes] = net.backward(grads)
        grad_buffers = {key[1] for key in net._buffers if key[0] == "grad"}
        block_maps = {(vgg.L.padded_length(128 >> s, 100 >> s), 64 << s) for s in range(4)}   # conv1_2 .. conv4_4
        if band_bytes < 1 << 40:
            assert not grad_buffers & block_maps and "band" in net._buffers
            assert net.algorithm("conv3_4", 32, 25) == "4x4"
        else:
            assert block_maps <= grad_buffers and "band" not in net._buffers
    small, whole = gradients[1 << 10], gradients[1 << 40]
    np.testing.assert_allclose(small, whole, rtol=1e-11, atol=1e-12 * float(abs(whole).max()))
    ref, caches = reference_forward(net, x, "conv5_1")
    want = reference_backward(net, caches, grads)
    np.testing.assert_allclose(small, want, rtol=1e-9, atol=1e-12 * float(abs(want).max()))


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_block_last_maps_kept_as_masks_change_nothing(monkeypatch, pooling):
    # With average pooling conv1_2 and conv3_4 keep only their ReLU masks, their maps written into
    # the next block's (MASK_ONLY). Responses and gradient are the same bits as with every map kept.
    from handnst.networks import vgg
    x = np.random.default_rng(20).normal(0, 50, (3, 64, 50))
    layers = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv4_2", "conv5_1"]
    runs = {}
    for mask_only in (dict(vgg.MASK_ONLY), {}):
        monkeypatch.setattr(vgg, "MASK_ONLY", mask_only)
        net = random_vgg19(3, pooling=pooling, dtype="float64")
        out = net.forward(x, layers)
        grads = {n: np.random.default_rng(21).normal(size=v.shape) for n, v in out.items()}
        runs[bool(mask_only)] = (out, net.backward(grads), set(net._buffers))
    (out, grad, kept), (plain_out, plain_grad, plain_kept) = runs[True], runs[False]
    for n in layers:
        np.testing.assert_array_equal(out[n], plain_out[n])
    np.testing.assert_array_equal(grad, plain_grad)
    masks = {("mask", "conv1_2"), ("mask", "conv3_4")}
    if pooling == "avg":
        assert masks <= kept and not {"conv1_2", "conv3_4", "conv2_1", "conv4_1"} & kept
    else:                                  # max pooling's backward pass reads the values: all kept
        assert not masks & kept and kept == plain_kept


def test_the_two_arrangements_of_the_maps_never_coexist():
    # The content image's pass stops at conv4_2 (block 4 incomplete: conv3_4 keeps its map), the
    # evaluations go on to conv5_1 (conv3_4 keeps a mask): at one size, only one set of buffers.
    net = random_vgg19(3)
    x = np.random.default_rng(25).normal(0, 50, (3, 48, 40))
    net.forward(x, ["conv4_2"])
    assert {"conv3_4", "conv4_1", "conv4_2"} <= set(net._buffers) and ("mask", "conv3_4") not in net._buffers
    net.forward(x, ["conv4_2", "conv5_1"])
    assert not {"conv3_4", "conv4_1", "conv4_2"} & set(net._buffers) and ("mask", "conv3_4") in net._buffers
    net.forward(x, ["conv4_2"])
    assert not {("mask", "conv3_4"), ("block of", "conv3_4")} & set(net._buffers)


def test_a_map_kept_as_a_mask_still_takes_a_gradient(monkeypatch):
    # conv1_2 was not asked for, so only its mask is kept; a gradient may still be given there.
    from handnst.networks import vgg
    x = np.random.default_rng(22).normal(0, 50, (3, 40, 36))
    grads = {}
    results = []
    for mask_only in (dict(vgg.MASK_ONLY), {}):
        monkeypatch.setattr(vgg, "MASK_ONLY", mask_only)
        net = random_vgg19(4, dtype="float64")
        out = net.forward(x, ["conv3_1"])
        assert (("mask", "conv1_2") in net._buffers) == bool(mask_only)
        shape = net.map_shape("conv1_2")
        grads = {"conv1_2": np.random.default_rng(23).normal(size=(64, *shape)),
                 "conv3_1": np.random.default_rng(24).normal(size=out["conv3_1"].shape)}
        results.append(net.backward(grads))
    np.testing.assert_array_equal(results[0], results[1])


def _objective_gradient(net, size, seed=11):
    from handnst.losses import StyleTransferLoss
    rng = np.random.default_rng(seed)
    content, style, x = (rng.uniform(-110, 140, (3,) + size) for _ in range(3))    # VGG's input range
    cast = [a.astype(net.dtype) for a in (content, style, x)]
    loss = StyleTransferLoss(net, cast[0], cast[1], beta=5e3)
    value, grad = loss(cast[2])
    return value, grad.astype(np.float64)


# every map even; odd maps (half tiles) from conv3 on; the bench size, with F(4x4, 3x3) on conv3_x and
# conv4_x; a 3:2 picture, with part tiles of F(4x4, 3x3) on conv3_x (42x64)
@pytest.mark.parametrize("size", [(64, 64), (48, 40), (192, 256), (170, 256)])
def test_float32_gradient_of_the_whole_objective_is_within_1e_3_of_float64(size):
    # What stylize runs (float32, Winograd where chosen) against the exact objective (float64, nine
    # direct products everywhere), on the pretrained weights when there are any: relative error of the
    # gradient (2-norm) and of the value.
    from handnst.weights import find_weights
    from handnst.networks.vgg import load_vgg19
    found = find_weights()
    make = (lambda **kw: load_vgg19(found, **kw)) if found else (lambda **kw: random_vgg19(0, **kw))
    v32, g32 = _objective_gradient(make(dtype="float32"), size)
    v64, g64 = _objective_gradient(make(dtype="float64", conv="direct"), size)
    error = np.linalg.norm(g32 - g64) / np.linalg.norm(g64)
    assert error <= 1e-3, error
    assert abs(v32 - v64) <= 1e-4 * abs(v64)


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_two_threads_give_the_same_network(monkeypatch, pooling):
    # The elementwise passes split their rows between two threads only above a size these tiny maps
    # do not reach; with that threshold at zero every split runs, and nothing may change.
    from handnst import backend
    net = random_vgg19(3, dtype="float64", pooling=pooling)
    x = np.random.default_rng(5).normal(0, 50, (3, 128, 96))      # conv3_x in F(4x4, 3x3), conv4_x in F(2x2, 3x3)
    layers = ["conv1_2", "conv2_2", "conv3_4", "conv4_2", "conv5_1"]
    want = net.forward(x, layers)
    grads = {n: np.random.default_rng(6).normal(size=v.shape) for n, v in want.items()}
    dwant = net.backward(grads)
    calls = []
    real = backend.split_run

    def spy(fn, n, threads=2, work=None, xp=np):
        calls.append(n)
        return real(fn, n, threads, None, xp)
    monkeypatch.setattr(backend, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(backend, "PARALLEL_THREADS", 2)
    for module in (L.padded, L.winograd, L.winograd2d):     # (F(4x4, 3x3) leaves its parallel work to BLAS)
        monkeypatch.setattr(module, "split_run", spy)
    got = net.forward(x, layers)
    for n in layers:
        np.testing.assert_array_equal(got[n], want[n])
    np.testing.assert_array_equal(net.backward(grads), dwant)
    assert len(calls) > 50 and max(calls) >= 2


def test_split_run_covers_the_range_once_and_passes_errors_on():
    from handnst import backend
    from handnst.backend import split_run
    backend.PARALLEL_THREADS = 2                # HANDNST_THREADS=2: the helper thread takes half
    seen = []
    split_run(lambda lo, hi: seen.append((lo, hi)), 7, threads=2)
    assert sorted(seen) == [(0, 3), (3, 7)]
    seen.clear()
    split_run(lambda lo, hi: seen.append((lo, hi)), 7, threads=2, work=10)      # too little work: one call
    assert seen == [(0, 7)]

    def fail(lo, hi):
        if lo > 0:
            raise ValueError("second half")
    with pytest.raises(ValueError, match="second half"):
        split_run(fail, 4, threads=2)
    seen.clear()
    backend.PARALLEL_THREADS = 1                # the default: everything on the calling thread
    split_run(lambda lo, hi: seen.append((lo, hi)), 7, threads=2)
    assert seen == [(0, 7)]


@pytest.mark.parametrize("command", ["stylize", "apply"])
def test_the_command_line_keeps_freed_memory_by_what_it_runs(monkeypatch, tmp_path, command):
    # An optimization of the pixels keeps its big arrays to the end: they get mappings of their own
    # (no gaps in the heap); the feed-forward network's maps come and go: every freed block is kept.
    import handnst.cli as cli
    from handnst import backend
    asked = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda *a: asked.append(a) or True)
    monkeypatch.chdir(tmp_path)
    argv = [command, "missing.h5" if command == "apply" else "missing.jpg", "missing.jpg", "-o", "out.png", "-q"]
    assert cli.main(argv) != 0                              # the inputs are missing: a clear error
    want = backend.KEEP_BELOW_BYTES if command == "apply" else backend.OWN_MAPPING_FROM_BYTES
    assert asked == [(want,)] and backend.OWN_MAPPING_FROM_BYTES < backend.KEEP_BELOW_BYTES


def test_keep_freed_memory_leaves_a_users_setting_alone(monkeypatch):
    from handnst import backend
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert backend.keep_freed_memory() is False                # the user's choice wins
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    import platform
    if platform.libc_ver()[0] == "glibc":
        assert backend.keep_freed_memory() is True
