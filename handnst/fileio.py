"""Atomic file writes: a file appears complete under its name, or not at all.

    with atomic_path("out.png") as tmp:
        image.save(tmp, format="PNG")

writes to a temporary file in the same directory (so the final rename never crosses file systems)
and renames it into place with os.replace only when the block finishes. On any exception, Ctrl-C
included, the temporary file is removed and the destination is untouched.
"""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=suffix if suffix is not None else ".partial",
                               dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
