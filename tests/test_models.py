"""Tests of fleos.nets.models: shapes, parameter counts, reference forward passes, and the priors.

The prior checks compare the empirical output (or pre-activation) covariance over M independent
prior draws with an exact reference. Each comparison is exact at *finite* width (so no width
bias enters the tolerance):
  * depth-2 FCN, any φ: f = Σ_j a_j φ(h_j) with independent a, so E[f f'] = σ_a'² G(K1) exactly;
  * deep linear nets (FCN L=3, CNN3, Myrtle-5 with φ = identity): second moments propagate
    exactly layer by layer;
  * CNN2 (Eq. 7): the readout a_ic is independent of w_c, so E[f f'] = Q_f of Eq. 8 exactly;
  * Myrtle-5 layer-2 pre-activations with ReLU: given layer 1, h2 is linear in conv2.
Tolerance: the covariance estimate Ĉ_ab = mean_m s_m(a, b) of M i.i.d. per-draw statistics has
standard error SE_ab = std_m(s_m(a, b)) / √M (CLT). We require |Ĉ_ab − K_ab| ≤ Z · SE_ab with
Z = 4.5, a Bonferroni bound for ≤ 100 entries at a family-wise false-alarm rate < 10⁻³.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fleos  # noqa: F401  (enables float64)
from fleos.core.kernels import cnn2_output_kernel, fcn_gp_kernels, patches, relu_g
from fleos.nets.models import CNN2, CNN3, FCN, Myrtle5, build_model

Z = 4.5  # Bonferroni z for ≤ 100 simultaneous entries, family-wise false alarm < 1e-3
M = 4000  # prior draws per covariance check

FCN_CFG = {"d": 6, "sigma_w2": 3.0, "sigma_a2": 1.5}
CNN2_CFG = {"S": 4, "N": 3, "sigma_w2": 2.5, "sigma_a2": 2.0}
CNN3_CFG = {"N": 2, "S0": 3, "S1": 4, "sigma_w2": 2.0, "sigma_v2": 1.5, "sigma_a2": 15.0}
MYRTLE_CFG = {"sigma_w2": 2.0, "sigma_a2": 2.0, "in_channels": 2}


def _inputs(m: int, d: int, seed: int = 0) -> np.ndarray:
    """m test inputs of varied norms, with one pair strongly correlated (non-linear regime)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d)) * np.linspace(0.5, 1.5, m)[:, None]
    X[1] = 0.9 * X[0] + 0.3 * rng.standard_normal(d)
    return X


def _prior_outputs(model: nn.Module, X: np.ndarray, seed: int = 0, name: str | None = None):
    """(M, ...) outputs (or pre-activation `name`) over M independent prior draws, float64."""
    keys = jax.random.split(jax.random.key(seed), M)

    def one(key):
        params = model.init_prior(key, jnp.float64)
        out, pre = model.forward(params, jnp.asarray(X))
        return out if name is None else pre[name]

    return np.asarray(jax.jit(jax.vmap(one))(keys))


def _assert_cov_matches(samples: np.ndarray, K: np.ndarray) -> None:
    """samples: (M, m, m) per-draw second-moment statistics; K: (m, m) exact expectation."""
    est = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / math.sqrt(samples.shape[0])
    iu = np.triu_indices(K.shape[0])
    assert len(iu[0]) <= 100
    z = np.abs(est - K)[iu] / se[iu]
    assert np.all(z < Z), f"max |Ĉ−K|/SE = {z.max():.2f} (est {est[iu]}, exact {K[iu]})"


def _output_cov_check(model: nn.Module, X: np.ndarray, K: np.ndarray) -> None:
    f = _prior_outputs(model, X)  # (M, m)
    # Prior outputs have mean exactly 0 (readout weights are symmetric), so f f' is unbiased.
    _assert_cov_matches(f[:, :, None] * f[:, None, :], np.asarray(K))


# ---------------------------------------------------------------------------------------------
# Shapes, parameter counts, trees
# ---------------------------------------------------------------------------------------------

CASES = [
    ("fcn", FCN_CFG, 5, (7, 6), 6 * 5 + 5 * 5 + 5),
    ("fcn", {**FCN_CFG, "depth": 4}, 5, (7, 6), 6 * 5 + 2 * 5 * 5 + 5),
    ("cnn2", CNN2_CFG, 5, (7, 12), 5 * 4 + 3 * 5),
    ("cnn3", CNN3_CFG, 5, (7, 24), 5 * 3 + 5 * 5 * 4 + 5 * 2),
    ("myrtle5", MYRTLE_CFG, 4, (7, 8, 12, 2), 9 * 2 * 4 + 3 * 9 * 4 * 4 + 4),
]


@pytest.mark.parametrize("arch,cfg,width,xshape,count", CASES)
def test_shapes_counts_and_trees(arch, cfg, width, xshape, count):
    model = build_model(arch, cfg, width)
    x = jnp.asarray(np.random.default_rng(1).standard_normal(xshape), jnp.float32)
    params = model.init_prior(jax.random.key(0), jnp.float32)
    flax_params = model.init(jax.random.key(1), x)["params"]
    # init_prior, prior_variances and Flax's own init share one tree and the same shapes.
    assert jax.tree.structure(params) == jax.tree.structure(flax_params)
    assert jax.tree.structure(params) == jax.tree.structure(model.prior_variances())
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, flax_params)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    assert sum(p.size for p in jax.tree.leaves(params)) == count == model.num_params()
    out = model.apply({"params": params}, x)
    assert out.shape == (xshape[0],) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, model.forward(params, x)[0], rtol=1e-6)
    assert model.input_weights(params).shape[0] == width
    # an empty batch (a dataset without a test set) gives empty outputs, not an error
    assert model.forward(params, x[:0])[0].shape == (0,)
    pre = model.preactivations(params, x)
    b = xshape[0]
    if arch == "fcn":
        assert set(pre) == {f"h{k}" for k in range(1, cfg.get("depth", 3))}
        assert all(h.shape == (b, width) for h in pre.values())
        assert model.input_weights(params).shape == (width, cfg["d"])
    elif arch == "cnn2":
        assert pre["h1"].shape == (b, cfg["N"], width)
        assert model.input_weights(params).shape == (width, cfg["S"])
    elif arch == "cnn3":
        assert pre["h1"].shape == (b, cfg["N"], cfg["S1"], width)
        assert pre["h2"].shape == (b, cfg["N"], width)
        assert model.input_weights(params).shape == (width, cfg["S0"])
    else:
        H, W = xshape[1:3]
        assert pre["layer1"].shape == pre["layer2"].shape == (b, H, W, width)
        assert pre["layer3"].shape == (b, H // 2, W // 2, width)
        assert pre["layer4"].shape == (b, H // 4, W // 4, width)
        assert model.input_weights(params).shape == (width, 9 * cfg["in_channels"])


def test_build_model_returns_configured_modules():
    m = build_model("fcn", {**FCN_CFG, "scaling": "mean_field"}, 8)
    assert isinstance(m, FCN) and m.depth == 3 and m.activation == "erf"
    assert m.prior_variances() == {"W1": 3.0 / 6, "W2": 3.0 / 8, "a": 1.5 / 64}
    standard = build_model("fcn", {**FCN_CFG, "scaling": "standard"}, 8)
    assert standard.prior_variances()["a"] == 1.5 / 8
    m2 = build_model("cnn2", CNN2_CFG, 5)
    assert isinstance(m2, CNN2) and m2.prior_variances() == {"w": 2.5 / 4, "a": 2.0 / 15}
    m3 = build_model("cnn3", CNN3_CFG, 5)
    assert isinstance(m3, CNN3)
    assert m3.prior_variances() == {"w": 2.0 / 3, "v": 1.5 / 20, "a": 15.0 / 10}
    m5 = build_model("myrtle5", {"sigma_w2": 2.0, "sigma_a2": 1.0}, 4)
    assert isinstance(m5, Myrtle5) and m5.in_channels == 3 and m5.activation == "relu"
    assert m5.prior_variances()["conv1"] == 2.0 / 27
    assert m5.prior_variances()["conv2"] == 2.0 / 36
    assert m5.prior_variances()["readout"] == 1.0 / 4
    assert build_model("myrtle5", {**MYRTLE_CFG, "dataset": "digits", "in_channels": None}, 4
                       ).in_channels == 1


@pytest.mark.parametrize(
    "arch,cfg,width,match",
    [
        ("resnet", {}, 4, "unknown arch 'resnet'.*allowed"),
        ("cnn2", {"N": 3, "sigma_w2": 1.0, "sigma_a2": 1.0}, 4, "missing model key 'S'"),
        ("cnn2", {**CNN2_CFG, "sigma_b2": 1.0}, 4, "unknown model key 'sigma_b2'.*allowed"),
        ("cnn2", {**CNN2_CFG, "activation": "tanh"}, 4, "'activation'.*erf.*'tanh'"),
        ("fcn", {**FCN_CFG, "scaling": "mf"}, 4, "'scaling'.*mean_field.*'mf'"),
        ("fcn", {**FCN_CFG, "depth": 1}, 4, "'depth'.*>= 2"),
        ("fcn", {**FCN_CFG, "d": 6.5}, 4, "'d'.*integer"),
        ("cnn3", {**CNN3_CFG, "sigma_v2": -1.0}, 4, "'sigma_v2'.*> 0"),
        ("cnn3", {**CNN3_CFG, "sigma_a2": "big"}, 4, "'sigma_a2'.*> 0"),
        ("myrtle5", {**MYRTLE_CFG, "dataset": "mnist"}, 4, "'dataset'.*cifar10.*'mnist'"),
        ("myrtle5", {**MYRTLE_CFG, "dataset": "digits"}, 4, "'in_channels'.*is 2.*1 channel"),
        ("cnn2", CNN2_CFG, 0, "width must be an integer >= 1"),
        ("cnn2", [1, 2], 4, "must be a mapping"),
    ],
)
def test_build_model_errors(arch, cfg, width, match):
    with pytest.raises(ValueError, match=match):
        build_model(arch, cfg, width)


def test_myrtle5_rejects_bad_image_shape():
    model = build_model("myrtle5", MYRTLE_CFG, 4)
    params = model.init_prior(jax.random.key(0))
    with pytest.raises(ValueError, match="divisible by 4"):
        model.forward(params, jnp.zeros((2, 6, 8, 2)))


def test_myrtle5_conv_taps_equal_xla_convolution_and_its_gradient():
    """The CPU convolution (nine shifted GEMMs) against lax.conv_general_dilated, in float64,
    where the two differ only by the summation order: agreement to 1e-12 relative."""
    from fleos.nets.models import _conv3x3

    x = jax.random.normal(jax.random.key(1), (3, 8, 4, 5), jnp.float64)
    k = jax.random.normal(jax.random.key(2), (3, 3, 5, 7), jnp.float64)
    ref = _conv3x3(x, k, "xla")
    np.testing.assert_allclose(_conv3x3(x, k, "taps"), ref, rtol=1e-12, atol=1e-12)
    X = jax.random.normal(jax.random.key(3), (4, 8, 8, 2), jnp.float64)
    models = [Myrtle5(width=4, in_channels=2, conv_impl=impl) for impl in ("xla", "taps")]
    params = models[0].init_prior(jax.random.key(4), jnp.float64)

    def loss(p, m):
        out, pre = m.forward(p, X)
        return jnp.sum(out ** 2) + jnp.sum(pre["layer3"] ** 2)

    g_xla, g_taps = (jax.grad(loss)(params, m) for m in models)
    for name in params:
        np.testing.assert_allclose(g_taps[name], g_xla[name], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="conv impl must be one of"):
        _conv3x3(x, k, "fft")
    # on CPU, `auto` is the taps: no XLA convolution in the traced program
    assert jax.default_backend() == "cpu"
    assert "conv_general_dilated" not in str(jax.make_jaxpr(lambda a: _conv3x3(a, k))(x))
    assert "conv_general_dilated" in str(jax.make_jaxpr(lambda a: _conv3x3(a, k, "xla"))(x))


# ---------------------------------------------------------------------------------------------
# Forward passes against independent reference implementations
# ---------------------------------------------------------------------------------------------


def test_cnn2_matches_eq7_loop():
    model = build_model("cnn2", CNN2_CFG, 5)
    p = jax.tree.map(np.asarray, model.init_prior(jax.random.key(3), jnp.float64))
    X = _inputs(4, 12)
    S, N = CNN2_CFG["S"], CNN2_CFG["N"]
    erf = np.vectorize(math.erf)
    ref = [sum(p["a"][i, c] * erf(p["w"][c] @ x[i * S:(i + 1) * S])
               for i in range(N) for c in range(5)) for x in X]
    np.testing.assert_allclose(model.forward(p, X)[0], ref, rtol=1e-12)


def test_cnn3_matches_eq14_loop():
    model = build_model("cnn3", CNN3_CFG, 3)
    p = jax.tree.map(np.asarray, model.init_prior(jax.random.key(4), jnp.float64))
    N, S0, S1 = CNN3_CFG["N"], CNN3_CFG["S0"], CNN3_CFG["S1"]
    X = _inputs(3, N * S1 * S0)
    erf = math.erf
    for x, f in zip(X, model.forward(p, X)[0], strict=True):
        h1 = {(c, j, i): p["w"][c] @ x[(i + j * S1) * S0:(i + j * S1 + 1) * S0]
              for c in range(3) for j in range(N) for i in range(S1)}
        h2 = {(k, j): sum(p["v"][k, c, i] * erf(h1[c, j, i]) for i in range(S1) for c in range(3))
              for k in range(3) for j in range(N)}
        ref = sum(p["a"][k, j] * erf(h2[k, j]) for j in range(N) for k in range(3))
        assert f == pytest.approx(ref, rel=1e-12)


def test_myrtle5_matches_flax_layers():
    """Our lax convolutions / pooling against flax.linen.Conv and avg_pool (Shankar et al.)."""
    model = build_model("myrtle5", MYRTLE_CFG, 4)
    p = model.init_prior(jax.random.key(5), jnp.float64)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((3, 8, 12, 2)))

    def conv(h, k):
        return nn.Conv(4, (3, 3), padding="SAME", use_bias=False).apply({"params": {"kernel": k}},
                                                                         h)

    def pool(h):
        return nn.avg_pool(h, (2, 2), strides=(2, 2))

    h = jax.nn.relu(conv(x, p["conv1"]))
    h = pool(jax.nn.relu(conv(h, p["conv2"])))
    h = pool(jax.nn.relu(conv(h, p["conv3"])))
    h = jax.nn.relu(conv(h, p["conv4"]))
    ref = h.mean(axis=(1, 2)) @ p["readout"]
    np.testing.assert_allclose(model.forward(p, x)[0], ref, rtol=1e-10)
    # input_weights rows are the flattened (kh, kw, c_in) filters of conv1.
    w = model.input_weights(p)
    np.testing.assert_array_equal(w[2].reshape(3, 3, 2), p["conv1"][..., 2])


# ---------------------------------------------------------------------------------------------
# Priors: variances of the draws, and output covariances against the exact kernels
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch,cfg,width,_x,_c", CASES)
def test_prior_variances_match_draws(arch, cfg, width, _x, _c):
    model = build_model(arch, cfg, width)
    keys = jax.random.split(jax.random.key(7), 400)
    draws = jax.jit(jax.vmap(lambda k: model.init_prior(k, jnp.float64)))(keys)
    for name, v in model.prior_variances().items():
        w = np.asarray(draws[name]).ravel()
        m = w.size
        # Gaussian entries: SE of the sample variance is v √(2/(m−1)), of the mean √(v/m).
        assert abs(w.var(ddof=1) - v) < 5 * v * math.sqrt(2 / (m - 1)), name
        assert abs(w.mean()) < 5 * math.sqrt(v / m), name
    # Different keys give different draws; the same key the same draw.
    a = model.init_prior(jax.random.key(1))
    b = model.init_prior(jax.random.key(1))
    c = model.init_prior(jax.random.key(2))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.array_equal(a[name], c[name])


@pytest.mark.parametrize("activation", ["erf", "relu"])
@pytest.mark.parametrize("scaling", ["standard", "mean_field"])
def test_fcn_depth2_prior_covariance_equals_nngp(activation, scaling):
    width = 3  # exact at any width for depth 2; a small width also keeps f far from Gaussian
    cfg = {**FCN_CFG, "depth": 2, "activation": activation, "scaling": scaling}
    model = build_model("fcn", cfg, width)
    X = _inputs(5, FCN_CFG["d"])
    sa2 = cfg["sigma_a2"] / (width if scaling == "mean_field" else 1)
    K = fcn_gp_kernels(jnp.asarray(X), (cfg["sigma_w2"], sa2), activation)[-1]
    _output_cov_check(model, X, K)


def test_fcn_depth3_linear_prior_covariance_exact():
    cfg = {**FCN_CFG, "activation": "linear", "scaling": "standard"}
    model = build_model("fcn", cfg, 4)
    X = _inputs(5, FCN_CFG["d"])
    K = fcn_gp_kernels(jnp.asarray(X), (3.0, 3.0, 1.5), "linear")[-1]
    _output_cov_check(model, X, K)


def test_cnn2_prior_covariance_equals_eq8_kernel():
    model = build_model("cnn2", CNN2_CFG, 3)
    X = _inputs(6, 12)
    P = patches(jnp.asarray(X), CNN2_CFG["N"], CNN2_CFG["S"])
    Sigma = CNN2_CFG["sigma_w2"] / CNN2_CFG["S"] * jnp.eye(CNN2_CFG["S"])
    K = cnn2_output_kernel(P, P, Sigma, CNN2_CFG["sigma_a2"], "erf")
    _output_cov_check(model, X, K)


def test_cnn3_linear_prior_covariance_exact():
    # Linear Eq. 14: E[f f'] = σ_a² σ_v² σ_w² x·x'/d, for any C1, C2.
    model = build_model("cnn3", {**CNN3_CFG, "activation": "linear"}, 2)
    X = _inputs(5, 24)
    K = 15.0 * 1.5 * 2.0 * X @ X.T / 24
    _output_cov_check(model, X, K)


# Exact conv-net kernels for Myrtle-5 (the references of the two tests below). K tensors are
# indexed [a, i, j, b, k, l]: image a at pixel (i, j) against image b at pixel (k, l).


def _shift_sum(K: np.ndarray) -> np.ndarray:
    """Σ_δ K[a, p+δ, b, q+δ] over the 3×3 offsets δ, zero outside the image ('SAME' padding)."""
    m, H, W = K.shape[:3]
    Kp = np.pad(K, ((0, 0), (1, 1), (1, 1), (0, 0), (1, 1), (1, 1)))
    out = np.zeros_like(K)
    for dy in range(3):
        for dx in range(3):
            out += Kp[:, dy:dy + H, dx:dx + W, :, dy:dy + H, dx:dx + W]
    return out


def _pool(K: np.ndarray) -> np.ndarray:
    m, H, W = K.shape[:3]
    return K.reshape(m, H // 2, 2, W // 2, 2, m, H // 2, 2, W // 2, 2).mean(axis=(2, 4, 7, 9))


def _diag(K: np.ndarray) -> np.ndarray:
    m, H, W = K.shape[:3]
    return np.diagonal(K.reshape(m * H * W, m * H * W)).reshape(m, H, W)


def _myrtle_layer1(x: np.ndarray, sigma_w2: float) -> np.ndarray:
    cin = x.shape[-1]
    return sigma_w2 / (9 * cin) * _shift_sum(np.einsum("aijc,bklc->aijbkl", x, x))


def test_myrtle5_relu_layer2_covariance_exact():
    """E[h2 h2'] = σ_w²/9 Σ_δ G_relu(K1)(p+δ, q+δ): exact at any width (h2 linear in conv2)."""
    width = 3
    model = build_model("myrtle5", MYRTLE_CFG, width)
    x = np.random.default_rng(3).standard_normal((2, 8, 8, 2))
    K1 = _myrtle_layer1(x, 2.0)
    d1 = _diag(K1)
    G1 = np.asarray(relu_g(K1, d1[:, :, :, None, None, None], d1[None, None, None]))
    K2 = 2.0 / 9 * _shift_sum(G1)
    h2 = _prior_outputs(model, x, name="layer2")  # (M, 2, 8, 8, C)
    pix = [(0, 0), (3, 4), (7, 2)]  # a corner (padding matters), the centre, an edge
    sel = np.stack([h2[:, a, i, j, :] for a in range(2) for (i, j) in pix], axis=1)
    # Per-draw statistic: the channel average (channels within a draw are not independent).
    samples = np.einsum("mpc,mqc->mpq", sel, sel) / width
    Kref = np.array([[K2[a, i, j, b, k, l] for b in range(2) for (k, l) in pix]
                     for a in range(2) for (i, j) in pix])
    _assert_cov_matches(samples, Kref)


def test_myrtle5_linear_prior_covariance_exact():
    """Deep linear Myrtle-5: conv / pool / readout propagate the covariance exactly."""
    model = build_model("myrtle5", {**MYRTLE_CFG, "activation": "linear"}, 3)
    x = np.random.default_rng(4).standard_normal((4, 4, 4, 2))
    x[1] = 0.8 * x[0] + 0.4 * x[1]
    K = _myrtle_layer1(x, 2.0)
    K = 2.0 / 9 * _shift_sum(K)
    K = 2.0 / 9 * _shift_sum(_pool(K))
    K = 2.0 / 9 * _shift_sum(_pool(K))
    Kf = 2.0 * K.mean(axis=(1, 2, 4, 5))
    _output_cov_check(model, x, Kf)
