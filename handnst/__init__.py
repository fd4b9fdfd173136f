"""handnst: neural style transfer with every gradient written by hand, on NumPy or CuPy.

The public API:

    net = handnst.load_vgg19()                       # pretrained VGG19 (fetch with `handnst weights fetch`)
    x = handnst.preprocess("photo.jpg", size=256)    # (3, H, W) in the input space of the weights
    loss = handnst.StyleTransferLoss(net, content, style)
    value, grad = loss(x)
    result = handnst.stylize("photo.jpg", "painting.jpg", size=256)
    result.image.save("out.png")
    net = handnst.TransformNet(width=32, residual_blocks=5)   # feed-forward style transfer
    y = net.forward(batch); dx, grads = net.backward(dy)      # batch (N, 3, H, W)
    result = handnst.train("painting.jpg", size=128, iters=500)  # trains one (result.net)
    picture = handnst.apply("model.h5", "photo.jpg")            # one forward pass
"""

__version__ = "0.1.0"

_LAZY = {
    "load_vgg19": "handnst.networks.vgg",
    "VGG19": "handnst.networks.vgg",
    "StyleTransferLoss": "handnst.losses",
    "preprocess": "handnst.image",
    "deprocess": "handnst.image",
    "stylize": "handnst.transfer",
    "reconstruct": "handnst.transfer",
    "texture": "handnst.transfer",
    "grid": "handnst.transfer",
    "Result": "handnst.transfer",
    "train": "handnst.train",
    "apply": "handnst.apply",
    "TransformNet": "handnst.networks.transform",
    "load_transform_net": "handnst.networks.transform",
}


def __getattr__(name):
    # Imported on first use, so that `handnst --help` starts fast and a missing optional piece
    # (CuPy) never breaks `import handnst`.
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'handnst' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
