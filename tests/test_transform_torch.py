"""An independent check: the same layout written with PyTorch modules and autograd, loaded from the
weights file handnst writes, must give the same output, input gradient and parameter gradients, in
float64 and in float32. Skipped where PyTorch is not installed (handnst itself never imports it)."""

import h5py
import numpy as np
import pytest

from handnst.networks.transform import TransformNet, load_transform_net

torch = pytest.importorskip("torch")
nn = torch.nn


class TorchTransformNet(nn.Module):
    """The issue's layout with stock PyTorch modules: ReflectionPad2d + Conv2d, InstanceNorm2d(affine),
    nearest Upsample; parameter names map to handnst's by '.' -> '/' and weight/bias -> scale/shift."""

    def __init__(self, width, blocks):
        super().__init__()
        w = width

        def conv(c_in, c_out, k, stride=1):
            return nn.Sequential(nn.ReflectionPad2d(k // 2), nn.Conv2d(c_in, c_out, k, stride))

        def norm(c):
            return nn.InstanceNorm2d(c, affine=True, eps=1e-5)

        self.convs = nn.ModuleDict()
        self.norms = nn.ModuleDict()
        for name, c_in, c_out, k, s in (("conv1", 3, w, 9, 1), ("conv2", w, 2 * w, 3, 2), ("conv3", 2 * w, 4 * w, 3, 2),
                                        ("conv4", 4 * w, 2 * w, 3, 1), ("conv5", 2 * w, w, 3, 1), ("conv6", w, 3, 9, 1)):
            self.convs[name] = conv(c_in, c_out, k, s)
            if name != "conv6":
                self.norms[name.replace("conv", "norm")] = norm(c_out)
        for r in range(1, blocks + 1):
            for i in (1, 2):
                self.convs[f"res{r}-conv{i}"] = conv(4 * w, 4 * w, 3)
                self.norms[f"res{r}-norm{i}"] = norm(4 * w)
        self.blocks = blocks
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x):
        c, n, relu = self.convs, self.norms, torch.relu
        h = relu(n["norm1"](c["conv1"](x)))
        h = relu(n["norm2"](c["conv2"](h)))
        h = relu(n["norm3"](c["conv3"](h)))
        for r in range(1, self.blocks + 1):
            t = relu(n[f"res{r}-norm1"](c[f"res{r}-conv1"](h)))
            h = h + n[f"res{r}-norm2"](c[f"res{r}-conv2"](t))
        h = relu(n["norm4"](c["conv4"](self.up(h))))
        h = relu(n["norm5"](c["conv5"](self.up(h))))
        return c["conv6"](h)

    def handnst_names(self):
        """{torch parameter -> handnst dataset path}."""
        names = {}
        for key, module in list(self.convs.items()) + list(self.norms.items()):
            path = key.replace("-", "/")
            for pname, param in module.named_parameters():
                leaf = pname.rsplit(".", 1)[-1]
                if key in self.norms:
                    leaf = {"weight": "scale", "bias": "shift"}[leaf]
                names[param] = f"{path}/{leaf}"
        return names


def _torch_from_file(path, dtype):
    with h5py.File(path, "r") as f:
        model = TorchTransformNet(int(f.attrs["width"]), int(f.attrs["residual_blocks"])).to(dtype)
        names = model.handnst_names()
        assert len(names) == len(list(model.parameters()))
        with torch.no_grad():
            for param, name in names.items():
                param.copy_(torch.from_numpy(f[name][()]).to(dtype))
    return model, names


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 2e-4)])
def test_forward_and_backward_match_pytorch_autograd(tmp_path, dtype, tol):
    torch_dtype = getattr(torch, dtype)
    trained = TransformNet(width=4, residual_blocks=2, seed=7, dtype="float64")
    rng = np.random.default_rng(3)
    for name, value in trained.params.items():     # move scales and shifts away from 1 and 0
        if "norm" in name:
            trained.params[name] = value + rng.normal(scale=0.3, size=value.shape)
    path = tmp_path / "model.h5"
    trained.save(path)
    net = load_transform_net(path, dtype=dtype)
    model, names = _torch_from_file(path, torch_dtype)

    x = rng.normal(scale=30.0, size=(2, 3, 16, 12))
    r = rng.normal(size=x.shape)
    y = net.forward(x)
    dx, grads = net.backward(r)

    xt = torch.tensor(x, dtype=torch_dtype, requires_grad=True)
    yt = model(xt)
    (yt * torch.tensor(r, dtype=torch_dtype)).sum().backward()

    def same(ours, theirs, what):
        theirs = theirs.detach().numpy()
        scale = max(np.abs(theirs).max(), 1e-30)
        err = np.abs(ours - theirs).max() / scale
        assert err <= tol, f"{what}: max difference {err:.1e} of the largest value"

    same(y, yt, "output")
    same(dx, xt.grad, "input gradient")
    largest = max(float(p.grad.abs().max()) for p in model.parameters())
    for param, name in names.items():
        # gradients that are zero in exact arithmetic (the biases in front of instance norm, the
        # shifts of the residual blocks' second normalization) are PyTorch's rounding noise: they
        # are compared on the scale of the largest gradient of the network
        theirs = param.grad.numpy()
        scale = max(float(np.abs(theirs).max()), 1e-3 * largest)
        err = float(np.abs(grads[name] - theirs).max()) / scale
        assert err <= tol, f"{name}: max difference {err:.1e} of the gradient's scale"
