"""Write a file so that a reader (or a kill mid-write) never sees half of it.

The one way files are replaced in this project: checkpoints, `summary.json`, the sweep
tables and the image-check cache all go through `atomic_write`.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", durable: bool = False) -> Iterator[IO]:
    """Open a temporary file beside `path`; on leaving the block, rename it into place.

    The temporary file lives in the target's folder, so the final `os.replace` is a rename on
    one filesystem, never a copy (Lightning's own "atomic" save moves a file out of the system
    temp folder, which on a node-local disk is a copy that a kill can cut short). With
    `durable=True` the data and the rename are also fsynced, so a power cut keeps either the
    old or the new file (used for checkpoints). If the block raises, `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace `path` with `text` in one step (see `atomic_write`)."""
    with atomic_write(path) as f:
        f.write(text)
