"""HDF5 sample files and checkpoints, written atomically (`fleos.core.files.atomic_path`).

* `write_samples` / `read_samples`: one HDF5 file per sampling job (layout:
  docs/hdf5-layout.md). The root attribute ``complete = True`` is written last; a file without
  it, or missing a required dataset, or unreadable (truncated, not HDF5) raises
  `CorruptFileError` naming the file and the reason.
* `save_checkpoint` / `load_checkpoint`: the whole sampler state of a job (params, chain keys,
  step, schedule states, accumulators, loss history, ...) as nested dicts of arrays plus JSON
  metadata, written atomically, with a SHA-256 of all arrays (`arrays_checksum`). A corrupt
  checkpoint, or one whose arrays no longer match their checksum (edited by hand), raises
  `CorruptFileError` naming the file; `fleos.sampling.experiment.run_job` then warns, moves it aside
  (``.corrupt``) and restarts from scratch, which gives the same result because runs are
  deterministic. A checkpoint that cannot be written for lack of space (or quota) raises
  `CheckpointWriteError` with that one-line reason; the previous checkpoint stays intact.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from fleos.core.files import atomic_path, json_default

SAMPLES_FORMAT = "fleos-samples/1"
CHECKPOINT_FORMAT = "fleos-checkpoint/1"

# Datasets every sample file must hold (others depend on architecture and config).
REQUIRED_DATASETS = (
    "seeds",
    "f_train/mean",
    "f_train/sq_mean",
    "f_test/mean",
    "f_test/sq_mean",
    "count",
    "loss/sse",
    "loss/epoch",
    "lr/final",
    "snapshots/epoch",
)


class CorruptFileError(ValueError):
    """A sample file or checkpoint that is unreadable, truncated or incomplete."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written: no space left (or over quota) in its folder."""


def arrays_checksum(tree: Mapping) -> str:
    """SHA-256 over the nested arrays of `tree`: key paths, dtypes, shapes and bytes, in
    sorted key order (so it does not depend on the order HDF5 lists them)."""
    h = hashlib.sha256()
    for key, value in sorted(flatten_tree(tree).items()):
        a = np.ascontiguousarray(np.asarray(value))
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def git_revision() -> str | None:
    """The git commit of the fleos source tree, or None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    rev = out.stdout.strip()
    return rev if out.returncode == 0 and rev else None


def flatten_tree(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one flat dict with 'a/b' keys (HDF5 paths); '/' in a key is an error."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if "/" in str(k):
            raise ValueError(f"key {k!r} under {prefix or '/'} contains '/'")
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_tree(v, key + "/"))
        else:
            out[key] = v
    return out


def _write_tree(h5: h5py.File, tree: Mapping, compress: bool) -> None:
    for key, value in flatten_tree(tree).items():
        arr = np.asarray(value)
        kw = {}
        if compress and arr.size >= 1024:
            kw = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
        h5.create_dataset(key, data=arr, **kw)


def _read_tree(group: h5py.Group) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in group.items():
        out[k] = _read_tree(v) if isinstance(v, h5py.Group) else v[()]
    return out


def _json_attr(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=json_default)


def write_samples(path: str | os.PathLike, datasets: Mapping, *, config: Mapping,
                  seeds: tuple[int, ...], n: int, width: int,
                  extra_attrs: Mapping | None = None) -> Path:
    """Write one job's sample file atomically (layout: docs/hdf5-layout.md).

    datasets: nested mapping (groups) of arrays. Root attributes: ``config`` (JSON of the
    validated ExperimentConfig), ``fleos_version``, ``git_revision`` (if available),
    ``seeds``, ``n``, ``width``, ``created`` (UTC ISO time), ``format``, plus `extra_attrs`
    (JSON-encoded if not scalars/strings), and finally ``complete = True``.
    """
    from fleos import __version__

    flat = flatten_tree(datasets)
    missing = [k for k in REQUIRED_DATASETS if k not in flat]
    if missing:
        raise ValueError(f"write_samples({path}): missing required datasets {missing}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        _write_tree(h5, datasets, compress=True)
        a = h5.attrs
        a["format"] = SAMPLES_FORMAT
        a["config"] = _json_attr(config)
        a["fleos_version"] = __version__
        a["git_revision"] = git_revision() or ""
        a["seeds"] = np.asarray(seeds, dtype=np.int64)
        a["n"] = int(n)
        a["width"] = int(width)
        a["created"] = _dt.datetime.now(_dt.UTC).isoformat()
        for k, v in (extra_attrs or {}).items():
            a[k] = v if isinstance(v, (str, int, float, np.number)) else _json_attr(v)
        # Last: a reader trusts a file only with this flag (belt and braces with the rename).
        a["complete"] = True
    return Path(path)


def read_samples(path: str | os.PathLike) -> dict[str, Any]:
    """Read a sample file into ``{"attrs": {...}, "config": dict, <datasets as nested dicts>}``.

    Raises FileNotFoundError for a missing file and `CorruptFileError` (naming the file and why)
    if it is not a readable HDF5 file, lacks ``complete = True`` or a required dataset.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sample file {p} does not exist")
    try:
        with h5py.File(p, "r") as h5:
            attrs = {k: _attr_value(v) for k, v in h5.attrs.items()}
            if attrs.get("format") != SAMPLES_FORMAT:
                raise CorruptFileError(f"sample file {p}: format attribute is "
                                       f"{attrs.get('format')!r}, expected {SAMPLES_FORMAT!r}")
            if not attrs.get("complete", False):
                raise CorruptFileError(f"sample file {p} is incomplete (no 'complete' flag): "
                                       "the job that wrote it did not finish")
            missing = [k for k in REQUIRED_DATASETS if k not in h5]
            if missing:
                raise CorruptFileError(f"sample file {p} lacks required datasets {missing}")
            data = _read_tree(h5)
    except CorruptFileError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError) as e:
        raise CorruptFileError(f"sample file {p} is unreadable (truncated or not HDF5?): "
                               f"{e}") from e
    data["attrs"] = attrs
    data["config"] = json.loads(attrs["config"])
    return data


def _attr_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def save_checkpoint(path: str | os.PathLike, state: Mapping) -> Path:
    """Atomically save a sampler state: ``state["arrays"]`` (nested dict of arrays) and
    ``state["meta"]`` (JSON-serialisable: schedule states, events, config hash, ...)."""
    if set(state) - {"arrays", "meta"}:
        raise ValueError(f"checkpoint state keys must be 'arrays' and 'meta', got {sorted(state)}")
    try:
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
            arrays = h5.create_group("arrays")
            _write_tree(arrays, state.get("arrays", {}), compress=False)
            h5.attrs["format"] = CHECKPOINT_FORMAT
            h5.attrs["meta"] = _json_attr(state.get("meta", {}))
            h5.attrs["arrays_checksum"] = arrays_checksum(state.get("arrays", {}))
            h5.attrs["complete"] = True
    except OSError as e:
        # h5py reports a full disk as a generic OSError whose text names the errno.
        if e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e) \
                or "quota" in str(e).lower():
            raise CheckpointWriteError(
                f"cannot write checkpoint {path}: no space left on device (or over quota) in "
                f"{Path(path).parent}; free space there or move results/checkpoints "
                f"(the previous checkpoint, if any, is intact)") from None
        raise
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`; `CorruptFileError` names file and why."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    try:
        with h5py.File(p, "r") as h5:
            if _attr_value(h5.attrs.get("format")) != CHECKPOINT_FORMAT:
                raise CorruptFileError(f"checkpoint {p}: not a fleos checkpoint "
                                       f"(format {h5.attrs.get('format')!r})")
            if not bool(h5.attrs.get("complete", False)):
                raise CorruptFileError(f"checkpoint {p} is incomplete")
            arrays = _read_tree(h5["arrays"]) if "arrays" in h5 else {}
            meta = json.loads(_attr_value(h5.attrs["meta"]))
            stored = _attr_value(h5.attrs.get("arrays_checksum", ""))
            if stored != arrays_checksum(arrays):
                raise CorruptFileError(
                    f"checkpoint {p}: its arrays do not match their stored checksum "
                    f"(changed after it was written)" if stored else
                    f"checkpoint {p} has no arrays checksum (written by an older fleos)")
    except CorruptFileError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError) as e:
        raise CorruptFileError(f"checkpoint {p} is unreadable (truncated or not HDF5?): "
                               f"{e}") from e
    return {"arrays": arrays, "meta": meta}
