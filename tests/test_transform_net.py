"""The transformation network: its layout, forward and backward passes (finite differences in
float64), the exactly-zero biases in front of instance normalization, and its weights file."""

import os

import h5py
import numpy as np
import pytest

import handnst
from handnst import layers as L
from handnst.backend import get_xp
from handnst.errors import InputError, RunError
from handnst.gradcheck import OBJECTIVE_TOLERANCE
from handnst.gradcheck_transform import transform_net_checks
from handnst.networks.transform import (FORMAT_NAME, TransformNet, load_transform_net, parameter_count,
                                        parameter_shapes)

from backends import BACKENDS


def tiny(**kw):
    kw.setdefault("dtype", "float64")
    return TransformNet(width=4, residual_blocks=2, **kw)


def batch(shape=(2, 3, 12, 8), seed=0):
    return np.random.default_rng(seed).normal(size=shape)


# ------------------------------------------------------------------------------------------ layout

def test_full_network_has_exactly_the_published_parameter_count():
    net = TransformNet()
    assert net.parameter_count == parameter_count(32, 5) == 1_679_235
    assert all(p.dtype == np.float32 for p in net.params.values())


def test_parameter_names_and_shapes_follow_the_layout():
    shapes = parameter_shapes(32, 5)
    assert shapes["conv1/weight"] == (32, 3, 9, 9)
    assert shapes["conv2/weight"] == (64, 32, 3, 3)
    assert shapes["conv3/weight"] == (128, 64, 3, 3)
    assert shapes["res1/conv1/weight"] == shapes["res5/conv2/weight"] == (128, 128, 3, 3)
    assert shapes["res3/norm2/scale"] == shapes["res3/norm2/shift"] == (128,)
    assert shapes["conv4/weight"] == (64, 128, 3, 3)
    assert shapes["conv5/weight"] == (32, 64, 3, 3)
    assert shapes["conv6/weight"] == (3, 32, 9, 9) and shapes["conv6/bias"] == (3,)
    assert "norm6/scale" not in shapes and "res6/conv1/weight" not in shapes
    convs = [n for n in shapes if n.endswith("/weight")]
    assert len(convs) == 3 + 2 * 5 + 3
    assert all(n.replace("/weight", "/bias") in shapes for n in convs)
    assert parameter_count(16, 5) * 4 < 1.8e6          # the half network is about 1.7 MB in float32


def test_initialization_is_deterministic_by_seed_and_pytorch_like():
    a, b, c = TransformNet(8, 1, seed=3), TransformNet(8, 1, seed=3), TransformNet(8, 1, seed=4)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert not np.array_equal(a.params["conv1/weight"], c.params["conv1/weight"])
    w = a.params["res1/conv1/weight"]
    assert np.abs(w).max() <= 1 / np.sqrt(32 * 9) and w.std() > 0.5 / np.sqrt(3 * 32 * 9)
    np.testing.assert_array_equal(a.params["norm1/scale"], 1)
    np.testing.assert_array_equal(a.params["norm1/shift"], 0)


def test_lazy_public_names():
    assert handnst.TransformNet is TransformNet
    assert handnst.load_transform_net is load_transform_net


# ----------------------------------------------------------------------------- forward / backward

@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_keeps_the_shape_and_backward_returns_every_gradient(backend):
    net = tiny(backend=backend)
    xp = get_xp(backend)
    x = xp.asarray(batch((3, 3, 16, 8)))
    y = net.forward(x)
    assert y.shape == x.shape and y.dtype == np.float64
    dx, grads = net.backward(xp.ones_like(y))
    assert dx.shape == x.shape
    assert list(grads) == list(net.params)
    assert all(grads[n].shape == net.params[n].shape for n in grads)


def test_float32_forward_and_backward_agree_with_float64():
    n64 = tiny(seed=1)
    n32 = tiny(seed=1, dtype="float32")
    x = batch()
    y64, y32 = n64.forward(x), n32.forward(x)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4 * np.abs(y64).max())
    r = np.random.default_rng(5).normal(size=x.shape)
    dx64, g64 = n64.backward(r)
    dx32, g32 = n32.backward(r)
    np.testing.assert_allclose(dx32, dx64, atol=1e-4 * np.abs(dx64).max())
    largest = max(float(np.abs(g).max()) for g in g64.values())
    for name in g64:   # some gradients are zero in exact arithmetic (see below): compare on one scale
        np.testing.assert_allclose(g32[name], g64[name], atol=1e-5 * largest)


def test_without_residual_blocks_and_without_input_gradient():
    net = TransformNet(width=2, residual_blocks=0, dtype="float64")
    x = batch((1, 3, 8, 12))
    r = np.random.default_rng(1).normal(size=x.shape)
    net.forward(x)
    dx, grads = net.backward(r)
    net.forward(x)
    none, grads2 = net.backward(r, need_dx=False)
    assert none is None
    for name in grads:
        np.testing.assert_array_equal(grads[name], grads2[name])


def _check_names():
    return [name for name, _, _ in transform_net_checks("numpy")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("index", range(len(_check_names())), ids=_check_names())
def test_whole_network_gradients_match_finite_differences(backend, index):
    name, fn, tol = transform_net_checks(backend)[index]
    assert tol == OBJECTIVE_TOLERANCE
    err = fn()
    assert err <= tol, f"{name}: max relative error {err:.2e} > {tol:.0e}"


def test_residual_block_follows_its_definition():
    # With only res1, the 1/4-size map after res1 is h + norm2(conv2(relu(norm1(conv1(h))))):
    # recompute it from the layers and compare with the network's own output path.
    net = TransformNet(width=2, residual_blocks=1, dtype="float64", seed=2)
    p = net.params
    x = batch((1, 3, 8, 8), seed=3)

    def conv(name, h, stride):
        w = p[f"{name}/weight"]
        return L.conv_batch_forward(L.reflection_pad_forward(h, w.shape[2] // 2)[0], w, p[f"{name}/bias"], stride)[0]

    def norm(name, h):
        return L.instance_norm_forward(h, p[f"{name}/scale"], p[f"{name}/shift"])[0]

    relu = lambda h: np.maximum(h, 0)                                       # noqa: E731
    up = lambda h: L.upsample2x_forward(h)[0]                               # noqa: E731
    h = relu(norm("norm1", conv("conv1", x, 1)))
    h = relu(norm("norm2", conv("conv2", h, 2)))
    h = relu(norm("norm3", conv("conv3", h, 2)))
    h = h + norm("res1/norm2", conv("res1/conv2", relu(norm("res1/norm1", conv("res1/conv1", h, 1))), 1))
    h = relu(norm("norm4", conv("conv4", up(h), 1)))
    h = relu(norm("norm5", conv("conv5", up(h), 1)))
    y = conv("conv6", h, 1)
    np.testing.assert_allclose(net.forward(x), y, rtol=1e-12, atol=1e-12)


def test_biases_in_front_of_instance_norm_get_exactly_zero_gradient():
    net = tiny(seed=4)
    x = batch(seed=5)
    r = np.random.default_rng(6).normal(size=x.shape)
    y = net.forward(x)
    _, grads = net.backward(r)
    normalized = [n for n in grads if n.endswith("/bias") and n != "conv6/bias"]
    assert len(normalized) == 3 + 2 * 2 + 2
    for name in normalized:
        assert np.all(grads[name] == 0.0), name
    # conv6 has no normalization after it: its bias gradient is the plain sum of dL/dy per channel.
    np.testing.assert_allclose(grads["conv6/bias"], r.sum(axis=(0, 2, 3)), rtol=1e-12)

    # Why: a bias adds a constant to its output channel, and instance normalization subtracts the
    # channel's mean, so the output does not depend on the bias at all ...
    for name in normalized:
        shifted = tiny(seed=4)
        shifted.params[name] = shifted.params[name] + 10.0
        np.testing.assert_allclose(shifted.forward(x), y, rtol=1e-9, atol=1e-9 * np.abs(y).max())
    # ... and, in the backward pass, the gradient reaching the convolution's output (the normalization's
    # input gradient) sums to zero over every channel of every image: summing it for the bias, as the
    # convolution's own backward pass does, gives zero up to rounding.
    h = np.random.default_rng(7).normal(size=(2, 4, 6, 4))
    out, cache = L.instance_norm_forward(h, np.full(4, 1.5), np.zeros(4))
    dh, _, _ = L.instance_norm_backward(np.random.default_rng(8).normal(size=out.shape), cache)
    assert np.abs(dh.sum(axis=(0, 2, 3))).max() < 1e-13 * np.abs(dh).sum()


# ------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("shape,match", [((3, 16, 16), r"\(N, 3, H, W\)"), ((1, 1, 16, 16), r"\(N, 3, H, W\)"),
                                         ((1, 3, 16, 10), "multiples of 4"), ((1, 3, 4, 8), "at least 8")])
def test_bad_input_shapes_are_one_line_errors(shape, match):
    with pytest.raises(InputError, match=match) as err:
        tiny().forward(np.zeros(shape))
    assert "\n" not in str(err.value)


def test_backward_needs_a_cached_forward_pass():
    net = tiny()
    with pytest.raises(RunError):
        net.backward(np.zeros((1, 3, 8, 8)))
    y = net.forward(np.zeros((1, 3, 8, 8)), cache=False)
    with pytest.raises(RunError):
        net.backward(y)
    net.forward(np.zeros((1, 3, 8, 8)))
    net.backward(y)
    with pytest.raises(RunError):
        net.backward(y)


def test_bad_architecture_is_refused():
    for width, blocks in ((0, 5), (32, -1), (2.5, 1), ("8", 1)):
        with pytest.raises(InputError):
            TransformNet(width, blocks)


# ---------------------------------------------------------------------------------- weights file

def test_save_and_load_round_trip(tmp_path):
    net = tiny(seed=9, dtype="float32")
    attrs = {"style_image": "swirls.jpg", "content_weight": 1.0, "iterations": 60,
             "options": {"lr": 1e-3, "batch": 2, "style_layers": ["relu1_2", "relu2_2"]},
             "loss_summary": {"first": 12.5, "last": 3.25}, "note": None}
    path = net.save(tmp_path / "model.h5", attrs=attrs)
    assert os.listdir(tmp_path) == ["model.h5"]                        # no temporary file left
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT_NAME and f.attrs["format_version"] == 1
        assert f.attrs["width"] == 4 and f.attrs["residual_blocks"] == 2
        assert f["res2/norm1/scale"].shape == (16,) and f["conv1/weight"].shape == (4, 3, 9, 9)
        assert f["conv1/weight"].dtype == np.float32
        names = []
        f.visititems(lambda name, node: names.append(name) if isinstance(node, h5py.Dataset) else None)
        assert sorted(names) == sorted(net.params)
    loaded = load_transform_net(path)
    assert (loaded.width, loaded.residual_blocks) == (4, 2)
    assert loaded.attrs == attrs
    for name in net.params:
        np.testing.assert_array_equal(loaded.params[name], net.params[name])
    x = batch()
    np.testing.assert_array_equal(loaded.forward(x), net.forward(x))
    as64 = load_transform_net(path, dtype="float64")
    assert as64.params["conv1/weight"].dtype == np.float64


def test_save_refuses_reserved_attributes_and_bad_folders(tmp_path):
    net = tiny()
    with pytest.raises(ValueError):
        net.save(tmp_path / "m.h5", attrs={"width": 3})
    with pytest.raises(InputError):
        net.save(tmp_path / "no" / "such" / "m.h5")
    assert os.listdir(tmp_path) == []


def test_saving_over_an_existing_model_replaces_it_whole(tmp_path):
    path = tmp_path / "model.h5"
    tiny(seed=1).save(path)
    tiny(seed=2).save(path)
    np.testing.assert_array_equal(load_transform_net(path).params["conv1/weight"],
                                  tiny(seed=2, dtype="float32").params["conv1/weight"])
    assert os.listdir(tmp_path) == ["model.h5"]


def _damaged(tmp_path, edit, name="damaged.h5"):
    path = tmp_path / name
    tiny().save(path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _nan(f):
    f["res1/conv2/weight"][0, 0, 0, 0] = np.nan


def _wrong_shape(f):
    del f["norm3/scale"]
    f["norm3/scale"] = np.ones(5, np.float32)


@pytest.mark.parametrize("edit,match", [
    (lambda f: f.__delitem__("res2/norm2/shift"), "res2/norm2/shift is missing"),
    (_wrong_shape, r"norm3/scale has shape \(5,\), expected \(16,\)"),
    (_nan, "res1/conv2/weight contains NaN"),
    (lambda f: f.attrs.__setitem__("format", "something-else"), "not a handnst transformation network"),
    (lambda f: f.attrs.__setitem__("format", "handnst-vgg19"), "VGG19 weights file"),
    (lambda f: f.attrs.__delitem__("width"), "width and residual_blocks"),
    (lambda f: f.attrs.__setitem__("format_version", 7), "newer than this handnst"),
])
def test_damaged_or_foreign_model_files_are_one_line_errors(tmp_path, edit, match):
    path = _damaged(tmp_path, edit)
    with pytest.raises(InputError, match=match) as err:
        load_transform_net(path)
    assert "\n" not in str(err.value)


def test_non_model_files_are_one_line_errors(tmp_path):
    text = tmp_path / "photo.jpg"
    text.write_bytes(b"\xff\xd8\xff\xe0 not really a model")
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(3)
    vgg = tmp_path / "vgg19.h5"
    with h5py.File(vgg, "w") as f:            # what `handnst weights fetch` writes, in miniature
        f.attrs["format"] = "handnst-vgg19"
        f.attrs["format_version"] = 1
        f["conv1_1/weight"] = np.zeros((64, 3, 3, 3), np.float32)
    for path, match in ((tmp_path / "missing.h5", "does not exist"), (tmp_path, "is a folder"),
                        (text, "not an HDF5 file"), (plain, "not a handnst transformation network"),
                        (vgg, "VGG19 weights file")):
        with pytest.raises(InputError, match=match) as err:
            load_transform_net(path)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("shape", [(2, 3, 16, 12), (1, 3, 8, 8), (1, 3, 20, 28)])
def test_applying_path_equals_the_training_path(shape):
    """forward(cache=False) runs the residual blocks and the decoder in the padded layout (other
    kernels, other order of sums); in float64 it must give the cached path's output to rounding."""
    net = TransformNet(4, 2, seed=3, dtype="float64")
    r = np.random.default_rng(4)
    for value in net.params.values():                 # shifts and scales away from their initial 0 and 1
        value += r.normal(size=value.shape) * 0.1
    x = r.normal(size=shape) * 50
    cached = net.forward(x)
    applied = net.forward(x, cache=False)
    np.testing.assert_allclose(applied, cached, rtol=1e-10, atol=1e-10 * np.abs(cached).max())
