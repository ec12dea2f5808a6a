"""Files every stage writes and reads: atomic writes and JSON records.

* `atomic_path(path)`: write to a temporary file in the same directory, fsync, `os.replace`;
  on an exception the temporary file is removed, so a reader never sees a partial file.
  `remove_stale_temporaries(path)` deletes the temporaries of a process that was killed.
* `write_json` / `read_json`: a JSON record (the theory files), written atomically with NaN
  and inf as null; a file that cannot be read or parsed is a `ValueError` naming it.

The sampler's HDF5 files and checkpoints (`fleos.sampling.io`), the theory records
(`fleos.theory.runs`), the aggregates (`fleos.analysis.aggregate`) and the figures' tables
(`fleos.figures.render`) all write through `atomic_path`, so the stages above the core share
no file code with each other.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it onto ``path``.

    The temporary file lives in the same directory so `os.replace` is an atomic rename on
    POSIX (no cross-filesystem copy). If the body raises, the temporary file is removed and
    ``path`` is left untouched (absent if it did not exist).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
        # fsync the directory so the rename itself survives a crash.
        with contextlib.suppress(OSError):
            dfd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete temporary files that `atomic_path(path)` left behind when its process was
    killed (SIGKILL skips the cleanup). Call only when no other process writes `path`
    (Snakemake's lock guarantees that for workflow outputs). Returns the removed paths."""
    target = Path(path)
    removed = []
    if target.parent.is_dir():
        for tmp in target.parent.glob(f".{target.name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def json_default(o: Any) -> Any:
    """`json.dumps` default for numpy arrays and scalars (sample-file attributes, theory
    JSON)."""
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def write_json(path: str | os.PathLike, doc: Mapping[str, Any]) -> None:
    """Atomic JSON write; NaN/inf are written as null (JSON has no NaN)."""
    def clean(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, (np.ndarray, np.generic)):
            return clean(np.asarray(o).tolist())
        return o

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(clean(dict(doc)), indent=1, default=json_default))


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON document at `path`; a missing or unparsable file raises ValueError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"JSON file {path} is unreadable: {err}") from err


__all__ = ["atomic_path", "json_default", "read_json", "remove_stale_temporaries", "write_json"]
