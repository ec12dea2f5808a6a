"""Online recording of equilibrium samples: running sums inside `lax.scan`, thinned snapshots.

The EoS of the paper (Eq. 5, Eq. 8) are statements about *posterior averages* of kernels: Σ,
the covariance of input-layer weights (``K^(1) = X Σ Xᵀ``), the hidden pre-kernel K^(2) and
post-kernel Q^(2) of the 3-layer CNN (Eq. 14, Fig. 5), and the mean predictor f̄ (Eq. 5,
line 1). Storing every sample would be huge, so a `Recorder` keeps, per chain, running sums
over the samples drawn in the equilibrium stage:

* ``count``: number of samples added;
* ``f_train_sum``, ``f_train_sq``, ``f_test_sum``, ``f_test_sq``: Σ f(x) and Σ f(x)² on the
  train and test inputs;
* ``sigma_sum``: Σ over samples of Σ̂ = (1/C) Σ_c w_c w_cᵀ (input weights, `input_weights`);
* ``K2_sum`` (3-layer CNN): K̂2_{(μj),(νj')} = (1/C2) Σ_{c'} h2_{c'j}(x_μ) h2_{c'j'}(x_ν),
  row index μ·N + j (an (nN × nN) matrix);
* ``Q2_sum`` (3-layer CNN): Q̂2_{(μj),(νj')} = σ_v²/(C1 S1) Σ_{c,i} φ(h1_{cji}(x_μ))
  φ(h1_{cj'i}(x_ν)), the hidden layer's post-kernel at the sampled input weights;
* ``probe_<layer>_sum`` (Myrtle-5): (1/C) Σ_c ḡ_c(x_μ) ḡ_c(x_ν) on a probe batch, ḡ the
  position-averaged pre-activation of layers 2 and 4.

Rao-Blackwellized outputs (``rb_every > 0``; docs/langevin.md §9). Given the hidden weights,
f = Φ a is linear in the readout a ~ N(0, v_a I) and the likelihood is Gaussian, so the
readout can be integrated out exactly: with Q = v_a ΦΦᵀ (the network's post-kernel at these
hidden weights) and z = (Q + σ² I)⁻¹ y,

    E[f(X) | hidden] = Q z = y − σ² z,        E[f(X_*) | hidden] = v_a Φ_* (Φᵀ z).

Their averages over the sampled hidden weights estimate the same posterior means as the
sampled f, without the readout's own noise. Every ``rb_every`` steps of the sampling stage
the recorder adds them to ``f_train_rb_sum`` / ``f_test_rb_sum`` (count ``rb_count``), and,
if ``"Qf"`` is in `kernels`, Q itself to ``Qf_sum``: its mean is the empirical post-kernel
⟨Q⟩, which the EoS replaces by its Gaussian-channel average (Eq. 8); if ``"field"`` is, the
field that the sampled hidden weights exert, z zᵀ − (Q + σ² I)⁻¹, to ``field_sum``: its mean is
the A_eff = ⟨εεᵀ − K_f⁻¹⟩ of the field test (docs/derivations/cnn2.md, "The field test"), which
Eq. 8 evaluates at the mean kernel instead; if ``"Kinv"`` is, (Q + σ² I)⁻¹ to ``Kinv_sum``
(with the field it splits A_eff into ⟨εεᵀ⟩ and ⟨K_f⁻¹⟩). The solve is in float64:
cond(Q + σ² I) ≈ λ_max(Q)/σ² reaches 10⁴-10⁵ at the paper's sizes.

A sample is added after step t when the chain is in its sampling stage (per-chain flag
``acc["sampling"]``, set by the driver from the lr schedule) and t % record_every == 0.
Sums are kept in float64 when JAX allows it: adding 10⁴–10⁵ float32 samples would lose
4–5 of float32's 7 digits, while the per-sample products themselves are computed in the
sampler dtype (their own rounding error is far below the Monte Carlo error).

Snapshots (`Recorder.snapshot`, taken by the driver every ``snapshot_every`` steps) are the
low-dimensional projections the figures histogram: input weights on the teacher direction
w*/‖w*‖ and on fixed random unit directions (Fig. 3 right, Fig. 4), the 3-layer CNN's h2 on
the teacher's and a random teacher's pre-activations (Fig. 4), and Myrtle-5 pre-activations
of a few channels on a probe batch (Fig. 6; projected on kernel eigenvectors at aggregation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fleos.core import gp
from fleos.core.kernels import ACTIVATIONS
from fleos.nets.models import MYRTLE_PROBE_LAYERS

Array = jax.Array


def accumulator_dtype() -> jnp.dtype:
    """float64 when x64 is enabled (always after `import fleos`), else float32."""
    return jnp.dtype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)


def sigma_hat(W: Array) -> Array:
    """Σ̂(θ) = (1/C) Σ_c w_c w_cᵀ of input weights W (C, d): one sample's Σ (Eqs. 5, 8)."""
    return W.T @ W / W.shape[0]


def random_directions(d: int, k: int, seed: int) -> np.ndarray:
    """k fixed random unit vectors in R^d as columns (d, k), from `seed` (stored in the file)."""
    if k == 0:
        return np.zeros((d, 0))
    u = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (d, k), dtype=jnp.float64))
    return u / np.linalg.norm(u, axis=0, keepdims=True)


@dataclass(frozen=True, eq=False)
class Recorder:
    """Per-chain online sums (for `lax.scan`) and snapshot projections of one job.

    Hashes by identity (``eq=False``) so a jitted driver can take it as a static argument
    and compile once per job. Array data (inputs, directions, teacher pre-activations) are
    *not* stored here but passed at trace time as `data` (see `make_data`), so they are
    runtime arguments of the compiled program rather than baked-in constants.

    apply_fn(params, X) -> (batch,); input_weights(params) -> (C, d_in);
    preactivations(params, X) -> dict (only for cnn3/myrtle5).
    """

    arch: str
    apply_fn: Callable[[Any, Array], Array]
    input_weights: Callable[[Any], Array]
    preactivations: Callable[[Any, Array], Mapping[str, Array]] | None
    record_every: int
    kernels: tuple[str, ...] = ("sigma",)
    model_cfg: Mapping[str, Any] = field(default_factory=dict)
    probe_channels: int = 4
    probe_spatial: str = "mean"
    keep_full_weights: bool = False
    snapshot_channels: int | None = None
    readout_features: Callable[[Any, Array], tuple[Array, Any]] | None = None
    readout_variance: float = 0.0
    sigma2: float = 0.0
    rb_every: int = 0

    # ---- data passed to the compiled functions ------------------------------------------

    def make_data(self, X: np.ndarray, X_test: np.ndarray, teacher: Mapping[str, np.ndarray],
                  d_in: int, n_random: int, directions_seed: int, dtype: Any,
                  probe_size: int = 64, y: np.ndarray | None = None) -> dict[str, Any]:
        """Arrays the recorder needs, in the sampler dtype: X, X_test, directions, ...

        ``dirs`` (d_in, R): random unit directions; ``teacher_dir`` (d_in,): w*/‖w*‖ when the
        dataset has a ``teacher_w`` of length d_in (absent otherwise, e.g. CIFAR); ``y`` (n,)
        the training targets, in float64 (required when ``rb_every > 0``).
        """
        # Dataset.teacher keys may or may not keep the npz prefix "teacher_": accept both.
        teacher = {str(k).removeprefix("teacher_"): v for k, v in teacher.items()}
        data: dict[str, Any] = {
            "X": jnp.asarray(X, dtype),
            "X_test": jnp.asarray(X_test, dtype),
            "dirs": jnp.asarray(random_directions(d_in, n_random, directions_seed), dtype),
        }
        for src, dst in (("w", "teacher_dir"), ("w_random", "teacher_random_dir")):
            tw = teacher.get(src)
            if tw is not None and np.asarray(tw).reshape(-1).shape[0] == d_in:
                tw = np.asarray(tw, np.float64).reshape(-1)
                data[dst] = jnp.asarray(tw / np.linalg.norm(tw), dtype)
        if self.arch == "cnn3":
            for src, dst in (("h2_train", "teacher_h2"), ("h2_random_train", "random_h2")):
                t = teacher.get(src)
                if t is not None:
                    t = np.asarray(t, np.float64)
                    data[dst] = jnp.asarray(t / np.linalg.norm(t), dtype)
        if self.arch == "myrtle5":
            data["probe"] = jnp.asarray(X[:probe_size], dtype)
        if self.rb_every:
            if y is None or self.readout_features is None:
                raise ValueError("Rao-Blackwellized outputs (rb_every > 0) need the targets y "
                                 "and the model's readout_features")
            if not (self.readout_variance > 0 and self.sigma2 > 0):
                raise ValueError(f"Rao-Blackwellized outputs need readout_variance > 0 and "
                                 f"sigma2 > 0, got {self.readout_variance!r}, {self.sigma2!r}")
            if not jax.config.jax_enable_x64:
                raise ValueError("Rao-Blackwellized outputs solve in float64: enable JAX's "
                                 "x64 mode (import fleos does)")
            data["y"] = jnp.asarray(y, accumulator_dtype()).reshape(-1)
        return data

    # ---- online sums ---------------------------------------------------------------------

    def init_acc(self, data: Mapping[str, Any], params: Any) -> dict[str, Array]:
        """Zero sums for ONE chain (the driver stacks them over chains); shapes from params."""
        adt = accumulator_dtype()
        sample = jax.eval_shape(lambda p: self._sample(p, data), params)
        acc = {k: jnp.zeros(v.shape, adt) for k, v in sample.items()}
        acc["count"] = jnp.zeros((), jnp.int32)
        acc["sampling"] = jnp.zeros((), jnp.bool_)
        if self.rb_every:
            rb = jax.eval_shape(lambda p: self.rao_blackwell(p, data), params)
            acc.update({k: jnp.zeros(v.shape, adt) for k, v in rb.items()})
            acc["rb_count"] = jnp.zeros((), jnp.int32)
        return acc

    def _sample(self, params: Any, data: Mapping[str, Any]) -> dict[str, Array]:
        """The per-sample quantities whose sums are kept (keys match init_acc)."""
        f_tr = self.apply_fn(params, data["X"])
        f_te = self.apply_fn(params, data["X_test"])
        out = {"f_train_sum": f_tr, "f_train_sq": f_tr * f_tr,
               "f_test_sum": f_te, "f_test_sq": f_te * f_te}
        if "sigma" in self.kernels:
            W = self.input_weights(params)
            out["sigma_sum"] = sigma_hat(W)
        if "K2" in self.kernels:
            h2 = self.preactivations(params, data["X"])["h2"]  # (n, N, C2)
            H = h2.reshape(-1, h2.shape[-1])
            out["K2_sum"] = H @ H.T / H.shape[-1]
        if "Q2" in self.kernels:
            out["Q2_sum"] = self._q2(params, data["X"])
        if "probe" in self.kernels:
            pre = self.preactivations(params, data["probe"])
            for layer in MYRTLE_PROBE_LAYERS:
                g = _spatial_mean(pre[layer])  # (P, C)
                out[f"probe_{layer}_sum"] = g @ g.T / g.shape[-1]
        return out

    def rao_blackwell(self, params: Any, data: Mapping[str, Any]) -> dict[str, Array]:
        """Posterior means of f on the train and test inputs given the hidden weights of
        `params`, the readout integrated out (module docstring), Q if "Qf" is recorded, the
        field z zᵀ − (Q + σ² I)⁻¹ if "field" is and (Q + σ² I)⁻¹ if "Kinv" is."""
        adt = accumulator_dtype()
        phi = self.readout_features(params, data["X"])[0].astype(adt)  # (n, P)
        phi_test = self.readout_features(params, data["X_test"])[0].astype(adt)
        v_a, s2 = float(self.readout_variance), float(self.sigma2)
        Q = v_a * (phi @ phi.T)
        fit = gp.gp_fit(Q, data["y"], s2)
        # test mean Q_{*f} z with Q_{*f} = v_a Φ_* Φᵀ, as matrix-vector products
        out = {"f_train_rb_sum": gp.gp_train_mean(fit, data["y"]),
               "f_test_rb_sum": v_a * (phi_test @ (phi.T @ fit.weights))}
        if "Qf" in self.kernels:
            out["Qf_sum"] = Q
        if "field" in self.kernels or "Kinv" in self.kernels:
            K_inv = gp.gp_inverse(fit)
            if "field" in self.kernels:
                out["field_sum"] = jnp.outer(fit.weights, fit.weights) - K_inv
            if "Kinv" in self.kernels:
                out["Kinv_sum"] = K_inv
        return out

    def _q2(self, params: Any, X: Array) -> Array:
        """Q̂2 of the 3-layer CNN (Eq. 14) from the model's h1 pre-activations, indexed
        [μ, j, i, c] (fleos.nets.models.CNN3): Q̂2 = σ_v²/(C1 S1) Φ Φᵀ with Φ_{(μj),(ic)} = φ(h1)."""
        cfg = self.model_cfg
        act = ACTIVATIONS[cfg.get("activation", "erf")]
        h1 = self.preactivations(params, X)["h1"]  # (n, N, S1, C1)
        n, N, S1, C1 = h1.shape
        Phi = act(h1).reshape(n * N, S1 * C1)
        return (float(cfg["sigma_v2"]) / (C1 * S1)) * (Phi @ Phi.T)

    def accumulator(self, data: Mapping[str, Any]) -> Callable[[dict, Any, Any], dict]:
        """`accumulate(acc, state, info)` for `fleos.sampling.sampler.run_steps` (one chain).

        Adds the sample at `state` (the post-step parameters) when ``acc["sampling"]`` and
        ``state.step % record_every == 0``. The step test is a `lax.cond`, so nothing is
        computed between records; the sampling flag is applied as a mask inside it. (Under
        `vmap` a cond on a per-chain predicate would become a select that evaluates the
        sample every step; the driver therefore keeps `step` unbatched - all chains advance
        in lockstep - and only the mask is per chain.)
        """
        every, rb_every = int(self.record_every), int(self.rb_every)

        def adder(sample_fn: Callable, count_key: str) -> Callable[[dict], dict]:
            def add(a: dict) -> dict:
                on = a["sampling"]
                new = dict(a)
                for k, v in sample_fn().items():
                    new[k] = a[k] + jnp.where(on, v.astype(a[k].dtype), 0)
                new[count_key] = a[count_key] + on.astype(a[count_key].dtype)
                return new
            return add

        def accumulate(acc: dict, state: Any, info: Any) -> dict:
            del info
            add = adder(lambda: self._sample(state.params, data), "count")
            acc = jax.lax.cond(state.step % every == 0, add, lambda a: dict(a), acc)
            if rb_every:
                add_rb = adder(lambda: self.rao_blackwell(state.params, data), "rb_count")
                acc = jax.lax.cond(state.step % rb_every == 0, add_rb, lambda a: dict(a), acc)
            return acc

        return accumulate

    # ---- snapshots -----------------------------------------------------------------------

    def snapshot(self, params: Any, data: Mapping[str, Any]) -> dict[str, Array]:
        """Low-dimensional projections of ONE chain's params (the driver vmaps and jits it).

        w_teacher (C,): w_c·w*/‖w*‖; w_teacher_random (C,): the same for the dataset's
        independent random teacher draw; w_random (C, R): w_c·u_r; h2_teacher / h2_random (C2,):
        Σ_{μ,j} h2_{c'j}(x_μ) t_{μj}/‖t‖ (3-layer CNN); layer2 / layer4 (P, c) or (P, H, W, c)
        (Myrtle-5, first `probe_channels` channels); w_full (C, d_in) and sigma (d_in, d_in)
        = Σ̂(θ) = (1/C) Σ_c w_c w_cᵀ over ALL channels if keep_full_weights (the top Σ mode's
        all-channel second moment v₁ᵀΣ̂(θ)v₁ at every snapshot, for Fig. 2a's gate, once v₁ is
        known at the end of the run). Channel axes are cut to the first `snapshot_channels`
        (None: all).
        `<p>_msq` (scalars) for each projection p above except the Myrtle probes: the mean of p²
        over ALL channels (and directions), e.g. w_teacher_msq = ŵ*ᵀ Σ̂(θ) ŵ* with
        Σ̂ = (1/C) Σ_c w_c w_cᵀ: invariant under permuting the channels, unlike any fixed subset.
        """
        # Channels are exchangeable, so a fixed subset has the full posterior's distribution;
        # but a subset's time series also follows which channels specialize (e.g. the one unit
        # aligned with the teacher in a mean-field FCN, which can stay so for ≫ 10⁴ steps). The
        # equilibration gates read the all-channel means, which only see the permutation-
        # invariant posterior the figures report.
        W_all = self.input_weights(params)
        W = W_all[: self.snapshot_channels]
        out: dict[str, Array] = {}
        for key, name in (("dirs", "w_random"), ("teacher_dir", "w_teacher"),
                          ("teacher_random_dir", "w_teacher_random")):
            if key in data:
                proj = W_all @ data[key]
                out[name] = proj[: self.snapshot_channels]
                out[f"{name}_msq"] = jnp.mean(proj**2)
        if self.arch == "cnn3" and ("teacher_h2" in data or "random_h2" in data):
            h2 = self.preactivations(params, data["X"])["h2"]  # (n, N, C2)
            for key, name in (("teacher_h2", "h2_teacher"), ("random_h2", "h2_random")):
                if key in data:
                    proj = jnp.einsum("mjc,mj->c", h2, data[key])
                    out[name] = proj[: self.snapshot_channels]
                    out[f"{name}_msq"] = jnp.mean(proj**2)
        if self.arch == "myrtle5":
            pre = self.preactivations(params, data["probe"])
            for layer in MYRTLE_PROBE_LAYERS:
                h = pre[layer][..., : self.probe_channels]
                out[layer] = _spatial_mean(h) if self.probe_spatial == "mean" else h
        if self.keep_full_weights:
            out["w_full"] = W
            out["sigma"] = sigma_hat(W_all)
        return out


def _spatial_mean(h: Array) -> Array:
    """(P, H, W, C) -> (P, C): average over positions (identity for (P, C))."""
    return h.mean(axis=tuple(range(1, h.ndim - 1))) if h.ndim > 2 else h


def finalize(acc: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Turn summed accumulators (leading chain axis) into per-chain means.

    Returns f_train/mean, f_train/sq_mean, f_test/..., sigma/mean, K2/mean, Q2/mean,
    probe/<layer>/mean, count, and with Rao-Blackwellization f_train_rb/mean, f_test_rb/mean,
    Qf/mean, field/mean, Kinv/mean and rb_count. Means of a chain with count 0 are NaN (no samples).
    """
    count = np.asarray(acc["count"])
    out: dict[str, Any] = {"count": count}

    def mean(key: str, n: np.ndarray = count) -> np.ndarray:
        a = np.asarray(acc[key], np.float64)
        denom = np.where(n > 0, n, np.nan).astype(np.float64)
        return a / denom.reshape((-1,) + (1,) * (a.ndim - 1))

    out["f_train"] = {"mean": mean("f_train_sum"), "sq_mean": mean("f_train_sq")}
    out["f_test"] = {"mean": mean("f_test_sum"), "sq_mean": mean("f_test_sq")}
    if "rb_count" in acc:
        out["rb_count"] = np.asarray(acc["rb_count"])
        for key, name in (("f_train_rb_sum", "f_train_rb"), ("f_test_rb_sum", "f_test_rb"),
                          ("Qf_sum", "Qf"), ("field_sum", "field"),
                          ("Kinv_sum", "Kinv")):
            if key in acc:
                out[name] = {"mean": mean(key, out["rb_count"])}
    for key, name in (("sigma_sum", "sigma"), ("K2_sum", "K2"), ("Q2_sum", "Q2")):
        if key in acc:
            out[name] = {"mean": mean(key)}
    probe = {k[len("probe_"):-len("_sum")]: {"mean": mean(k)} for k in acc
             if k.startswith("probe_")}
    if probe:
        out["probe"] = probe
    return out
