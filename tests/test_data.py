"""Tests of fleos.nets.data and fleos.nets.datasets: teachers, seeds, Gaussian inputs, npz files,
CIFAR-10 and the stand-in."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import fleos  # noqa: F401  (enables float64)
from fleos.nets.data import make_dataset, teacher_model
from fleos.nets.datasets import (
    CIFAR10_VEHICLES_VS_ANIMALS,
    Dataset,
    load_cifar10_subset,
    load_dataset,
    save_dataset,
)

CFGS = {
    "fcn": {"d": 5, "sigma_w2": 2.0, "sigma_a2": 2.0, "scaling": "mean_field"},
    "cnn2": {"S": 4, "N": 3, "sigma_w2": 2.0, "sigma_a2": 2.0},
    "cnn3": {"N": 2, "S0": 3, "S1": 4, "sigma_w2": 2.0, "sigma_v2": 2.0, "sigma_a2": 15.0},
}


def _erf(x):
    return np.vectorize(math.erf)(x)


# ---------------------------------------------------------------------------------------------
# Teachers and seeds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(CFGS))
def test_seeds_determinism_and_independence(arch):
    cfg = CFGS[arch]
    a = make_dataset(arch, cfg, 10, 7, teacher_seed=3, data_seed=1)
    b = make_dataset(arch, cfg, 10, 7, teacher_seed=3, data_seed=1)
    for f in ("X", "y", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert getattr(a, f).dtype == np.float64
    assert a.teacher.keys() == b.teacher.keys()
    for k in a.teacher:
        np.testing.assert_array_equal(a.teacher[k], b.teacher[k])

    # The teacher depends on teacher_seed only: not on n, not on data_seed.
    c = make_dataset(arch, cfg, 20, 7, teacher_seed=3, data_seed=2)
    for k in a.teacher:
        if not k.endswith("_train"):
            np.testing.assert_array_equal(a.teacher[k], c.teacher[k])
    assert not np.array_equal(a.X, c.X[:10])

    # The inputs depend on data_seed only; a smaller n is a prefix; the test set ignores n.
    d = make_dataset(arch, cfg, 20, 7, teacher_seed=4, data_seed=1)
    np.testing.assert_array_equal(d.X[:10], a.X)
    np.testing.assert_array_equal(d.X_test, a.X_test)
    assert not np.array_equal(d.y[:10], a.y)
    assert not np.array_equal(d.teacher["teacher_w"], a.teacher["teacher_w"])
    e = make_dataset(arch, cfg, 20, 7, teacher_seed=3, data_seed=1)
    np.testing.assert_array_equal(e.y[:10], a.y)
    # The random direction is an independent draw, not the teacher's.
    assert not np.allclose(a.teacher["teacher_w"], a.teacher["teacher_w_random"])


def test_teacher_models():
    t = teacher_model("cnn2", CFGS["cnn2"])  # linear target of Eq. 7's text
    assert t.width == 1 and t.activation == "linear"
    assert t.prior_variances() == {"w": 1 / 4, "a": 1 / 3}  # w*_s ~ N(0,1/S), a*_i ~ N(0,1/N)
    f = teacher_model("fcn", CFGS["fcn"])
    assert f.width == 1 and f.scaling == "standard"
    assert f.prior_variances() == {"W1": 2.0 / 5, "W2": 2.0, "a": 2.0}
    c = teacher_model("cnn3", CFGS["cnn3"])
    assert c.width == 1 and c.prior_variances() == {"w": 2 / 3, "v": 2 / 4, "a": 15 / 2}
    with pytest.raises(ValueError, match="no teacher"):
        teacher_model("myrtle5", {"sigma_w2": 2.0, "sigma_a2": 2.0})


def test_cnn2_targets_are_linear_teacher():
    ds = make_dataset("cnn2", CFGS["cnn2"], 12, 5, teacher_seed=0, data_seed=0)
    w, a = ds.teacher["teacher_w"], ds.teacher["teacher_param_a"][:, 0]
    assert w.shape == (4,) and a.shape == (3,)
    for X, y in ((ds.X, ds.y), (ds.X_test, ds.y_test)):
        np.testing.assert_allclose(y, (X.reshape(-1, 3, 4) @ w) @ a, rtol=1e-12)


def test_fcn_targets_are_width_one_teacher():
    ds = make_dataset("fcn", CFGS["fcn"], 12, 5, teacher_seed=0, data_seed=0)
    W1, W2, a = (ds.teacher[f"teacher_param_{k}"] for k in ("W1", "W2", "a"))
    np.testing.assert_array_equal(ds.teacher["teacher_w"], W1[:, 0])
    np.testing.assert_allclose(ds.y, _erf(_erf(ds.X @ W1) @ W2) @ a, rtol=1e-12)


def test_cnn3_targets_and_hidden_preactivations():
    cfg = CFGS["cnn3"]
    N, S0, S1 = cfg["N"], cfg["S0"], cfg["S1"]
    ds = make_dataset("cnn3", cfg, 12, 5, teacher_seed=0, data_seed=0)
    w = ds.teacher["teacher_w"]
    v = ds.teacher["teacher_param_v"][0, 0]  # (S1,)
    a = ds.teacher["teacher_param_a"][0]  # (N,)
    # Eq. 14 with C1 = C2 = 1: h2_j = Σ_i v_i φ(w · x_{i+jS1}), patches of size S0.
    h2 = np.array([[sum(v[i] * math.erf(w @ x[(i + j * S1) * S0:(i + j * S1 + 1) * S0])
                        for i in range(S1)) for j in range(N)] for x in ds.X])
    np.testing.assert_allclose(ds.teacher["teacher_h2_train"], h2, rtol=1e-12)
    np.testing.assert_allclose(ds.y, _erf(h2) @ a, rtol=1e-12)
    r = ds.teacher["teacher_h2_random_train"]
    assert r.shape == (12, N) and not np.allclose(r, h2)


def test_gaussian_inputs_are_standard_normal():
    """X ~ N(0, I): pooled mean/variance and coordinate correlations within their SEs."""
    n, d = 2000, 12
    X = make_dataset("cnn2", {"S": 4, "N": 3, "sigma_w2": 1.0, "sigma_a2": 1.0}, n, 0, 0, 5).X
    m = n * d
    assert abs(X.mean()) < 5 / math.sqrt(m)  # SE of the pooled mean: 1/√(nd)
    assert abs(X.var() - 1) < 5 * math.sqrt(2 / m)  # SE of the pooled variance: √(2/(nd))
    C = np.corrcoef(X.T)[np.triu_indices(d, 1)]
    # SE of a sample correlation ≈ 1/√n; Bonferroni z = 4.5 over the 66 pairs.
    assert np.all(np.abs(C) < 4.5 / math.sqrt(n))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"arch": "resnet"}, "unknown arch 'resnet'"),
        ({"n": 0}, "n must be an integer >= 1"),
        ({"n_test": -1}, "n_test must be"),
        ({"teacher_seed": 1.5}, "teacher_seed must be"),
        ({"model_cfg": {"S": 4, "sigma_w2": 1.0, "sigma_a2": 1.0}}, "missing model key 'N'"),
    ],
)
def test_make_dataset_errors(kwargs, match):
    args = {"arch": "cnn2", "model_cfg": CFGS["cnn2"], "n": 4, "n_test": 2,
            "teacher_seed": 0, "data_seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_dataset(**args)


# ---------------------------------------------------------------------------------------------
# npz files
# ---------------------------------------------------------------------------------------------


def test_npz_round_trip_and_atomic_write(tmp_path):
    ds = make_dataset("cnn3", CFGS["cnn3"], 9, 4, teacher_seed=1, data_seed=2)
    path = tmp_path / "sub" / "n9.npz"
    save_dataset(ds, path)
    save_dataset(ds, path)  # overwriting is fine
    assert sorted(os.listdir(path.parent)) == ["n9.npz"]  # no temporary file left behind
    back = load_dataset(path)
    for f in ("X", "y", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(back, f), getattr(ds, f))
        assert getattr(back, f).dtype == getattr(ds, f).dtype
    assert back.teacher.keys() == ds.teacher.keys()
    for k in ds.teacher:
        np.testing.assert_array_equal(back.teacher[k], ds.teacher[k])
    with np.load(path) as z:  # the contract's key names
        assert {"X", "y", "X_test", "y_test", "teacher_w", "teacher_h2_train"} <= set(z.files)


def _write_npz(path: Path, **arrays) -> Path:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_load_dataset_errors(tmp_path):
    good = {"X": np.zeros((4, 3)), "y": np.zeros(4), "X_test": np.zeros((2, 3)),
            "y_test": np.zeros(2)}
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_dataset(missing)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="corrupt.npz.*not a readable"):
        load_dataset(corrupt)
    no_y = _write_npz(tmp_path / "no_y.npz", **{k: v for k, v in good.items() if k != "y"})
    with pytest.raises(ValueError, match="no_y.npz lacks key 'y'"):
        load_dataset(no_y)
    bad_y = _write_npz(tmp_path / "bad_y.npz", **{**good, "y": np.zeros(5)})
    with pytest.raises(ValueError, match="bad_y.npz is ill-shaped: y must have shape"):
        load_dataset(bad_y)
    bad_test = _write_npz(tmp_path / "bad_test.npz", **{**good, "X_test": np.zeros((2, 5))})
    with pytest.raises(ValueError, match="bad_test.npz is ill-shaped: X_test rows"):
        load_dataset(bad_test)
    bad_h2 = _write_npz(tmp_path / "bad_h2.npz", **good, teacher_h2_train=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="teacher_h2_train must have 4 rows"):
        load_dataset(bad_h2)
    extra = _write_npz(tmp_path / "extra.npz", **good, weights=np.zeros(3))
    with pytest.raises(ValueError, match="unexpected keys.*weights"):
        load_dataset(extra)
    with pytest.raises(ValueError, match="must start with 'teacher_'"):
        save_dataset(Dataset(**good, teacher={"w": np.zeros(3)}), tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (tiny file in the standard format) and the digits stand-in
# ---------------------------------------------------------------------------------------------

PER_BATCH = 12


def _cifar_image(label: int, rng: np.random.Generator, test: bool) -> np.ndarray:
    """(3, 32, 32) uint8: R constant = 25·label, G random (train) or 255 (test), B = 7·row + col.

    R encodes the label, B the (row, col) layout, so the loaded NHWC arrays can be checked.
    """
    img = np.empty((3, 32, 32), np.uint8)
    img[0] = 25 * label
    img[1] = 255 if test else rng.integers(0, 256, (32, 32))
    img[2] = 7 * np.arange(32)[:, None] + np.arange(32)[None, :]
    return img


def _write_cifar(root: Path, skip: str | None = None) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        if name == skip:
            continue
        labels = [(i + len(name)) % 10 for i in range(PER_BATCH)]
        data = np.stack([_cifar_image(lab, rng, name == "test_batch").reshape(-1)
                         for lab in labels])
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
    return folder


def _recover_labels(X: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Invert R = 25·label up to the (increasing) per-channel standardisation map."""
    r = X[:, 0, 0, 0]
    assert np.allclose(X[..., 0], r[:, None, None])  # R is constant within each image
    levels = np.unique(np.round(r, 9))
    assert len(levels) == len(present)
    return present[np.searchsorted(levels, np.round(r, 9))]


def test_cifar10_subset_from_tiny_files(tmp_path):
    folder = _write_cifar(tmp_path)
    ds = load_cifar10_subset(folder, 40, 8, seed=0)
    assert ds.X.shape == (40, 32, 32, 3) and ds.X_test.shape == (8, 32, 32, 3)
    assert ds.X.dtype == np.float64 and ds.teacher == {}
    # Per-channel standardisation with the training subset's statistics.
    np.testing.assert_allclose(ds.X.mean(axis=(0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(ds.X.std(axis=(0, 1, 2)), 1, rtol=1e-12)
    # Layout: channel planes de-interleaved and rows/cols in order (B = 7·row + col).
    B = ds.X[..., 2]
    step_col, step_row = B[:, 0, 1] - B[:, 0, 0], B[:, 1, 0] - B[:, 0, 0]
    np.testing.assert_allclose(step_row, 7 * step_col, rtol=1e-10)
    assert np.all(step_col > 0)
    assert np.allclose(ds.X_test[..., 1], ds.X_test[:, :1, :1, 1])  # test images: G constant
    # Labels: vehicles {0,1,8,9} -> +1, animals -> -1; every label 0..9 exists in the train pool.
    labels = _recover_labels(ds.X, np.unique(_recover_labels_raw(folder)))
    np.testing.assert_array_equal(
        ds.y, np.where(np.isin(labels, CIFAR10_VEHICLES_VS_ANIMALS[0]), 1.0, -1.0)
    )
    assert set(np.unique(ds.y)) == {-1.0, 1.0}
    # Determinism and seed dependence.
    again = load_cifar10_subset(tmp_path, 40, 8, seed=0)  # the parent folder works too
    np.testing.assert_array_equal(again.X, ds.X)
    other = load_cifar10_subset(folder, 40, 8, seed=1)
    assert not np.array_equal(other.X, ds.X)


def _recover_labels_raw(folder: Path) -> np.ndarray:
    labels = []
    for k in range(1, 6):
        with open(folder / f"data_batch_{k}", "rb") as f:
            labels += pickle.load(f, encoding="bytes")[b"labels"]
    return np.array(labels)


def test_cifar10_custom_classes_and_errors(tmp_path):
    folder = _write_cifar(tmp_path / "ok")
    ds = load_cifar10_subset(folder, 10, 2, seed=0, classes=[[3], [5]])
    present = np.array([3, 5])
    labels = _recover_labels(ds.X, present)
    np.testing.assert_array_equal(ds.y, np.where(labels == 3, 1.0, -1.0))
    n_eligible = int(np.isin(_recover_labels_raw(folder), present).sum())
    with pytest.raises(ValueError, match=f"only {n_eligible} have a label"):
        load_cifar10_subset(folder, n_eligible + 1, 2, seed=0, classes=[[3], [5]])
    with pytest.raises(ValueError, match="disjoint"):
        load_cifar10_subset(folder, 4, 2, seed=0, classes=[[3], [3, 5]])
    with pytest.raises(FileNotFoundError, match="nowhere.*cifar.html"):
        load_cifar10_subset(tmp_path / "nowhere", 4, 2, seed=0)
    partial = _write_cifar(tmp_path / "partial", skip="data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10_subset(partial, 4, 2, seed=0)
    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="test_batch is not a valid CIFAR-10"):
        load_cifar10_subset(folder, 4, 2, seed=0)
    cfg = {"sigma_w2": 2.0, "sigma_a2": 2.0, "dataset": "cifar10"}
    with pytest.raises(ValueError, match="'cifar_path' is required"):
        make_dataset("myrtle5", cfg, 4, 2, 0, 0)


def test_make_dataset_myrtle5_cifar10(tmp_path):
    folder = _write_cifar(tmp_path)
    cfg = {"sigma_w2": 2.0, "sigma_a2": 2.0, "dataset": "cifar10", "cifar_path": str(folder)}
    ds = make_dataset("myrtle5", cfg, 16, 4, teacher_seed=0, data_seed=3)
    ref = load_cifar10_subset(folder, 16, 4, seed=3)
    np.testing.assert_array_equal(ds.X, ref.X)
    np.testing.assert_array_equal(ds.y, ref.y)


def test_digits_stand_in():
    cfg = {"sigma_w2": 2.0, "sigma_a2": 2.0, "dataset": "digits"}
    ds = make_dataset("myrtle5", cfg, 60, 20, teacher_seed=0, data_seed=0)
    assert ds.X.shape == (60, 8, 8, 1) and ds.X_test.shape == (20, 8, 8, 1)
    assert set(np.unique(ds.y)) == {-1.0, 1.0} and set(np.unique(ds.y_test)) <= {-1.0, 1.0}
    np.testing.assert_allclose(ds.X.mean(), 0, atol=1e-12)
    np.testing.assert_allclose(ds.X.std(), 1, rtol=1e-12)
    again = make_dataset("myrtle5", cfg, 60, 20, teacher_seed=5, data_seed=0)
    np.testing.assert_array_equal(again.X, ds.X)  # images depend on data_seed only
    with pytest.raises(ValueError, match="only 1797 have a label"):
        make_dataset("myrtle5", cfg, 1790, 20, 0, 0)
