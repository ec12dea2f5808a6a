"""Training data of an experiment: teacher networks on Gaussian inputs, or an image subset.

* Teachers (Methods; Eqs. 1, 7, 14): the student architecture with one channel / neuron per
  layer, drawn once from `teacher_seed` (the paper drew its target once for all n and widths).
  - fcn: an FCN with N1 = … = N_{L-1} = 1, the student's σ's and activation, and the
    *standard* readout (with width 1 the mean-field readout is the same anyway);
  - cnn2: the linear target y = Σ_i a*_i (w* · x_i), a*_i ~ N(0, 1/N), w*_s ~ N(0, 1/S) (Eq. 7
    text), i.e. a CNN2 with C = 1, linear activation and σ_w² = σ_a² = 1;
  - cnn3: a CNN3 with C1 = C2 = 1, the student's σ's and activation (Methods).
  Targets are the teacher's outputs without label noise. Inputs are i.i.d. N(0, I_d).
* Myrtle-5 (Fig. 6): an image subset of `fleos.nets.datasets` (CIFAR-10 or the digits
  stand-in).

Seeds: the teacher depends on `teacher_seed` only; the inputs on `data_seed` only. Training row
μ is drawn from ``fold_in(train_key, μ)``, so the set for a smaller n is a prefix of the set for
a larger n, and the test set does not depend on n.

`Dataset.teacher` keeps the full key names of the file (``teacher_w`` …), see
`fleos.nets.datasets`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fleos.nets.datasets import (
    CIFAR10_URL,
    CIFAR10_VEHICLES_VS_ANIMALS,
    DIGITS_LOW_VS_HIGH,
    Dataset,
    check_count,
    gaussian_inputs,
    load_cifar10_subset,
    load_digits_subset,
)
from fleos.nets.models import CNN2, CNN3, FCN, input_dim, validate_model_cfg

# ---------------------------------------------------------------------------------------------
# Teachers
# ---------------------------------------------------------------------------------------------


def teacher_model(arch: str, model_cfg: Mapping[str, Any]) -> FCN | CNN2 | CNN3:
    """The teacher network of `arch` (one channel / neuron per layer; see module docstring)."""
    cfg = validate_model_cfg(arch, model_cfg)
    if arch == "fcn":
        return FCN(
            d=cfg["d"], width=1, depth=cfg["depth"], activation=cfg["activation"],
            sigma_w2=cfg["sigma_w2"], sigma_a2=cfg["sigma_a2"], scaling="standard",
        )
    if arch == "cnn2":
        return CNN2(S=cfg["S"], N=cfg["N"], width=1, activation="linear",
                    sigma_w2=1.0, sigma_a2=1.0)
    if arch == "cnn3":
        return CNN3(
            N=cfg["N"], S0=cfg["S0"], S1=cfg["S1"], width=1, activation=cfg["activation"],
            sigma_w2=cfg["sigma_w2"], sigma_v2=cfg["sigma_v2"], sigma_a2=cfg["sigma_a2"],
        )
    raise ValueError(f"arch {arch!r} has no teacher; teachers exist for fcn, cnn2, cnn3")



def make_dataset(
    arch: str,
    model_cfg: Mapping[str, Any],
    n: int,
    n_test: int,
    teacher_seed: int,
    data_seed: int,
) -> Dataset:
    """Training set of size n and test set of size n_test for `arch` (float64 arrays).

    fcn / cnn2 / cnn3: Gaussian inputs labelled by the teacher drawn from `teacher_seed`
    (independent of n and data_seed). Teacher arrays: ``teacher_w`` (d_in,) the input weight
    w*, ``teacher_w_random`` (d_in,) an independent draw of the same law (a random direction
    for Fig. 3), every teacher weight as ``teacher_param_<name>``, and for cnn3
    ``teacher_h2_train`` (n, N) the teacher's h2 on X and ``teacher_h2_random_train`` (n, N)
    those of an independent random teacher (Fig. 4).
    myrtle5: image data chosen by model_cfg ``dataset`` (cifar10 from ``cifar_path``, or the
    digits stand-in), ±1 labels split by ``classes``; `teacher_seed` is unused there and the
    images are drawn with `data_seed`.
    """
    cfg = validate_model_cfg(arch, model_cfg)
    n = check_count(n, "n", 1)
    n_test = check_count(n_test, "n_test", 0)
    teacher_seed = check_count(teacher_seed, "teacher_seed", 0)
    data_seed = check_count(data_seed, "data_seed", 0)

    if arch == "myrtle5":
        classes = cfg["classes"]
        if cfg["dataset"] == "cifar10":
            if cfg["cifar_path"] is None:
                raise ValueError(
                    "model key 'cifar_path' is required for dataset 'cifar10' "
                    f"(the extracted cifar-10-batches-py folder; see {CIFAR10_URL})"
                )
            return load_cifar10_subset(
                cfg["cifar_path"], n, n_test, data_seed,
                classes=CIFAR10_VEHICLES_VS_ANIMALS if classes is None else classes,
            )
        return load_digits_subset(
            n, n_test, data_seed, classes=DIGITS_LOW_VS_HIGH if classes is None else classes
        )

    teacher = teacher_model(arch, cfg)
    tkey = jax.random.key(teacher_seed)
    # Teacher and the independent random teacher: fold_in 0 and 1 of the teacher key only.
    t_params = teacher.init_prior(jax.random.fold_in(tkey, 0), jnp.float64)
    r_params = teacher.init_prior(jax.random.fold_in(tkey, 1), jnp.float64)

    dkey = jax.random.key(data_seed)
    d = input_dim(arch, cfg)
    X = gaussian_inputs(jax.random.fold_in(dkey, 0), n, d)
    X_test = gaussian_inputs(jax.random.fold_in(dkey, 1), n_test, d)

    y, pre = teacher.forward(t_params, jnp.asarray(X))
    y_test = teacher.forward(t_params, jnp.asarray(X_test))[0]
    arrays: dict[str, np.ndarray] = {
        "teacher_w": np.asarray(teacher.input_weights(t_params)[0]),
        "teacher_w_random": np.asarray(teacher.input_weights(r_params)[0]),
    }
    for name, value in t_params.items():
        arrays[f"teacher_param_{name}"] = np.asarray(value)
    if arch == "cnn3":
        arrays["teacher_h2_train"] = np.asarray(pre["h2"][..., 0])
        arrays["teacher_h2_random_train"] = np.asarray(
            teacher.preactivations(r_params, jnp.asarray(X))["h2"][..., 0]
        )
    return Dataset(X=X, y=np.asarray(y), X_test=X_test, y_test=np.asarray(y_test),
                   teacher=arrays)
