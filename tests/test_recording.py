"""fleos.sampling.recording: online sums equal a direct computation over the same trajectory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fleos  # noqa: F401  (enables float64 for the accumulators)
from fleos.nets.models import build_model
from fleos.sampling.recording import Recorder, finalize, random_directions
from fleos.sampling.sampler import ChainState, make_potential, run_steps, ula_step

MODELS = {
    "cnn2": {"S": 4, "N": 3, "sigma_w2": 2.0, "sigma_a2": 2.0},
    "cnn3": {"N": 2, "S0": 3, "S1": 2, "sigma_w2": 2.0, "sigma_v2": 2.0, "sigma_a2": 2.0},
    "fcn": {"d": 5, "sigma_w2": 2.0, "sigma_a2": 2.0},
}
D = {"cnn2": 12, "cnn3": 12, "fcn": 5}
KERNELS = {"cnn2": ("sigma",), "cnn3": ("sigma", "K2", "Q2"), "fcn": ("sigma",)}


def _setup(arch: str, n: int = 6, width: int = 4):
    model = build_model(arch, MODELS[arch], width)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, D[arch]))
    Xt = rng.normal(size=(3, D[arch]))
    y = rng.normal(size=n)

    def apply_fn(p, x):
        return model.forward(p, x)[0]

    teacher = {"teacher_w": rng.normal(size=model.input_weights(
        model.init_prior(jax.random.PRNGKey(0)))[0].shape)}
    if arch == "cnn3":
        teacher["teacher_h2_train"] = rng.normal(size=(n, MODELS[arch]["N"]))
    rec = Recorder(arch=arch, apply_fn=apply_fn, input_weights=model.input_weights,
                   preactivations=model.preactivations, record_every=4, kernels=KERNELS[arch],
                   model_cfg=MODELS[arch])
    d_in = teacher["teacher_w"].shape[0]
    data = rec.make_data(X, Xt, teacher, d_in, 3, 7, jnp.float32)
    pot = make_potential(apply_fn, model.prior_variances(), jnp.asarray(X, jnp.float32),
                         jnp.asarray(y, jnp.float32), 0.1)
    params = model.init_prior(jax.random.PRNGKey(1), jnp.float32)
    return model, rec, data, pot, params, X, Xt


def _direct(arch, model, params, X, Xt):
    """Per-sample quantities written out independently of the recorder (paper's formulas),
    for a stack of parameter samples (leading axis), in float64."""
    p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    X, Xt = jnp.asarray(X), jnp.asarray(Xt)

    def one(p):
        W = model.input_weights(p)
        out = {"f": model.forward(p, X)[0], "ft": model.forward(p, Xt)[0],
               "sigma": jnp.einsum("ca,cb->ab", W, W) / W.shape[0]}
        if arch == "cnn3":
            pre = model.preactivations(p, X)
            h2 = pre["h2"]  # (n, N, C2): K2_{(mu j),(nu k)} = mean_c h2 h2
            n, N, C2 = h2.shape
            out["K2"] = jnp.einsum("mjc,nkc->mjnk", h2, h2).reshape(n * N, n * N) / C2
            h1 = pre["h1"]  # (n, N, S1, C1)
            phi = jax.scipy.special.erf(h1)
            S1, C1 = h1.shape[2], h1.shape[3]
            out["Q2"] = (MODELS["cnn3"]["sigma_v2"] / (C1 * S1)) * jnp.einsum(
                "mjic,nkic->mjnk", phi, phi).reshape(n * N, n * N)
        return out

    return {k: np.asarray(v) for k, v in jax.jit(jax.vmap(one))(p64).items()}


@pytest.mark.parametrize("arch", ["cnn2", "cnn3", "fcn"])
def test_online_means_equal_direct_computation(arch: str) -> None:
    model, rec, data, pot, params, X, Xt = _setup(arch)
    key = jax.random.PRNGKey(3)
    acc = rec.init_acc(data, params)
    acc["sampling"] = jnp.asarray(True)
    n_steps = 14
    state, acc, _ = jax.jit(
        lambda s, a: run_steps(pot, s, key, 1e-3, n_steps, accumulate=rec.accumulator(data),
                               acc=a))(ChainState(params, jnp.int32(0)), acc)
    # the same trajectory step by step (same keys: noise of step t is fold_in(key, t))
    step = jax.jit(lambda s: ula_step(pot, s, key, 1e-3)[0])
    s = ChainState(params, jnp.int32(0))
    kept = []
    for _ in range(n_steps):
        s = step(s)
        if int(s.step) % 4 == 0:
            kept.append(s.params)
    stacked = _direct(arch, model, jax.tree.map(lambda *a: jnp.stack(a), *kept), X, Xt)
    samples = [{k: v[i] for k, v in stacked.items()} for i in range(len(kept))]
    assert int(acc["count"]) == len(samples) == 3  # steps 4, 8, 12
    np.testing.assert_array_equal(np.asarray(state.params["a"] if "a" in state.params else
                                             jax.tree.leaves(state.params)[0]),
                                  np.asarray(s.params["a"] if "a" in s.params else
                                             jax.tree.leaves(s.params)[0]))
    fin = finalize(jax.tree.map(lambda a: np.asarray(a)[None], acc))
    mean = {k: np.mean([x[k] for x in samples], axis=0) for k in samples[0]}
    # Tolerance: per-sample products are float32 (relative rounding ~1e-6 of the entries'
    # scale); the sums are float64, so 1e-5 of the typical magnitude bounds the difference.
    def close(a, b):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())

    close(fin["f_train"]["mean"][0], mean["f"])
    close(fin["f_train"]["sq_mean"][0], np.mean([x["f"] ** 2 for x in samples], axis=0))
    close(fin["f_test"]["mean"][0], mean["ft"])
    close(fin["f_test"]["sq_mean"][0], np.mean([x["ft"] ** 2 for x in samples], axis=0))
    close(fin["sigma"]["mean"][0], mean["sigma"])
    assert fin["sigma"]["mean"].dtype == np.float64
    if arch == "cnn3":
        close(fin["K2"]["mean"][0], mean["K2"])
        close(fin["Q2"]["mean"][0], mean["Q2"])


def test_nothing_recorded_outside_sampling_stage() -> None:
    _, rec, data, pot, params, _, _ = _setup("cnn2")
    acc = rec.init_acc(data, params)  # sampling flag False by default
    _, acc, _ = run_steps(pot, ChainState(params, jnp.int32(0)), jax.random.PRNGKey(0), 1e-3, 9,
                          accumulate=rec.accumulator(data), acc=acc)
    assert int(acc["count"]) == 0
    assert float(jnp.abs(acc["sigma_sum"]).max()) == 0.0
    fin = finalize(jax.tree.map(lambda a: np.asarray(a)[None], acc))
    assert np.all(np.isnan(fin["sigma"]["mean"]))  # no samples -> NaN, never a fake zero


def test_snapshot_projections() -> None:
    model, rec, data, _, params, X, _ = _setup("cnn3")
    snap = rec.snapshot(params, data)
    W = np.asarray(model.input_weights(params), np.float64)
    U = random_directions(W.shape[1], 3, 7)
    np.testing.assert_allclose(np.linalg.norm(U, axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(snap["w_random"], W @ U, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(data["teacher_dir"]) @ np.asarray(data["teacher_dir"]),
                               1.0, rtol=1e-6)
    np.testing.assert_allclose(snap["w_teacher"], W @ np.asarray(data["teacher_dir"]),
                               rtol=1e-5, atol=1e-6)
    h2 = np.asarray(model.preactivations(params, jnp.asarray(X, jnp.float32))["h2"])
    t = np.asarray(data["teacher_h2"])
    np.testing.assert_allclose(snap["h2_teacher"], np.einsum("mjc,mj->c", h2, t),
                               rtol=1e-5, atol=1e-6)
    assert "h2_random" not in snap  # no random-teacher array given in this test


def test_vmapped_chains_mask_and_real_branch() -> None:
    """Two chains, one sampling and one not: counts differ; the step test stays a `cond`."""
    _, rec, data, pot, params, _, _ = _setup("cnn2")
    acc = rec.init_acc(data, params)
    accs = jax.tree.map(lambda a: jnp.stack([a, a]), acc)
    accs["sampling"] = jnp.asarray([True, False])
    ps = jax.tree.map(lambda a: jnp.stack([a, a]), params)
    keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])

    def chunk(ps, accs):
        # step shared by all chains, not vmapped (as in fleos.sampling.experiment)
        def one(p, k, a):
            st, a, _ = run_steps(pot, ChainState(p, jnp.int32(0)), k, 1e-3, 8,
                                 accumulate=rec.accumulator(data), acc=a)
            return a
        return jax.vmap(one)(ps, keys, accs)

    out = jax.jit(chunk)(ps, accs)
    assert list(np.asarray(out["count"])) == [2, 0]  # steps 4 and 8 for the sampling chain
    assert float(jnp.abs(out["sigma_sum"][1]).max()) == 0.0
    # a real conditional (not a select evaluating the sample at every step)
    assert "cond[" in str(jax.make_jaxpr(chunk)(ps, accs))


def test_snapshot_channel_subset() -> None:
    import dataclasses

    _, rec, data, _, params, _, _ = _setup("cnn3")
    full = rec.snapshot(params, data)
    sub = dataclasses.replace(rec, snapshot_channels=2).snapshot(params, data)
    for k in ("w_random", "w_teacher", "h2_teacher"):
        assert sub[k].shape[0] == 2
        np.testing.assert_array_equal(sub[k], full[k][:2])
        # the gates' series: the mean square over ALL channels, whatever the subset
        np.testing.assert_allclose(sub[f"{k}_msq"], np.mean(np.asarray(full[k]) ** 2),
                                   rtol=1e-6)
        np.testing.assert_array_equal(sub[f"{k}_msq"], full[f"{k}_msq"])


def test_snapshot_sigma_is_over_all_channels() -> None:
    """With full weights kept, a snapshot carries Σ̂(θ) = (1/C) Σ_c w_c w_cᵀ over ALL channels
    (Fig. 2a's all-channel top-mode series), while `w_full` is the recorded subset."""
    import dataclasses

    model, rec, data, _, params, _, _ = _setup("fcn", width=5)
    sub = dataclasses.replace(rec, snapshot_channels=2, keep_full_weights=True)
    snap = sub.snapshot(params, data)
    W = np.asarray(model.input_weights(params), np.float64)
    assert snap["w_full"].shape == (2, W.shape[1])
    np.testing.assert_allclose(snap["sigma"], W.T @ W / W.shape[0], rtol=1e-5, atol=1e-7)
    assert "sigma" not in rec.snapshot(params, data)  # only when full weights are kept


def _rb_recorder(arch: str, model, rb_every: int, sigma2: float = 0.1) -> Recorder:
    return Recorder(arch=arch, apply_fn=lambda p, x: model.forward(p, x)[0],
                    input_weights=model.input_weights, preactivations=model.preactivations,
                    record_every=4, kernels=(*KERNELS[arch], "Qf", "field", "Kinv"),
                    model_cfg=MODELS[arch],
                    readout_features=model.readout_features,
                    readout_variance=model.prior_variances()[model.readout], sigma2=sigma2,
                    rb_every=rb_every)


RB_CASES = {
    "cnn2": ("cnn2", MODELS["cnn2"], (7, 12)),
    "cnn3": ("cnn3", MODELS["cnn3"], (7, 12)),
    "fcn": ("fcn", MODELS["fcn"], (7, 5)),
    "fcn_mean_field": ("fcn", {**MODELS["fcn"], "scaling": "mean_field"}, (7, 5)),
    "myrtle5": ("myrtle5", {"sigma_w2": 2.0, "sigma_a2": 1.5, "dataset": "digits"}, (7, 4, 4, 1)),
}


@pytest.mark.parametrize("case", sorted(RB_CASES))
def test_rao_blackwell_is_the_readout_posterior_mean(case: str) -> None:
    """Given the hidden weights, the sampler's own U (`make_potential`) is quadratic in the
    readout a, so its conditional mean is E[a] = −H⁻¹ ∇_a U(a = 0) with H = ∇²_a U, computed
    here by autodiff of U alone (no Φ, no v_a, no σ² taken from the code under test). The
    recorder's dual-form means E[f | hidden] must equal f at E[a] on train and test inputs,
    its Qf must be the kernel Cov(f | hidden) of the prior, and its field εεᵀ − (Qf + σ² I)⁻¹
    with ε = (y − E[f | hidden])/σ², and Kinv (Qf + σ² I)⁻¹, all to float64 rounding (1e-9)."""
    arch, cfg, shape = RB_CASES[case]
    model = build_model(arch, cfg, 3, param_dtype=jnp.float64)
    rng = np.random.default_rng(0)
    X = rng.normal(size=shape)
    Xt = rng.normal(size=(3, *shape[1:]))
    y = rng.normal(size=shape[0])
    sigma2 = 0.1
    params = model.init_prior(jax.random.PRNGKey(1), jnp.float64)
    name = model.readout
    rec = Recorder(arch=arch, apply_fn=lambda p, x: model.forward(p, x)[0],
                   input_weights=model.input_weights, preactivations=model.preactivations,
                   record_every=4, kernels=("sigma", "Qf", "field", "Kinv"), model_cfg=cfg,
                   readout_features=model.readout_features,
                   readout_variance=model.prior_variances()[name], sigma2=sigma2, rb_every=1)
    data = rec.make_data(X, Xt, {}, model.input_weights(params).shape[1], 2, 7, jnp.float64,
                         y=y)
    out = {k: np.asarray(v) for k, v in rec.rao_blackwell(params, data).items()}

    pot = make_potential(lambda p, x: model.forward(p, x)[0], model.prior_variances(),
                         jnp.asarray(X), jnp.asarray(y), sigma2)

    def U_of_readout(a_flat):
        a = a_flat.reshape(params[name].shape)
        return pot({**params, name: a})[0]

    zero = jnp.zeros(params[name].size, jnp.float64)
    H = np.asarray(jax.hessian(U_of_readout)(zero))
    g0 = np.asarray(jax.grad(U_of_readout)(zero))
    a_mean = jnp.asarray(-np.linalg.solve(H, g0)).reshape(params[name].shape)
    post = {**params, name: a_mean}
    np.testing.assert_allclose(out["f_train_rb_sum"], model.forward(post, jnp.asarray(X))[0],
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out["f_test_rb_sum"], model.forward(post, jnp.asarray(Xt))[0],
                               rtol=1e-9, atol=1e-12)
    # Prior covariance of f(X) given the hidden weights, from the prior's own draws' algebra:
    # Cov f = J diag(v_a) Jᵀ with J = ∂f/∂a, v_a read back from U's Hessian in a alone
    # (the prior part of H is I/v_a).
    J = np.asarray(jax.jacfwd(lambda a: model.forward(
        {**params, name: a.reshape(params[name].shape)}, jnp.asarray(X))[0])(zero))
    v_a = 1.0 / (H - J.T @ J / sigma2)[0, 0]
    np.testing.assert_allclose(out["Qf_sum"], v_a * J @ J.T, rtol=1e-9, atol=1e-12)
    eps = (y - np.asarray(model.forward(post, jnp.asarray(X))[0])) / sigma2
    K_inv = np.linalg.inv(v_a * J @ J.T + sigma2 * np.eye(len(y)))
    np.testing.assert_allclose(out["Kinv_sum"], K_inv, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out["field_sum"], np.outer(eps, eps) - K_inv, rtol=1e-9,
                               atol=1e-9)


def test_rao_blackwell_accumulates_every_rb_every_steps_of_the_sampling_stage() -> None:
    model, _, _, pot, params, X, Xt = _setup("cnn2")
    rec = _rb_recorder("cnn2", model, rb_every=3)
    y = np.random.default_rng(5).normal(size=X.shape[0])
    data = rec.make_data(X, Xt, {}, 4, 2, 7, jnp.float32, y=y)
    acc = rec.init_acc(data, params)
    acc["sampling"] = jnp.asarray(True)
    key = jax.random.PRNGKey(3)
    run = jax.jit(lambda s, a: run_steps(pot, s, key, 1e-3, 14,
                                         accumulate=rec.accumulator(data), acc=a))
    _, acc, _ = run(ChainState(params, jnp.int32(0)), acc)
    step = jax.jit(lambda s: ula_step(pot, s, key, 1e-3)[0])
    s, kept = ChainState(params, jnp.int32(0)), []
    for _ in range(14):
        s = step(s)
        if int(s.step) % 3 == 0:
            kept.append(s.params)
    assert int(acc["rb_count"]) == len(kept) == 4  # steps 3, 6, 9, 12
    assert int(acc["count"]) == 3  # record_every = 4 is unchanged
    direct = [rec.rao_blackwell(p, data) for p in kept]
    fin = finalize(jax.tree.map(lambda a: np.asarray(a)[None], acc))
    for key_sum, name in (("f_train_rb_sum", "f_train_rb"), ("f_test_rb_sum", "f_test_rb"),
                          ("Qf_sum", "Qf"), ("field_sum", "field"),
                          ("Kinv_sum", "Kinv")):
        want = np.mean([np.asarray(d[key_sum]) for d in direct], axis=0)
        np.testing.assert_allclose(fin[name]["mean"][0], want, rtol=1e-12, atol=1e-12)
    # outside the sampling stage nothing is added
    acc0 = rec.init_acc(data, params)
    _, acc0, _ = run(ChainState(params, jnp.int32(0)), acc0)
    assert int(acc0["rb_count"]) == 0
    assert not np.any(np.asarray(acc0["f_train_rb_sum"]))
