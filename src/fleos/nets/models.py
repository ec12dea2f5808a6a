"""Flax (linen) models of the paper, each carrying its own Bayesian prior. No biases anywhere.

* `FCN`     — the L-layer fully connected network of Eq. 1, standard or mean-field readout.
* `CNN2`    — the 2-layer CNN of Eq. 7 (non-overlapping patches, one activated layer).
* `CNN3`    — the 3-layer CNN of Eq. 14 (Methods, "Three layer CNN model definition").
* `Myrtle5` — the Myrtle-5 CNN of ref. 42 (Shankar et al. 2020) used for Fig. 6.

Every module is a frozen dataclass (a linen Module) and exposes, besides `__call__(x) -> (batch,)`:

* `param_shapes()`     — name -> shape of each weight (a flat dict; `params` has this tree);
* `prior_variances()`  — name -> scalar prior variance σ_l²/fan-in of each weight. This is the
  single source of truth for the prior: `init_prior` draws from it and the sampler's weight
  decay (the Gaussian prior term of U(θ), Eq. 15 / Methods) reads it;
* `init_prior(key, dtype)` — one draw of `params` from the prior;
* `forward(params, x)`  — (outputs, dict of named pre-activations), a pure function;
* `preactivations(params, x)` — the named hidden pre-activations that the figures need;
* `input_weights(params)` — rows w_c of the input layer, (channels, d_in), whose second moment
  is the input-weight covariance Σ of the EoS (Eqs. 5, 8);
* `readout_features(params, x)` — (Φ, pre-activations): the last hidden layer's activations
  Φ (batch, P), with f = Φ · vec(params[`readout`]). `forward` is computed from it, so the
  two cannot disagree. Given the hidden weights f is linear in the readout, whose prior is
  N(0, v_a I): f is then a GP with kernel v_a ΦΦᵀ (the Rao-Blackwellized outputs of
  `fleos.sampling.recording` use this).

`params` is the bare dict of weights (not the ``{"params": ...}`` collection), so
``model.apply({"params": params}, x)`` and ``model.forward(params, x)[0]`` agree. `model.init`
also draws from the prior (its initialisers use the same variances), but with Flax's own key
splitting; use `init_prior` when the draw must be reproducible from a key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fleos.core.kernels import ACTIVATIONS, patches

Array = jax.Array
Params = dict[str, Array]

SCALINGS = ("standard", "mean_field")
# The FCN readout scaling when a config or caller names none: the paper's FCN experiments
# (Figs. 2a, 2b) are mean-field. The config, `FCNProblem` and `fleos eos fcn` all read it.
DEFAULT_SCALING = "mean_field"
ARCHS = ("fcn", "cnn2", "cnn3", "myrtle5")
# The Myrtle-5 pre-activations of Fig. 6: recorded on the probe images while sampling
# (fleos.sampling.recording), drawn at the prior (fleos.analysis.aggregate), plotted (fig6).
MYRTLE_PROBE_LAYERS = ("layer2", "layer4")


def _normal_init(variance: float) -> Callable[..., Array]:
    """Flax initialiser drawing N(0, variance) entries (the prior of one weight tensor)."""

    def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        return math.sqrt(variance) * jax.random.normal(key, shape, dtype)

    return init


class _PriorModule(nn.Module):
    """Shared machinery: params from `param_shapes` / `prior_variances`, output from `forward`.

    Subclasses define the dataclass fields (including `param_dtype`), `param_shapes`,
    `prior_variances`, `readout_features` and `input_weights` (and `readout` if the readout
    weight is not named "a").
    """

    # Name of the readout weight (the last, linear layer) in `params`.
    readout = "a"

    @nn.nowrap
    def forward(self, params: Params, x: Array) -> tuple[Array, dict[str, Array]]:
        """(outputs (batch,), named pre-activations): f = Φ · vec(readout)."""
        phi, pre = self.readout_features(params, x)
        return phi @ params[self.readout].reshape(-1), pre

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shapes = self.param_shapes()
        var = self.prior_variances()
        params = {
            name: self.param(name, _normal_init(var[name]), shape, self.param_dtype)
            for name, shape in shapes.items()
        }
        return self.forward(params, x)[0]

    @nn.nowrap
    def init_prior(self, key: Array, dtype: Any = jnp.float32) -> Params:
        """One draw of the weights from the prior: leaf ~ N(0, prior_variances()[leaf]).

        One standard-normal vector of length `num_params()` is drawn from `key` and cut into
        the leaves in `param_shapes` order (one random-number program per model instead of one
        per leaf shape: JAX compiles a threefry kernel per shape). vmap-able over `key`.
        """
        var = self.prior_variances()
        shapes = self.param_shapes()
        z = jax.random.normal(key, (self.num_params(),), dtype)
        params, start = {}, 0
        for name, shape in shapes.items():
            size = math.prod(shape)
            params[name] = math.sqrt(var[name]) * z[start:start + size].reshape(shape)
            start += size
        return params

    @nn.nowrap
    def preactivations(self, params: Params, x: Array) -> dict[str, Array]:
        """Named hidden pre-activations (before the activation is applied) on inputs x."""
        return self.forward(params, x)[1]

    @nn.nowrap
    def num_params(self) -> int:
        """Total number of weights."""
        return sum(math.prod(s) for s in self.param_shapes().values())


# ---------------------------------------------------------------------------------------------
# FCN (Eq. 1)
# ---------------------------------------------------------------------------------------------


class FCN(_PriorModule):
    """L-layer fully connected network of Eq. 1 with all hidden widths N_l = `width`.

    f(x) = Σ_j a_j φ(h^(L-1)_j), h^(l) = W^(l) φ(h^(l-1)), h^(1) = W^(1) x.
    Params: ``W1`` (d, N), ``W2`` … ``W{L-1}`` (N, N) — stored as (fan_in, fan_out) so that
    h = x @ W — and the readout ``a`` (N,).
    Prior: W^(l) ~ N(0, σ_w²/N_{l-1}) (N_0 = d); readout a ~ N(0, σ_a²/N_{L-1}) ("standard") or
    N(0, σ_a²/N_{L-1}²) ("mean_field": the paper's σ_a² = 2/N2 in its FCN experiments, i.e. the
    readout scaled down by a further 1/√N_{L-1}).
    Pre-activations: ``h1`` … ``h{L-1}``, each (batch, N).
    """

    d: int
    width: int
    depth: int = 3
    activation: str = "erf"
    sigma_w2: float = 1.0
    sigma_a2: float = 1.0
    scaling: str = DEFAULT_SCALING
    param_dtype: Any = jnp.float32

    @nn.nowrap
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {"W1": (self.d, self.width)}
        for layer in range(2, self.depth):
            shapes[f"W{layer}"] = (self.width, self.width)
        shapes["a"] = (self.width,)
        return shapes

    @nn.nowrap
    def prior_variances(self) -> dict[str, float]:
        var = {"W1": self.sigma_w2 / self.d}
        for layer in range(2, self.depth):
            var[f"W{layer}"] = self.sigma_w2 / self.width
        readout_fan_in = self.width if self.scaling == "standard" else self.width**2
        var["a"] = self.sigma_a2 / readout_fan_in
        return var

    @nn.nowrap
    def readout_features(self, params: Params, x: Array) -> tuple[Array, dict[str, Array]]:
        """Φ = φ(h^(L-1)), (batch, N)."""
        phi = ACTIVATIONS[self.activation]
        h = x @ params["W1"]
        pre = {"h1": h}
        for layer in range(2, self.depth):
            h = phi(h) @ params[f"W{layer}"]
            pre[f"h{layer}"] = h
        return phi(h), pre

    @nn.nowrap
    def input_weights(self, params: Params) -> Array:
        """Rows w_j of W^(1): (N1, d)."""
        return params["W1"].T


# ---------------------------------------------------------------------------------------------
# 2-layer CNN (Eq. 7)
# ---------------------------------------------------------------------------------------------


class CNN2(_PriorModule):
    """2-layer CNN of Eq. 7: f(x) = Σ_{i=1..N} Σ_{c=1..C} a_ic φ(w_c · x_i).

    x ∈ R^{N·S} is cut into N non-overlapping patches x_i = x[iS:(i+1)S]
    (`fleos.core.kernels.patches`).
    Params: ``w`` (C, S) with w_c ~ N(0, σ_w²/S · I); ``a`` (N, C) with a_ic ~ N(0, σ_a²/(N C)).
    Pre-activations: ``h1`` (batch, N, C) = w_c · x_i.
    """

    S: int
    N: int
    width: int
    activation: str = "erf"
    sigma_w2: float = 1.0
    sigma_a2: float = 1.0
    param_dtype: Any = jnp.float32

    @nn.nowrap
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"w": (self.width, self.S), "a": (self.N, self.width)}

    @nn.nowrap
    def prior_variances(self) -> dict[str, float]:
        return {"w": self.sigma_w2 / self.S, "a": self.sigma_a2 / (self.N * self.width)}

    @nn.nowrap
    def readout_features(self, params: Params, x: Array) -> tuple[Array, dict[str, Array]]:
        """Φ_{b,(i,c)} = φ(w_c · x_i), (batch, N·C) in the order of ``a`` (N, C)."""
        phi = ACTIVATIONS[self.activation]
        h1 = jnp.einsum("bis,cs->bic", patches(x, self.N, self.S), params["w"])
        # explicit size, not -1: a batch of zero inputs (no test set) must reshape too
        return phi(h1).reshape(*h1.shape[:-2], self.N * self.width), {"h1": h1}

    @nn.nowrap
    def input_weights(self, params: Params) -> Array:
        """Rows w_c: (C, S)."""
        return params["w"]


# ---------------------------------------------------------------------------------------------
# 3-layer CNN (Eq. 14)
# ---------------------------------------------------------------------------------------------


class CNN3(_PriorModule):
    """3-layer CNN of Eq. 14 with C1 = C2 = `width`.

    h1_{cji} = w_c · x_{i+jS1} (patches of size S0; d = N·S1·S0, patch p = i + j·S1 is
    x[p·S0:(p+1)·S0]); h2_{c'j} = Σ_{i<S1} Σ_c v_{c'ci} φ(h1_{cji});
    f = Σ_{j<N} Σ_{c'} a_{c'j} φ(h2_{c'j}).
    Params (paper's index order): ``w`` (C1, S0) ~ N(0, σ_w²/S0); ``v`` (C2, C1, S1) ~
    N(0, σ_v²/(C1 S1)); ``a`` (C2, N) ~ N(0, σ_a²/(C2 N)).
    Pre-activations: ``h1`` (batch, N, S1, C1) indexed [b, j, i, c]; ``h2`` (batch, N, C2).
    """

    N: int
    S0: int
    S1: int
    width: int
    activation: str = "erf"
    sigma_w2: float = 1.0
    sigma_v2: float = 1.0
    sigma_a2: float = 1.0
    param_dtype: Any = jnp.float32

    @nn.nowrap
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        C = self.width
        return {"w": (C, self.S0), "v": (C, C, self.S1), "a": (C, self.N)}

    @nn.nowrap
    def prior_variances(self) -> dict[str, float]:
        C = self.width
        return {
            "w": self.sigma_w2 / self.S0,
            "v": self.sigma_v2 / (C * self.S1),
            "a": self.sigma_a2 / (C * self.N),
        }

    @nn.nowrap
    def readout_features(self, params: Params, x: Array) -> tuple[Array, dict[str, Array]]:
        """Φ = φ(h2) with index (c', j), (batch, C2·N)."""
        phi = ACTIVATIONS[self.activation]
        # (batch, N·S1, S0) -> (batch, N, S1, S0): [b, j, i] is patch p = j·S1 + i (Eq. 14).
        P = patches(x, self.N * self.S1, self.S0).reshape(
            *x.shape[:-1], self.N, self.S1, self.S0
        )
        h1 = jnp.einsum("bjis,cs->bjic", P, params["w"])
        h2 = jnp.einsum("bjic,kci->bjk", phi(h1), params["v"])
        # Φ_{b,(k,j)} = φ(h2_{kj}) in the order of ``a`` (C2, N)
        feats = jnp.swapaxes(phi(h2), -1, -2).reshape(*h2.shape[:-2], self.width * self.N)
        return feats, {"h1": h1, "h2": h2}

    @nn.nowrap
    def input_weights(self, params: Params) -> Array:
        """Rows w_c: (C1, S0)."""
        return params["w"]


# ---------------------------------------------------------------------------------------------
# Myrtle-5 (ref. 42)
# ---------------------------------------------------------------------------------------------


CONV_IMPLS = ("auto", "xla", "taps")


def _conv3x3(x: Array, kernel: Array, impl: str = "auto") -> Array:
    """3×3 'SAME' (zero-padded) convolution, stride 1, NHWC input, HWIO kernel, no bias.

    ``impl``: ``xla`` is ``lax.conv_general_dilated``; ``taps`` sums the nine kernel taps, each
    a matrix product of a shifted view of the zero-padded input with one (C_in, C_out) slice.
    ``auto`` takes ``taps`` on CPU and ``xla`` elsewhere: inside the sampler's ``lax.scan``,
    XLA's CPU convolution ran 11-19× slower than outside it (Myrtle-5 on 8×8 digits, C = 16,
    one chain: 19.7 against 1.05 ms per gradient), while the taps are plain GEMMs there, with
    no 9× im2col copy of the input (bench/RESULTS.md, "Myrtle-5's convolution on CPU"). The
    two differ only in summation order: 1e-12 apart in float64 (tests/test_models.py), about
    1e-7 relative in float32, which a long Langevin run turns into another trajectory
    (hence fleos.sampling.ARCH_NUMERICS_VERSIONS["myrtle5"]).
    """
    dtype = jnp.promote_types(x.dtype, kernel.dtype)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if impl == "auto":
        impl = "taps" if jax.default_backend() == "cpu" else "xla"
    if impl == "xla":
        return jax.lax.conv_general_dilated(
            x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
    if impl != "taps":
        raise ValueError(f"conv impl must be one of {CONV_IMPLS}, got {impl!r}")
    _, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return sum(
        padded[:, i:i + h, j:j + w, :] @ kernel[i, j] for i in range(3) for j in range(3)
    )


def _avgpool2(x: Array) -> Array:
    """2×2 average pooling, stride 2, NHWC."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class Myrtle5(_PriorModule):
    """Myrtle-5 (Shankar et al. 2020, ref. 42 of the paper), no biases, C = `width` channels.

    conv3×3(C) φ, conv3×3(C) φ, avgpool 2, conv3×3(C) φ, avgpool 2, conv3×3(C) φ, global
    average pool, dense to one output. φ = ReLU in the paper (Fig. 6); erf/linear allowed.
    Convolutions are zero-padded ('SAME'), so H, W must be divisible by 4 (32×32 CIFAR-10, or
    8×8 images for the laptop stand-in).
    Params: ``conv1`` (3, 3, C_in, C), ``conv2``…``conv4`` (3, 3, C, C) (HWIO), ``readout`` (C,).
    Prior: conv weights N(0, σ_w²/(9 C_in_l)); readout N(0, σ_a²/C).
    Pre-activations (pre-φ conv outputs, NHWC): ``layer1``, ``layer2`` (H, W), ``layer3``
    (H/2, W/2), ``layer4`` (H/4, W/4).
    """

    readout = "readout"

    width: int
    in_channels: int = 3
    activation: str = "relu"
    sigma_w2: float = 2.0
    sigma_a2: float = 2.0
    param_dtype: Any = jnp.float32
    conv_impl: str = "auto"                 # see _conv3x3: an implementation, not a model choice

    @nn.nowrap
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        C = self.width
        return {
            "conv1": (3, 3, self.in_channels, C),
            "conv2": (3, 3, C, C),
            "conv3": (3, 3, C, C),
            "conv4": (3, 3, C, C),
            "readout": (C,),
        }

    @nn.nowrap
    def prior_variances(self) -> dict[str, float]:
        C = self.width
        return {
            "conv1": self.sigma_w2 / (9 * self.in_channels),
            "conv2": self.sigma_w2 / (9 * C),
            "conv3": self.sigma_w2 / (9 * C),
            "conv4": self.sigma_w2 / (9 * C),
            "readout": self.sigma_a2 / C,
        }

    @nn.nowrap
    def readout_features(self, params: Params, x: Array) -> tuple[Array, dict[str, Array]]:
        """Φ = globally average-pooled φ(layer4), (batch, C)."""
        if x.ndim != 4 or x.shape[1] % 4 or x.shape[2] % 4 or x.shape[3] != self.in_channels:
            raise ValueError(
                f"Myrtle5 expects NHWC images with H, W divisible by 4 and "
                f"{self.in_channels} channels, got shape {x.shape}"
            )
        phi = ACTIVATIONS[self.activation]
        h1 = _conv3x3(x, params["conv1"], self.conv_impl)
        h2 = _conv3x3(phi(h1), params["conv2"], self.conv_impl)
        h3 = _conv3x3(_avgpool2(phi(h2)), params["conv3"], self.conv_impl)
        h4 = _conv3x3(_avgpool2(phi(h3)), params["conv4"], self.conv_impl)
        pooled = phi(h4).mean(axis=(1, 2))
        return pooled, {"layer1": h1, "layer2": h2, "layer3": h3, "layer4": h4}

    @nn.nowrap
    def input_weights(self, params: Params) -> Array:
        """Rows w_c of the first convolution, flattened in (kh, kw, c_in) order: (C, 9 C_in)."""
        k = params["conv1"]
        return jnp.transpose(k, (3, 0, 1, 2)).reshape(k.shape[3], -1)


# ---------------------------------------------------------------------------------------------
# Construction from a config dict
# ---------------------------------------------------------------------------------------------

# Per architecture: required keys and optional keys with their defaults. Data-side keys of
# myrtle5 (dataset, cifar_path, classes) are accepted and read by `fleos.nets.data.make_dataset`.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "fcn": ("d", "sigma_w2", "sigma_a2"),
    "cnn2": ("S", "N", "sigma_w2", "sigma_a2"),
    "cnn3": ("N", "S0", "S1", "sigma_w2", "sigma_v2", "sigma_a2"),
    "myrtle5": ("sigma_w2", "sigma_a2"),
}
_OPTIONAL: dict[str, dict[str, Any]] = {
    "fcn": {"depth": 3, "activation": "erf", "scaling": DEFAULT_SCALING},
    "cnn2": {"activation": "erf"},
    "cnn3": {"activation": "erf"},
    "myrtle5": {
        "activation": "relu", "in_channels": None,
        "dataset": "cifar10", "cifar_path": None, "classes": None,
    },
}
_INT_KEYS = ("d", "S", "N", "S0", "S1", "depth", "in_channels")
_FLOAT_KEYS = ("sigma_w2", "sigma_v2", "sigma_a2")


def _positive_int(value: Any, key: str, arch: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"model key {key!r} of arch {arch!r} must be an integer >= {minimum}, got {value!r}"
        )
    return int(value)


def _positive_float(value: Any, key: str, arch: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"model key {key!r} of arch {arch!r} must be a number > 0, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"model key {key!r} of arch {arch!r} must be finite, got {value!r}")
    return float(value)


def validate_model_cfg(arch: str, model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Check `model_cfg` for `arch`; return it completed with defaults and typed values.

    Raises ValueError naming the unknown arch, a missing / unknown key, or an invalid value
    together with the allowed values.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; allowed: {list(ARCHS)}")
    if not isinstance(model_cfg, Mapping):
        raise ValueError(f"model config of arch {arch!r} must be a mapping, got {model_cfg!r}")
    required, optional = _REQUIRED[arch], _OPTIONAL[arch]
    allowed = (*required, *optional)
    for key in model_cfg:
        if key not in allowed:
            raise ValueError(f"unknown model key {key!r} for arch {arch!r}; allowed: {allowed}")
    for key in required:
        if key not in model_cfg:
            raise ValueError(f"missing model key {key!r} for arch {arch!r}; required: {required}")
    cfg = {**optional, **dict(model_cfg)}
    for key in _INT_KEYS:
        if key in cfg and cfg[key] is not None:
            cfg[key] = _positive_int(cfg[key], key, arch, minimum=2 if key == "depth" else 1)
    for key in _FLOAT_KEYS:
        if key in cfg:
            cfg[key] = _positive_float(cfg[key], key, arch)
    if cfg["activation"] not in ACTIVATIONS:
        raise ValueError(
            f"model key 'activation' of arch {arch!r} must be one of {list(ACTIVATIONS)}, "
            f"got {cfg['activation']!r}"
        )
    if arch == "fcn" and cfg["scaling"] not in SCALINGS:
        raise ValueError(
            f"model key 'scaling' of arch 'fcn' must be one of {list(SCALINGS)}, "
            f"got {cfg['scaling']!r}"
        )
    if arch == "myrtle5":
        from fleos.nets.datasets import IMAGE_DATASETS

        if cfg["dataset"] not in IMAGE_DATASETS:
            raise ValueError(
                f"model key 'dataset' of arch 'myrtle5' must be one of {list(IMAGE_DATASETS)}, "
                f"got {cfg['dataset']!r}"
            )
        channels = IMAGE_DATASETS[cfg["dataset"]]["channels"]
        if cfg["in_channels"] is None:
            cfg["in_channels"] = channels
        elif cfg["in_channels"] != channels and "dataset" in model_cfg:
            raise ValueError(
                f"model key 'in_channels' of arch 'myrtle5' is {cfg['in_channels']} but dataset "
                f"{cfg['dataset']!r} has {channels} channel(s)"
            )
    return cfg


def build_model(
    arch: str, model_cfg: Mapping[str, Any], width: int, param_dtype: Any = jnp.float32
) -> nn.Module:
    """The model `arch` ∈ {fcn, cnn2, cnn3, myrtle5} of the given width (N for the FCN, C for CNNs).

    `model_cfg` keys (required / optional with default):
      fcn:     d, sigma_w2, sigma_a2 / depth=3, activation='erf', scaling=DEFAULT_SCALING
      cnn2:    S, N, sigma_w2, sigma_a2 / activation='erf'
      cnn3:    N, S0, S1, sigma_w2, sigma_v2, sigma_a2 / activation='erf'
      myrtle5: sigma_w2, sigma_a2 / activation='relu', in_channels (from `dataset`),
               dataset='cifar10', cifar_path, classes (the last three are read by fleos.nets.data)
    Raises ValueError naming the offending key and the allowed values.
    """
    cfg = validate_model_cfg(arch, model_cfg)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be an integer >= 1, got {width!r}")
    act = cfg["activation"]
    if arch == "fcn":
        return FCN(
            d=cfg["d"], width=width, depth=cfg["depth"], activation=act,
            sigma_w2=cfg["sigma_w2"], sigma_a2=cfg["sigma_a2"], scaling=cfg["scaling"],
            param_dtype=param_dtype,
        )
    if arch == "cnn2":
        return CNN2(
            S=cfg["S"], N=cfg["N"], width=width, activation=act,
            sigma_w2=cfg["sigma_w2"], sigma_a2=cfg["sigma_a2"], param_dtype=param_dtype,
        )
    if arch == "cnn3":
        return CNN3(
            N=cfg["N"], S0=cfg["S0"], S1=cfg["S1"], width=width, activation=act,
            sigma_w2=cfg["sigma_w2"], sigma_v2=cfg["sigma_v2"], sigma_a2=cfg["sigma_a2"],
            param_dtype=param_dtype,
        )
    return Myrtle5(
        width=width, in_channels=cfg["in_channels"], activation=act,
        sigma_w2=cfg["sigma_w2"], sigma_a2=cfg["sigma_a2"], param_dtype=param_dtype,
    )


def input_dim(arch: str, model_cfg: Mapping[str, Any]) -> int | None:
    """Input dimension d of the vector-input architectures (None for myrtle5's images)."""
    cfg = validate_model_cfg(arch, model_cfg)
    if arch == "fcn":
        return cfg["d"]
    if arch == "cnn2":
        return cfg["N"] * cfg["S"]
    if arch == "cnn3":
        return cfg["N"] * cfg["S1"] * cfg["S0"]
    return None
