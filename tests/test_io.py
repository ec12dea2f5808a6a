"""fleos.core.files (atomic writes) and fleos.sampling.io (sample-file validation, checkpoints)."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from fleos.core.files import atomic_path, remove_stale_temporaries
from fleos.sampling.io import (
    REQUIRED_DATASETS,
    CorruptFileError,
    load_checkpoint,
    read_samples,
    save_checkpoint,
    write_samples,
)


def _datasets(n_chains: int = 2) -> dict:
    rng = np.random.default_rng(0)
    tree: dict = {}
    for key in REQUIRED_DATASETS:
        node = tree
        parts = key.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = rng.normal(size=(n_chains, 3))
    tree["sigma"] = {"mean": rng.normal(size=(n_chains, 40, 40))}  # big enough to compress
    return tree


def _write(path) -> dict:
    ds = _datasets()
    write_samples(path, ds, config={"name": "cnn2", "sigma2": 0.1}, seeds=(0, 1), n=8, width=4,
                  extra_attrs={"schedule_states": [{"lr": 1e-3}], "steps_done": 10})
    return ds


def test_atomic_path_success_and_failure(tmp_path) -> None:
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("ok")
        assert not target.exists()  # nothing visible before the rename
    assert target.read_text() == "ok"

    other = tmp_path / "sub" / "fail.txt"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(other) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert not other.exists()
    assert sorted(os.listdir(tmp_path / "sub")) == ["out.txt"]  # temp file removed


def test_exception_mid_write_leaves_no_sample_file(tmp_path) -> None:
    out = tmp_path / "s.h5"
    bad = _datasets()
    bad["weird"] = {"x": object()}  # h5py cannot store this: fails after other datasets
    with pytest.raises(TypeError):
        write_samples(out, bad, config={}, seeds=(0,), n=1, width=1)
    assert not out.exists() and os.listdir(tmp_path) == []
    # an existing good file is not clobbered by a failed rewrite
    _write(out)
    with pytest.raises(TypeError):
        write_samples(out, bad, config={}, seeds=(0,), n=1, width=1)
    read_samples(out)


def test_roundtrip_and_attrs(tmp_path) -> None:
    out = tmp_path / "s.h5"
    ds = _write(out)
    r = read_samples(out)
    np.testing.assert_array_equal(r["f_train"]["mean"], ds["f_train"]["mean"])
    np.testing.assert_array_equal(r["sigma"]["mean"], ds["sigma"]["mean"])
    a = r["attrs"]
    assert a["complete"] is True and a["n"] == 8 and a["width"] == 4
    assert list(a["seeds"]) == [0, 1] and a["fleos_version"]
    assert "created" in a and "git_revision" in a
    assert r["config"] == {"name": "cnn2", "sigma2": 0.1}
    assert a["steps_done"] == 10 and "lr" in a["schedule_states"]


def test_missing_required_dataset_refused_on_write(tmp_path) -> None:
    ds = _datasets()
    del ds["count"]
    with pytest.raises(ValueError, match=r"missing required datasets \['count'\]"):
        write_samples(tmp_path / "x.h5", ds, config={}, seeds=(0,), n=1, width=1)


def test_read_rejects_truncated_file(tmp_path) -> None:
    out = tmp_path / "s.h5"
    _write(out)
    size = out.stat().st_size
    with open(out, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(CorruptFileError) as e:
        read_samples(out)
    assert str(out) in str(e.value) and "unreadable" in str(e.value)


def test_read_rejects_garbage_incomplete_and_missing(tmp_path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(CorruptFileError, match="junk.h5"):
        read_samples(junk)
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        read_samples(tmp_path / "nope.h5")

    out = tmp_path / "s.h5"
    _write(out)
    with h5py.File(out, "r+") as h5:
        del h5.attrs["complete"]
    with pytest.raises(CorruptFileError, match=r"s\.h5 is incomplete"):
        read_samples(out)

    _write(out)
    with h5py.File(out, "r+") as h5:
        del h5["loss/sse"]
    with pytest.raises(CorruptFileError, match=r"lacks required datasets \['loss/sse'\]"):
        read_samples(out)


def test_checkpoint_roundtrip_and_corruption(tmp_path) -> None:
    p = tmp_path / "c.ckpt"
    params = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "a": {"b": np.ones(2)}}
    keys = np.array([[0, 1], [2, 3]], dtype=np.uint32)
    meta = {"step": 500, "sched": [{"lr": 1e-4, "events": [{"epoch": 0}]}], "hash": "abc"}
    save_checkpoint(p, {"arrays": {"params": params, "keys": keys,
                                   "empty": np.zeros((0, 2))}, "meta": meta})
    c = load_checkpoint(p)
    assert c["meta"] == meta
    np.testing.assert_array_equal(c["arrays"]["params"]["w"], params["w"])
    assert c["arrays"]["params"]["w"].dtype == np.float32
    assert c["arrays"]["keys"].dtype == np.uint32
    assert c["arrays"]["empty"].shape == (0, 2)

    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(CorruptFileError, match=r"c\.ckpt is unreadable"):
        load_checkpoint(p)
    with pytest.raises(ValueError, match="'arrays' and 'meta'"):
        save_checkpoint(p, {"params": params})


def test_remove_stale_temporaries(tmp_path) -> None:
    target = tmp_path / "job.ckpt"
    stale = tmp_path / ".job.ckpt.abc123.tmp"  # what a SIGKILLed atomic_path leaves
    stale.write_text("x")
    other = tmp_path / ".other.ckpt.abc.tmp"
    other.write_text("y")
    assert remove_stale_temporaries(target) == [stale]
    assert not stale.exists() and other.exists()
