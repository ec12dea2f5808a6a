"""Typed configuration of sampling experiments (docs/architecture.md, "Configuration").

One entry of ``experiments:`` in ``config/*.yaml`` becomes an `ExperimentConfig`; one sampling
job (experiment × n × width × seed chunk) is a `JobSpec`. Every constructor validates its input
and raises `ValueError` naming the full key path and the allowed values, e.g.
``experiments.cnn2.sigma2 must be > 0, got -1``. The JSON schema of the workflow
(workflow/schemas/config.schema.yaml) checks the same keys; this module is the check that
library and CLI users get without Snakemake.

The sampler's posterior is Eq. 15 / Methods of the paper (see docs/langevin.md); `sigma2` is
the σ² of the likelihood, `widths` are N (FCN) or C (CNNs).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fleos.core.schedules import SCHEDULE_KINDS, schedule_from_config

ARCHS = ("fcn", "cnn2", "cnn3", "myrtle5")
DTYPES = ("float32", "float64")
PRECONDITIONERS = (None, "prior")
# The names of the Langevin integrators of fleos.sampling.sampler (docs/langevin.md §7): the
# keys of its registry `INTEGRATORS`, listed here because config sits below sampling in the
# import tiers (tests/test_integrators.py and tests/test_workflow.py check that they agree).
INTEGRATORS = ("ula", "lm", "baoab", "mala")
KERNEL_NAMES = ("sigma", "K2", "Q2", "probe", "Qf", "field", "Kinv")
PROBE_SPATIAL = ("mean", "full")
WORKFLOW_ONLY_KEYS = ("theory", "resources", "label")

# Kernels recorded online per architecture unless the config says otherwise: the (nN × nN)
# hidden kernels only where a figure needs them (Fig. 5, 3-layer CNN), so files stay small.
DEFAULT_KERNELS = {
    "fcn": ("sigma",),
    "cnn2": ("sigma",),
    "cnn3": ("sigma", "K2", "Q2"),
    "myrtle5": ("sigma", "probe"),
}


def _err(path: str, msg: str) -> ValueError:
    return ValueError(f"{path} {msg}")


def _int_value(v: Any, path: str, minimum: int = 1) -> int:
    # bools are ints in Python; YAML `yes` must not become a step count. Floats such as 1e5
    # (YAML reads 1.0e5 as a float) are accepted when integral.
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
        raise _err(path, f"must be an integer >= {minimum}, got {v!r}")
    if v < minimum:
        raise _err(path, f"must be >= {minimum}, got {v!r}")
    return int(v)


def _int(d: Mapping, key: str, path: str, *, minimum: int = 1, default: Any = ...) -> int:
    if key not in d:
        if default is ...:
            raise _err(f"{path}.{key}", "is required (an integer)")
        return default
    return _int_value(d[key], f"{path}.{key}", minimum)


def _pos_float(d: Mapping, key: str, path: str, *, default: Any = ..., upper: float | None = None,
               ) -> float:
    if key not in d:
        if default is ...:
            raise _err(f"{path}.{key}", "is required (a number > 0)")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _err(f"{path}.{key}", f"must be a number > 0, got {v!r}")
    if not v > 0:
        raise _err(f"{path}.{key}", f"must be > 0, got {v!r}")
    if not math.isfinite(v):  # YAML's .inf passes `> 0`; an infinite variance is no posterior
        raise _err(f"{path}.{key}", f"must be finite, got {v!r}")
    if upper is not None and not v < upper:
        raise _err(f"{path}.{key}", f"must be in (0, {upper}), got {v!r}")
    return float(v)


def _bool(d: Mapping, key: str, path: str, *, default: bool) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise _err(f"{path}.{key}", f"must be true or false, got {v!r}")
    return v


def _check_keys(d: Mapping, allowed: Sequence[str], path: str) -> None:
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise _err(path, f"has unknown key(s) {unknown}; allowed: {sorted(allowed)}")


@dataclass(frozen=True)
class SamplerConfig:
    """``experiments.<name>.sampler``: the Langevin run of one chain.

    steps: total epochs (one full-batch ULA step = one epoch).
    schedule: the lr protocol, passed to `fleos.core.schedules.schedule_from_config` (kind
        constant | spike | fixed; ``total_steps`` defaults to `steps`).
    record_every: epochs between samples added to the online sums (f, Σ, kernels).
    snapshot_every: epochs between thinned low-dimensional snapshots (projections).
    checkpoint_every: epochs between checkpoints (disk and the in-memory NaN rollback point).
    preconditioner: None (the paper's plain dynamics) or "prior" (per-leaf P = prior variance,
        a constant diagonal preconditioner that leaves the posterior invariant).
    n_random_directions: fixed random unit vectors (seeded by `directions_seed`, stored in the
        file) on which input weights are projected, the paper's "random direction" (Fig. 3).
    max_backoffs / backoff_factor: NaN/Inf handling; a diverged chain is rolled back to the
        last checkpoint with lr *= backoff_factor, at most max_backoffs times per chain.
    kernels: online kernel sums to record (subset of sigma, K2, Q2, probe, Qf, field, Kinv);
        None = the architecture's default (`DEFAULT_KERNELS`). Qf, the readout's post-kernel
        v_a ΦΦᵀ on the training inputs, field, εεᵀ − (Q_f + σ² I)⁻¹ at the sampled hidden
        weights (the field test's A_eff), and Kinv, (Q_f + σ² I)⁻¹, are summed at the
        Rao-Blackwellization steps and need `rao_blackwell_every` > 0.
    rao_blackwell_every: every this many steps of the sampling stage, add the posterior means
        of f on train and test given the hidden weights, the readout integrated out exactly
        (`fleos.sampling.recording`, docs/langevin.md §9); 0 = off. Costs one n × n Gram
        matrix and Cholesky factorisation (float64) per chain and addition.
    loss_every: thinning of the stored per-epoch loss trace (the full trace drives schedules).
    full_snapshots / top_modes: keep the last `full_snapshots` input-weight snapshots taken
        while sampling and project them at the end on the `top_modes` leading eigenvectors of
        the chain's mean Σ (the most strongly fluctuating weight modes, Fig. 2a); with
        `full_snapshots` > 0 every snapshot also keeps the all-channel Σ̂(θ) (d × d), from
        which Fig. 2a's gate series is read along the top mode.
    snapshot_channels: snapshots keep the first `snapshot_channels` channels only (the prior
        and posterior are symmetric under permuting channels, so a subset has the same
        distribution; at paper size all 2560 channels × 25 chains would be ~0.5 GB per job).
    probe_size / probe_channels / probe_spatial: Myrtle-5 (Fig. 6): pre-activations of layers
        2 and 4 on the first `probe_size` training images for the first `probe_channels`
        channels, averaged over positions ("mean") or full fields ("full").
    integrator: the Langevin integrator, one of `INTEGRATORS` ("ula": the paper's dynamics;
        "lm", "baoab", "mala": docs/langevin.md §7). The schedule's lr is ULA's η for all.
    friction: γ of "baoab" (1/time, time step √(2η)); ignored by the others.
    check_stability: estimate λ_max of the preconditioned Hessian at the start and again
        after the first 200 steps or the first checkpoint, whichever is sooner (20 Hessian-
        vector products each), and warn if lr·λ_max ≥ 2, naming the numbers and the step.
    data_blocks: the gradient is accumulated over this many equal blocks of training rows
        (`fleos.sampling.sampler.Potential.value_and_grad`; must divide every n), or "auto"
        (`fleos.sampling.sampler.auto_data_blocks`: blocks of ~2M pre-activation floats on CPU, one
        block on GPU). Changes float rounding only, not the posterior.
    chain_batch: how many chains of a job are vmapped together (`fleos.sampling.sampler.map_chains`;
        groups run one after the other), or "auto" (`fleos.sampling.sampler.auto_chain_batch`: all
        on GPU; one at a time on CPU). Changes float rounding only.
    """

    steps: int
    schedule: dict = field(default_factory=dict)
    dtype: str = "float32"
    record_every: int = 10
    snapshot_every: int = 1000
    checkpoint_every: int = 10000
    preconditioner: str | None = None
    n_random_directions: int = 4
    directions_seed: int = 0
    max_backoffs: int = 3
    backoff_factor: float = 0.5
    kernels: tuple[str, ...] | None = None
    loss_every: int = 1
    full_snapshots: int = 16
    top_modes: int = 4
    snapshot_channels: int = 64
    probe_size: int = 64
    probe_channels: int = 4
    probe_spatial: str = "mean"
    integrator: str = "ula"
    friction: float = 1.0
    check_stability: bool = True
    data_blocks: int | str = "auto"
    chain_batch: int | str = "auto"
    rao_blackwell_every: int = 0

    @classmethod
    def from_dict(cls, d: Mapping, path: str = "sampler") -> SamplerConfig:
        """Validate ``d`` (the YAML mapping); errors name ``path.key`` and the allowed values."""
        if not isinstance(d, Mapping):
            raise _err(path, f"must be a mapping, got {type(d).__name__}")
        names = [f for f in cls.__dataclass_fields__]
        _check_keys(d, names, path)
        steps = _int(d, "steps", path)
        dtype = d.get("dtype", cls.dtype)
        if dtype not in DTYPES:
            raise _err(f"{path}.dtype", f"must be one of {list(DTYPES)}, got {dtype!r}")
        sched = d.get("schedule")
        if not isinstance(sched, Mapping):
            raise _err(f"{path}.schedule", f"must be a mapping with a 'kind', got {sched!r}")
        kind = sched.get("kind")
        if kind not in SCHEDULE_KINDS:
            raise _err(f"{path}.schedule.kind", f"must be one of {list(SCHEDULE_KINDS)}, "
                       f"got {kind!r}")
        sched = dict(sched)
        sched.setdefault("total_steps", steps)
        _validate_schedule(sched, f"{path}.schedule")
        pre = d.get("preconditioner")
        if pre not in PRECONDITIONERS:
            raise _err(f"{path}.preconditioner", f"must be one of {list(PRECONDITIONERS)}, "
                       f"got {pre!r}")
        kernels = d.get("kernels")
        if kernels is not None:
            if isinstance(kernels, str) or not isinstance(kernels, Sequence):
                raise _err(f"{path}.kernels", f"must be a list, got {kernels!r}")
            bad = [k for k in kernels if k not in KERNEL_NAMES]
            if bad:
                raise _err(f"{path}.kernels", f"has unknown kernel(s) {bad}; allowed: "
                           f"{list(KERNEL_NAMES)}")
            kernels = tuple(kernels)
            for rb_kernel in ("Qf", "field", "Kinv"):
                if rb_kernel in kernels and not d.get("rao_blackwell_every"):
                    raise _err(f"{path}.kernels", f"has {rb_kernel!r}, which is recorded at "
                               "the Rao-Blackwellization steps: set rao_blackwell_every > 0")
        integrator = d.get("integrator", cls.integrator)
        if integrator not in INTEGRATORS:
            raise _err(f"{path}.integrator", f"must be one of {list(INTEGRATORS)}, got "
                       f"{integrator!r}")
        spatial = d.get("probe_spatial", cls.probe_spatial)
        if spatial not in PROBE_SPATIAL:
            raise _err(f"{path}.probe_spatial", f"must be one of {list(PROBE_SPATIAL)}, "
                       f"got {spatial!r}")
        # Defaults live in the dataclass fields only (one place); `_int` gets them from there.
        dflt = {f.name: f.default for f in fields(cls)}

        def num(key: str, minimum: int = 1) -> int:
            return _int(d, key, path, minimum=minimum, default=dflt[key])

        return cls(
            steps=steps,
            schedule=sched,
            dtype=dtype,
            record_every=num("record_every"),
            snapshot_every=num("snapshot_every"),
            checkpoint_every=num("checkpoint_every"),
            preconditioner=pre,
            n_random_directions=num("n_random_directions", minimum=0),
            directions_seed=num("directions_seed", minimum=0),
            max_backoffs=num("max_backoffs", minimum=0),
            backoff_factor=_pos_float(d, "backoff_factor", path, default=dflt["backoff_factor"],
                                      upper=1.0),
            kernels=kernels,
            loss_every=num("loss_every"),
            full_snapshots=num("full_snapshots", minimum=0),
            snapshot_channels=num("snapshot_channels"),
            top_modes=num("top_modes"),
            probe_size=num("probe_size"),
            probe_channels=num("probe_channels"),
            probe_spatial=spatial,
            integrator=integrator,
            friction=_pos_float(d, "friction", path, default=cls.friction),
            check_stability=_bool(d, "check_stability", path, default=cls.check_stability),
            data_blocks=_int_or_auto(d, "data_blocks", path, default=cls.data_blocks),
            chain_batch=_int_or_auto(d, "chain_batch", path, default=cls.chain_batch),
            rao_blackwell_every=num("rao_blackwell_every", minimum=0),
        )


def _int_or_auto(d: Mapping, key: str, path: str, *, default: int | str) -> int | str:
    v = d.get(key, default)
    if v == "auto":
        return v
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _err(f"{path}.{key}", f"must be an integer >= 1 or 'auto', got {v!r}")
    return v


def _validate_schedule(sched: dict, path: str) -> None:
    """Let the schedule module validate its own keys; re-raise with the key path."""
    try:
        schedule_from_config(sched)
    except (ValueError, KeyError, TypeError) as e:
        raise _err(path, f"is invalid: {e}") from e


@dataclass(frozen=True)
class ExperimentConfig:
    """One entry of ``experiments:``: architecture, model, data, posterior and sampler.

    model / data are kept as dicts: `fleos.nets.models.build_model` and
    `fleos.nets.data.make_dataset` validate their own keys (arch-dependent). `seeds` is the
    number of chains (seeds 0..seeds-1); `seeds_per_job` chains are vmapped in one job.
    """

    name: str
    arch: str
    model: dict
    data: dict
    sigma2: float
    widths: tuple[int, ...]
    seeds: int
    seeds_per_job: int
    sampler: SamplerConfig
    # The device request (``resources.gpu``, ``resources.allow_cpu``): checked by the sampling
    # job against the devices JAX sees (fleos.sampling.experiment.check_device). Not part of
    # `to_dict`, hence not of the config hash: it does not change the posterior being sampled.
    gpu: int = 0
    allow_cpu: bool = False

    @classmethod
    def from_dict(cls, name: str, d: Mapping) -> ExperimentConfig:
        """Validate one experiment; errors name ``experiments.<name>.<key>``."""
        path = f"experiments.{name}"
        if not isinstance(d, Mapping):
            raise _err(path, f"must be a mapping, got {type(d).__name__}")
        allowed = ("arch", "model", "data", "sigma2", "widths", "seeds", "seeds_per_job",
                   "sampler")
        # Keys of the workflow's schema that do not concern sampling: accepted and ignored
        # here (not part of the config hash, so e.g. a longer SLURM runtime on a retry does
        # not invalidate a checkpoint).
        _check_keys(d, allowed + WORKFLOW_ONLY_KEYS, path)
        for key in allowed:
            if key not in d:
                raise _err(f"{path}.{key}", "is required")
        arch = d["arch"]
        if arch not in ARCHS:
            raise _err(f"{path}.arch", f"must be one of {list(ARCHS)}, got {arch!r}")
        if "theory" in d:  # not part of the engine's config, but checked here, once
            theory_options(arch, d["theory"], f"{path}.theory")
        for key in ("model", "data"):
            if not isinstance(d[key], Mapping):
                raise _err(f"{path}.{key}", f"must be a mapping, got {d[key]!r}")
        sigma2 = _pos_float(d, "sigma2", path)
        widths = d["widths"]
        if isinstance(widths, (int, str)) or not isinstance(widths, Sequence) or not widths:
            raise _err(f"{path}.widths", f"must be a non-empty list of integers >= 1, "
                       f"got {widths!r}")
        for i, w in enumerate(widths):
            _int_value(w, f"{path}.widths[{i}]")
        seeds = _int(d, "seeds", path)
        spj = _int(d, "seeds_per_job", path)
        if spj > seeds:
            raise _err(f"{path}.seeds_per_job", f"must be <= seeds ({seeds}), got {spj}")
        ns = d["data"].get("n")
        if ns is not None:
            ns_list = ns if isinstance(ns, Sequence) and not isinstance(ns, str) else [ns]
            for i, n in enumerate(ns_list):
                _int_value(n, f"{path}.data.n[{i}]")
        sampler = SamplerConfig.from_dict(d["sampler"], f"{path}.sampler")
        if isinstance(sampler.data_blocks, int) and ns is not None:
            bad = [n for n in ns_list if n % sampler.data_blocks]
            if bad:
                raise _err(f"{path}.sampler.data_blocks", f"must divide every data.n, but "
                           f"{sampler.data_blocks} does not divide {bad}")
        res = d.get("resources") or {}
        if not isinstance(res, Mapping):
            raise _err(f"{path}.resources", f"must be a mapping, got {res!r}")
        gpu = _int(res, "gpu", f"{path}.resources", minimum=0, default=0)
        allow_cpu = res.get("allow_cpu", False)
        if not isinstance(allow_cpu, bool):
            raise _err(f"{path}.resources.allow_cpu", f"must be true or false, got {allow_cpu!r}")
        return cls(
            name=name, arch=arch, model=copy.deepcopy(dict(d["model"])),
            data=copy.deepcopy(dict(d["data"])), sigma2=sigma2,
            widths=tuple(int(w) for w in widths), seeds=seeds, seeds_per_job=spj,
            sampler=sampler, gpu=gpu, allow_cpu=allow_cpu,
        )

    def to_dict(self) -> dict:
        """The validated config as plain JSON-able data (the HDF5 `config` attribute)."""
        out = asdict(self)
        del out["gpu"], out["allow_cpu"]
        out["widths"] = list(self.widths)
        k = out["sampler"]["kernels"]
        out["sampler"]["kernels"] = list(k) if k is not None else None
        return out

    @property
    def kernels(self) -> tuple[str, ...]:
        """Kernels recorded online: the sampler's list or the architecture's default."""
        k = self.sampler.kernels
        return k if k is not None else DEFAULT_KERNELS[self.arch]

    @property
    def ns(self) -> tuple[int, ...]:
        """Training-set sizes of ``data.n`` (an int or a list)."""
        n = self.data.get("n", ())
        return tuple(int(v) for v in (n if isinstance(n, Sequence) else [n]))

    def seed_chunks(self) -> list[tuple[int, ...]]:
        """Seeds 0..seeds-1 cut into consecutive chunks of `seeds_per_job` (last may be short)."""
        s, k = self.seeds, self.seeds_per_job
        return [tuple(range(i, min(i + k, s))) for i in range(0, s, k)]


# = fleos.theory.eos.cnn2.METHODS = fleos.theory.eos.fcn.SOLVERS
THEORY_METHODS = ("anderson", "newton_krylov")
Q_TRAIN_MODES = ("first_order", "renormalized")  # = fleos.theory.eos.cnn2_analytic.Q_TRAIN_MODES
MATCHED_BATCH = 128  # = fleos.theory.eos.cnn2_matched.BATCH
FLUCTFIELD_BATCH = 8  # = fleos.theory.eos.cnn2_fluctfield.DRAW_BATCH

# ``experiments.<name>.theory`` per architecture: the keys its theory reads and their defaults
# (written nowhere else; `theory_options` fills them in). cnn2: the EoS sweep of Eq. 8 and
# Eq. 9's q_train; fcn: the EoS of Eq. 5; cnn3: the Fig. 5 predictions (Eq. 5, last lines);
# myrtle5 has no theory. Anderson on Eq. 8 converges in 20-40 iterations where Newton-Krylov
# on the FCN's precision form needs < 20, hence the different iteration caps.
THEORY_DEFAULTS: dict[str, dict[str, Any]] = {
    "cnn2": {"tol": 1e-8, "max_iter": 60, "method": "anderson", "q_train": "renormalized",
             "C_grid": [], "matched_samples": 4096, "matched_seed": 0,
             "fluct_draws": 2048, "fluct_seed": 0, "fluctfield_draws": 0, "fluctfield_seed": 0,
             "fluctfield_max_iter": 60, "fluctfield_window": 8},
    "fcn": {"tol": 1e-8, "max_iter": 50, "method": "newton_krylov", "ridge": 0.0},
    "cnn3": {"ridge": 0.0},
    "myrtle5": {},
}


def theory_options(arch: str, d: Mapping | None, path: str = "theory") -> dict[str, Any]:
    """``experiments.<name>.theory`` validated for `arch` and completed with `THEORY_DEFAULTS`.

    Errors name ``path.key`` and the allowed values (an unknown key, a bad ``method``, ...)."""
    if arch not in THEORY_DEFAULTS:
        raise _err(path, f"belongs to an unknown arch {arch!r}; allowed: {list(ARCHS)}")
    d = {} if d is None else d
    if not isinstance(d, Mapping):
        raise _err(path, f"must be a mapping, got {d!r}")
    out = copy.deepcopy(THEORY_DEFAULTS[arch])
    _check_keys(d, list(out), path)
    if "tol" in d:
        out["tol"] = _pos_float(d, "tol", path)
    if "max_iter" in d:
        out["max_iter"] = _int(d, "max_iter", path)
    if "method" in d:
        if d["method"] not in THEORY_METHODS:
            raise _err(f"{path}.method", f"must be one of {list(THEORY_METHODS)}, "
                       f"got {d['method']!r}")
        out["method"] = d["method"]
    if "q_train" in d:
        q = d["q_train"]
        if isinstance(q, str):
            if q not in Q_TRAIN_MODES:
                raise _err(f"{path}.q_train", f"must be a number > 0 or one of "
                           f"{list(Q_TRAIN_MODES)}, got {q!r}")
            out["q_train"] = q
        else:
            out["q_train"] = _pos_float(d, "q_train", path)
    if "ridge" in d:
        r = d["ridge"]
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < math.inf:
            raise _err(f"{path}.ridge", f"must be a finite number >= 0, got {r!r}")
        out["ridge"] = float(r)
    # sample counts of optional theories: 0 = off, else whole batches
    for key, batch in (("matched_samples", MATCHED_BATCH), ("fluctfield_draws", FLUCTFIELD_BATCH)):
        if key in d:
            k = d[key]
            if isinstance(k, bool) or not isinstance(k, int) or k < 0 or k % batch:
                raise _err(f"{path}.{key}", f"must be 0 (off) or a positive multiple of {batch}, "
                           f"got {k!r}")
            out[key] = k
    # seeds, and the kernel-fluctuation draws (0 = off, any count)
    for key in ("matched_seed", "fluctfield_seed", "fluct_draws", "fluct_seed"):
        if key in d:
            k = d[key]
            if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                raise _err(f"{path}.{key}", f"must be an integer >= 0, got {k!r}")
            out[key] = k
    # the closure's iteration: evaluations per stage, and the window averaged when its step
    # stalls above tol (fleos.theory.eos.cnn2_fluctfield.solve_cnn2_fluctfield)
    for key, low in (("fluctfield_max_iter", 1), ("fluctfield_window", 2)):
        if key in d:
            k = d[key]
            if isinstance(k, bool) or not isinstance(k, int) or k < low:
                raise _err(f"{path}.{key}", f"must be an integer >= {low}, got {k!r}")
            out[key] = k
    if out.get("fluctfield_window", 0) > out.get("fluctfield_max_iter", 0):
        given = "" if "fluctfield_window" in d else " (its default)"
        raise _err(f"{path}.fluctfield_window", f"must be at most fluctfield_max_iter = "
                   f"{out['fluctfield_max_iter']}, got {out['fluctfield_window']}{given}")
    if "C_grid" in d:
        grid = d["C_grid"]
        if isinstance(grid, (str, int)) or not isinstance(grid, Sequence):
            raise _err(f"{path}.C_grid", f"must be a list of integers >= 1, got {grid!r}")
        out["C_grid"] = [_int_value(c, f"{path}.C_grid[{i}]") for i, c in enumerate(grid)]
    return out


@dataclass(frozen=True)
class JobSpec:
    """One sampling job: experiment name, training-set size n, width, and its seeds."""

    experiment: str
    n: int
    width: int
    seeds: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"job n must be >= 1, got {self.n}")
        if self.width < 1:
            raise ValueError(f"job width must be >= 1, got {self.width}")
        if not self.seeds or any((not isinstance(s, int)) or s < 0 for s in self.seeds):
            raise ValueError(f"job seeds must be a non-empty list of integers >= 0, "
                             f"got {self.seeds!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"job seeds must be distinct, got {self.seeds!r}")


def config_hash(exp: ExperimentConfig, job: JobSpec) -> str:
    """SHA-256 of the canonical JSON of (experiment, job): a checkpoint is resumed only if equal.

    Note that this covers everything that changes the trajectory (arch, model, data, σ²,
    sampler, seeds, n, width), so a checkpoint of a different configuration is never reused.
    """
    doc = {"experiment": exp.to_dict(), "job": asdict(job)}
    doc["job"]["seeds"] = list(job.seeds)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def load_config_file(path: str | Path) -> dict:
    """Read a YAML (or JSON) config file; a missing or unparsable file names the path."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} does not exist")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"config file {p} is not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise ValueError(f"config file {p} must contain a mapping at top level")
    return doc


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(doc: dict, overrides: Sequence[str]) -> dict:
    """Return a copy of ``doc`` with ``key.path=value`` overrides applied (value parsed as YAML).

    Example: ``experiments.cnn2.sampler.steps=2000``. Intermediate mappings must exist, so a
    typo in the path is an error naming it rather than a silently ignored new key.
    """
    out = copy.deepcopy(doc)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.path=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"override {item!r}: {'.'.join(parts[: i + 1])} does not "
                                 f"exist in the config")
            node = node[part]
        if not isinstance(node, dict):
            raise ValueError(f"override {item!r}: {'.'.join(parts[:-1])} is not a mapping")
        node[parts[-1]] = _parse_value(text)
    return out


def experiment_from_file(path: str | Path, name: str,
                         overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The validated `ExperimentConfig` named ``name`` in a config file (after overrides)."""
    doc = apply_overrides(load_config_file(path), overrides)
    exps = doc.get("experiments")
    if not isinstance(exps, dict) or not exps:
        raise ValueError(f"config file {path}: 'experiments' must be a non-empty mapping")
    if name not in exps:
        raise ValueError(f"config file {path}: unknown experiment {name!r}; allowed: "
                         f"{sorted(exps)}")
    return ExperimentConfig.from_dict(name, exps[name])
