"""Data sets: the `Dataset` container and its .npz files, Gaussian inputs, image subsets.

* `Dataset`: a training and a test set and the teacher arrays that labelled them;
  `save_dataset` / `load_dataset` write and read ``results/data/{experiment}/n{n}.npz``
  (keys ``X``, ``y``, ``X_test``, ``y_test`` and ``teacher_*``; docs/architecture.md).
* Gaussian inputs x_μ ~ N(0, I_d), row μ drawn from ``fold_in(key, μ)``, so the set for a
  smaller n is a prefix of the set for a larger n.
* Myrtle-5 (Fig. 6): a CIFAR-10 subset with a ±1 binary target, or, at laptop scale, the 8×8
  handwritten digits bundled with scikit-learn as a labelled stand-in (`dataset: digits`).
  `IMAGE_DATASETS` lists them (channels, size); `fleos.nets.models` checks Myrtle-5's
  ``in_channels`` against it.

Imports nothing else from fleos: the models read `IMAGE_DATASETS`, and `fleos.nets.data`
(teachers, `make_dataset`) builds on both.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Image data sets Myrtle-5 can use: channels and image size (H = W).
IMAGE_DATASETS: dict[str, dict[str, Any]] = {
    "cifar10": {"channels": 3, "size": 32},
    "digits": {"channels": 1, "size": 8},  # scikit-learn's bundled 8×8 digits (stand-in)
}
# CIFAR-10 classes: 0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog, 6 frog, 7 horse,
# 8 ship, 9 truck. Default target: vehicles (+1) vs animals (−1).
CIFAR10_VEHICLES_VS_ANIMALS: tuple[tuple[int, ...], tuple[int, ...]] = (
    (0, 1, 8, 9),
    (2, 3, 4, 5, 6, 7),
)
# Digits stand-in default target: digits 0–4 (+1) vs 5–9 (−1).
DIGITS_LOW_VS_HIGH: tuple[tuple[int, ...], tuple[int, ...]] = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

_REQUIRED_KEYS = ("X", "y", "X_test", "y_test")


@dataclass(frozen=True)
class Dataset:
    """A training and a test set, and the teacher that labelled them (empty for image data).

    X: (n, d) for vector inputs or (n, H, W, C) images; y: (n,); X_test, y_test likewise.
    teacher: arrays named as in the npz file, e.g. ``teacher_w`` (input weight w*),
    ``teacher_w_random`` (an independent draw of the same law: a random direction),
    ``teacher_h2_train`` / ``teacher_h2_random_train`` (3-layer CNN hidden pre-activations).
    """

    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    teacher: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.X.shape[0])


# ---------------------------------------------------------------------------------------------
# Gaussian inputs
# ---------------------------------------------------------------------------------------------


def gaussian_inputs(key: jax.Array, n: int, d: int) -> np.ndarray:
    """n rows x_μ ~ N(0, I_d) in float64, row μ drawn from fold_in(key, μ) (prefix-stable in n)."""
    rows = jax.vmap(lambda m: jax.random.normal(jax.random.fold_in(key, m), (d,), jnp.float64))
    return np.asarray(rows(jnp.arange(n)))


def check_count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# Image data
# ---------------------------------------------------------------------------------------------


def _check_classes(classes: Any, num_classes: int = 10) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Validate a binary split (positive classes, negative classes) of labels 0..num_classes-1."""
    try:
        pos, neg = (tuple(int(c) for c in group) for group in classes)
    except (TypeError, ValueError):
        raise ValueError(
            f"classes must be two lists of labels (label +1, label -1), got {classes!r}"
        ) from None
    every = pos + neg
    if not pos or not neg or len(set(every)) != len(every) or any(
        not 0 <= c < num_classes for c in every
    ):
        raise ValueError(
            f"classes must be two non-empty, disjoint lists of labels in 0..{num_classes - 1}, "
            f"got {classes!r}"
        )
    return pos, neg


def _binary_subset(
    images: np.ndarray, labels: np.ndarray, classes: Any, n: int, key: jax.Array, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Draw n images (without replacement) among those in `classes`; ±1 targets."""
    pos, neg = _check_classes(classes)
    eligible = np.flatnonzero(np.isin(labels, pos + neg))
    if n > eligible.size:
        raise ValueError(
            f"asked for {n} {what} images but only {eligible.size} have a label in {classes!r}"
        )
    # Random order (no sorting): callers may cut the draw into disjoint parts.
    idx = eligible[np.asarray(jax.random.permutation(key, eligible.size))[:n]]
    y = np.where(np.isin(labels[idx], pos), 1.0, -1.0)
    return images[idx], y


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel standardisation (NHWC) with the training subset's mean and std."""
    train = train.astype(np.float64)
    test = test.astype(np.float64)
    mean = train.mean(axis=(0, 1, 2))
    std = train.std(axis=(0, 1, 2))
    std = np.where(std > 0, std, 1.0)  # a constant channel stays constant (zero)
    return (train - mean) / std, (test - mean) / std


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(
            f"CIFAR-10 file {path} not found: download the python version from {CIFAR10_URL} "
            "and extract it (tar xzf cifar-10-python.tar.gz) to get cifar-10-batches-py/"
        )
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"CIFAR-10 file {path} is not a valid CIFAR-10 python batch: {e}") from e
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise ValueError(
            f"CIFAR-10 file {path}: expected data (m, 3072) and m labels, got data "
            f"{data.shape} and labels {labels.shape}"
        )
    # Rows are 1024 red, 1024 green, 1024 blue values, each a row-major 32×32 image: -> NHWC.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar10_subset(
    path: str | os.PathLike,
    n: int,
    n_test: int,
    seed: int,
    classes: Sequence[Sequence[int]] = CIFAR10_VEHICLES_VS_ANIMALS,
) -> Dataset:
    """n training and n_test test images of CIFAR-10 with a ±1 target (Fig. 6: n = 2048).

    `path`: the extracted ``cifar-10-batches-py`` folder (or its parent) holding the standard
    pickles data_batch_1..5 and test_batch. `classes` = (labels mapped to +1, labels mapped to
    −1); default vehicles vs animals. Images are drawn without replacement from the training
    (resp. test) batches with ``jax.random`` keys fold_in(key(seed), 0 / 1), returned NHWC
    (n, 32, 32, 3) float64 and standardised per channel with the training subset's statistics.
    """
    n = check_count(n, "n", 1)
    n_test = check_count(n_test, "n_test", 0)
    root = Path(path)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if not root.is_dir():
        raise FileNotFoundError(
            f"CIFAR-10 folder {root} not found: download the python version from {CIFAR10_URL} "
            "and extract it (tar xzf cifar-10-python.tar.gz) to get cifar-10-batches-py/"
        )
    batches = [_read_cifar_batch(root / f"data_batch_{k}") for k in range(1, 6)]
    train_x = np.concatenate([b[0] for b in batches])
    train_y = np.concatenate([b[1] for b in batches])
    test_x, test_y = _read_cifar_batch(root / "test_batch")
    key = jax.random.key(seed)
    X, y = _binary_subset(train_x, train_y, classes, n, jax.random.fold_in(key, 0), "training")
    X_test, y_test = _binary_subset(
        test_x, test_y, classes, n_test, jax.random.fold_in(key, 1), "test"
    )
    X, X_test = _standardize(X, X_test)
    return Dataset(X=X, y=y, X_test=X_test, y_test=y_test)


def load_digits_subset(
    n: int,
    n_test: int,
    seed: int,
    classes: Sequence[Sequence[int]] = DIGITS_LOW_VS_HIGH,
) -> Dataset:
    """Laptop stand-in for CIFAR-10: scikit-learn's bundled 8×8 handwritten digits (1797 images).

    NOT CIFAR-10: a small labelled image set shipped inside the scikit-learn wheel, so the
    Myrtle-5 pipeline runs offline. Disjoint train / test subsets drawn with
    jax.random.permutation(key(seed)); ±1 target split by `classes` (default 0–4 vs 5–9);
    NHWC (n, 8, 8, 1) float64, standardised with the training subset's statistics.
    """
    from sklearn.datasets import load_digits  # heavy import; only this stand-in needs it

    n = check_count(n, "n", 1)
    n_test = check_count(n_test, "n_test", 0)
    digits = load_digits()
    images = digits.images[..., None]  # (1797, 8, 8, 1), values 0..16
    X_all, y_all = _binary_subset(
        images, digits.target, classes, n + n_test, jax.random.key(seed), "digits"
    )
    X, X_test = _standardize(X_all[:n], X_all[n:])
    return Dataset(X=X, y=y_all[:n], X_test=X_test, y_test=y_all[n:])


# ---------------------------------------------------------------------------------------------
# npz files
# ---------------------------------------------------------------------------------------------


def save_dataset(ds: Dataset, path: str | os.PathLike) -> None:
    """Write `ds` to an .npz file atomically (temporary file in the same folder + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"X": ds.X, "y": ds.y, "X_test": ds.X_test, "y_test": ds.y_test}
    for key, value in ds.teacher.items():
        if not key.startswith("teacher_"):
            raise ValueError(f"teacher array name {key!r} must start with 'teacher_'")
        arrays[key] = value
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:  # a file object: np.savez must not append '.npz'
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Read a file written by `save_dataset`; errors name the file and the bad key / shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"dataset file {path} is not a readable .npz file: {e}") from e
    for key in _REQUIRED_KEYS:
        if key not in arrays:
            raise ValueError(
                f"dataset file {path} lacks key {key!r} (has {sorted(arrays)}); "
                f"required: {list(_REQUIRED_KEYS)}"
            )
    unknown = [k for k in arrays if k not in _REQUIRED_KEYS and not k.startswith("teacher_")]
    if unknown:
        raise ValueError(f"dataset file {path} has unexpected keys {unknown}")
    X, y, X_test, y_test = (arrays[k] for k in _REQUIRED_KEYS)
    problems = []
    if X.ndim < 2:
        problems.append(f"X must be at least 2-D, got shape {X.shape}")
    if y.shape != X.shape[:1]:
        problems.append(f"y must have shape ({X.shape[0]},) to match X, got {y.shape}")
    if X_test.shape[1:] != X.shape[1:]:
        problems.append(f"X_test rows {X_test.shape[1:]} differ from X rows {X.shape[1:]}")
    if y_test.shape != X_test.shape[:1]:
        problems.append(f"y_test must have shape ({X_test.shape[0]},), got {y_test.shape}")
    for key, value in arrays.items():
        if key.endswith("_train") and value.shape[:1] != X.shape[:1]:
            problems.append(f"{key} must have {X.shape[0]} rows like X, got shape {value.shape}")
    if problems:
        raise ValueError(f"dataset file {path} is ill-shaped: " + "; ".join(problems))
    teacher = {k: v for k, v in arrays.items() if k.startswith("teacher_")}
    return Dataset(X=X, y=y, X_test=X_test, y_test=y_test, teacher=teacher)
