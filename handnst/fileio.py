"""Atomic file writes: a file appears complete under its name, or not at all.

    with atomic_path("out.png") as tmp:
        image.save(tmp, format="PNG")

writes to a temporary file in the same directory (so the final rename never crosses file systems),
flushes it to disk, gives it the permissions a plainly created file would get (or those of the file
it replaces), and renames it into place with os.replace only when the block finishes. On any
exception, Ctrl-C included, the temporary file is removed and the destination is untouched: an
older file there survives intact.
"""

import contextlib
import math
import os
import stat
import tempfile


def _file_mode_for(path):
    """Permissions for the new file: those of the file it replaces, else 0666 minus the umask
    (mkstemp creates 0600 files, which would make reports and pictures private by accident)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path, suffix=".partial"):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)


def json_safe(obj):
    """Plain JSON for reports (no NaN/Infinity, which strict parsers reject): non-finite numbers become
    null, NumPy scalars plain numbers, tuples lists, keys strings."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and callable(obj.item):  # NumPy scalars
        return json_safe(obj.item())
    return obj
