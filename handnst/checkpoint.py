"""What a training run carries from one step to the next, and the file that keeps it.

    adam = Adam(net.params, lr=1e-3)
    adam.step(net.params, grads)                     # every parameter, in place
    save_checkpoint(path, net, adam, crops.state(), step, history, options, elapsed)
    state = load_checkpoint(path)                    # host arrays and the JSON parts

A checkpoint is an HDF5 file, written atomically (a temporary file renamed into place): the groups
params/, adam_m/ and adam_v/ hold one dataset per parameter (named like net.params), and the
attributes hold the step, Adam's step count, the seconds trained so far, the crop generator's state,
the loss history and the run's options (all JSON). Everything is stored in the arrays' own dtype, so
a resumed run starts from exactly the numbers the interrupted one had.
"""

import json
import math
import os

from handnst.backend import array_module, to_host
from handnst.errors import InputError, RunError

DEFAULT_LR = 1e-3
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
CHECKPOINT_FORMAT = "handnst-train-checkpoint"
CHECKPOINT_VERSION = 1


# ------------------------------------------------------------------------------------------ Adam

class Adam:
    """Adam (Kingma & Ba 2015) on a dict of parameter arrays, updated in place:

        m <- b1 m + (1 - b1) g            v <- b2 v + (1 - b2) g^2
        p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, params, lr=DEFAULT_LR, betas=ADAM_BETAS, eps=ADAM_EPS):
        self.lr, self.betas, self.eps = float(lr), tuple(betas), float(eps)
        self.m = {k: array_module(p).zeros_like(p) for k, p in params.items()}
        self.v = {k: array_module(p).zeros_like(p) for k, p in params.items()}
        self.t = 0

    def step(self, params, grads):
        b1, b2 = self.betas
        self.t += 1
        c1 = 1.0 - b1 ** self.t
        c2 = 1.0 - b2 ** self.t
        step_size = self.lr / c1
        inv_sqrt_c2 = 1.0 / math.sqrt(c2)
        for k, p in params.items():
            g = grads[k]
            m, v = self.m[k], self.v[k]
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            denom = array_module(v).sqrt(v)
            denom *= inv_sqrt_c2
            denom += self.eps
            p -= step_size * m / denom


# ------------------------------------------------------------------------------------ checkpoints

def save_checkpoint(path, net, adam, crops_state, step, history, options, elapsed):
    """Write everything a run needs to continue, atomically (HDF5): parameters, Adam, data, step."""
    import h5py
    from handnst.fileio import atomic_path
    path = os.fspath(path)
    try:
        with atomic_path(path, suffix=".h5.tmp") as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs["format"] = CHECKPOINT_FORMAT
                f.attrs["format_version"] = CHECKPOINT_VERSION
                f.attrs["step"] = int(step)
                f.attrs["adam_t"] = int(adam.t)
                f.attrs["elapsed"] = float(elapsed)
                f.attrs["options"] = json.dumps(options)
                f.attrs["data_state"] = json.dumps(crops_state)
                f.attrs["history"] = json.dumps(history)
                for group, arrays in (("params", net.params), ("adam_m", adam.m), ("adam_v", adam.v)):
                    g = f.create_group(group)
                    for k, a in arrays.items():
                        g.create_dataset(k, data=to_host(a))
    except OSError as exc:
        raise RunError(f"could not write the checkpoint {path!r} ({exc}); the previous one, if any, is intact") from exc
    return path


def load_checkpoint(path):
    """The checkpoint's contents as a dict (host arrays); InputError for anything that is not one."""
    import h5py
    shown = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"the checkpoint {shown!r} does not exist; start without --resume, or give the file "
                         "written by --checkpoint-every (MODEL.ckpt.h5 by default)")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise InputError(f"{shown!r} is not a training checkpoint (not an HDF5 file)") from None
    with f:
        if f.attrs.get("format") != CHECKPOINT_FORMAT:
            raise InputError(f"{shown!r} is not a handnst training checkpoint (a model file? resume needs the "
                             "checkpoint that --checkpoint-every or Ctrl-C wrote)")
        try:
            out = {"step": int(f.attrs["step"]), "adam_t": int(f.attrs["adam_t"]),
                   "elapsed": float(f.attrs["elapsed"]), "options": json.loads(f.attrs["options"]),
                   "data_state": json.loads(f.attrs["data_state"]), "history": json.loads(f.attrs["history"])}
            for group in ("params", "adam_m", "adam_v"):
                arrays = {}
                f[group].visititems(lambda name, obj, a=arrays: a.__setitem__(name, obj[()]) if hasattr(obj, "shape") else None)
                out[group] = arrays
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(f"the checkpoint {shown!r} is damaged ({exc}); start again without --resume") from None
    return out


def default_checkpoint_path(output):
    """MODEL.h5 -> MODEL.ckpt.h5, next to the model."""
    stem, ext = os.path.splitext(os.fspath(output))
    return stem + ".ckpt" + (ext or ".h5")
