"""One sampling job: a chunk of seeds of one (experiment, n, width), run to an HDF5 file.

`run_job` draws each seed's initial parameters from the prior, runs the Langevin chains
(Eq. 15 / Methods; `fleos.sampling.sampler`; vmapped in groups, docs/langevin.md §8) under the
per-chain lr schedule (`fleos.core.schedules`), records online sums and snapshots
(`fleos.sampling.recording`), checkpoints, resumes, handles divergence, and writes the result
atomically (`fleos.sampling.io`, layout in docs/hdf5-layout.md).

Keys: seed s of job (n, width) uses ``k = fold_in(fold_in(PRNGKey(s), n), width)``;
``fold_in(k, 0)`` draws the initial parameters and ``fold_in(k, 1)`` is the chain key whose
``fold_in(chain_key, t)`` is the noise of step t. So a seed's trajectory depends neither on
the other seeds of its chunk nor on chunking in time, and a resumed run is bit-identical.

Chunks: the host loop runs jitted `lax.scan` chunks up to the earliest of: a schedule
boundary of any chain, the next multiple of ``checkpoint_every`` or ``snapshot_every``, the
end. At schedule boundaries each chain's schedule is updated from its loss history. Chain
lr = schedule lr × the chain's back-off factor.

Divergence: after each chunk, a chain whose parameters or losses are non-finite makes the
job roll back (all chains: their trajectories are deterministic, so healthy chains retrace
the same path) to the last checkpoint (kept in memory and on disk) with that chain's lr
multiplied by ``backoff_factor``; the event (epoch, chain, seed, old/new lr) is stored in the
output. After ``max_backoffs`` back-offs of one chain, `ChainDivergedError` names the
experiment, seed and step, and no output file is written.

Checkpoints: ``checkpoint_path`` (if given) is written atomically every ``checkpoint_every``
epochs with the whole state (params, the integrator's state, chain keys, accumulators,
schedule states, loss history, snapshots, back-off state). Parameters and integrator state are
stored by key path and restored against the job's freshly initialised ones, so any pytree
state resumes (docs/langevin.md §7, "Checkpoints of the integrator state"). A run finding a
checkpoint resumes from it if its identity matches: the config hash
(`fleos.config.config_hash`) and the SHA-256 of the data arrays
(`fleos.sampling.io.arrays_checksum`), and if its state has the leaves of the job's. It
refuses with a clear error otherwise, and discards a
corrupt checkpoint (unreadable, or arrays that do not match their stored checksum) with a
warning naming it (restarting from scratch gives the identical result). The checkpoint is
deleted after the output is written.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import fleos.sampling as _versions
from fleos.config import ExperimentConfig, JobSpec, config_hash
from fleos.core.files import remove_stale_temporaries
from fleos.sampling.io import (
    CorruptFileError,
    arrays_checksum,
    flatten_tree,
    load_checkpoint,
    save_checkpoint,
    write_samples,
)
from fleos.sampling.recording import Recorder, finalize
from fleos.sampling.sampler import (
    ChainState,
    Integrator,
    auto_chain_batch,
    auto_data_blocks,
    init_extra,
    make_potential,
    map_chains,
    run_ensemble,
    stiffest_curvature,
)

# Snapshot components whose IAT / R-hat are computed (per snapshot dataset): the diagnostics
# are for spotting unequilibrated chains, a few hundred components are plenty and keep the
# FFTs cheap for wide layers.
MAX_DIAG_COMPONENTS = 256


class ChainDivergedError(RuntimeError):
    """A chain stayed non-finite after `max_backoffs` lr back-offs."""


class CheckpointMismatchError(RuntimeError):
    """The checkpoint on disk belongs to a different configuration."""


class NoGPUError(RuntimeError):
    """The config asks for a GPU (resources.gpu > 0) but JAX sees none."""


def check_device(exp: ExperimentConfig, emit: Callable[[str], None]) -> dict[str, str]:
    """Log JAX's backend, devices and version; refuse a CPU run of a GPU config.

    A job that asked SLURM for a GPU but runs a CPU-only jaxlib would otherwise sample on the
    CPU, hundreds of times slower, with nobody noticing. Returns the sample-file attributes
    ``jax_backend``, ``jax_devices``, ``jax_version``. Raises `NoGPUError` when
    ``exp.gpu > 0``, the backend is not "gpu" and ``exp.allow_cpu`` is false.
    """
    backend = jax.default_backend()
    info = {"jax_backend": backend,
            "jax_devices": ", ".join(f"{d.platform}:{d.id} {d.device_kind}"
                                     for d in jax.devices()),
            "jax_version": jax.__version__}
    emit(f"[{exp.name}] JAX {info['jax_version']} backend {backend}: {info['jax_devices']}")
    if exp.gpu > 0 and backend != "gpu":
        msg = (f"experiments.{exp.name}.resources.gpu is {exp.gpu} but JAX sees no GPU "
               f"(backend {backend!r}): install a CUDA build of JAX (pip install "
               f"'jax[cuda12]', or --sdm conda with sampling_env: gpu) on a node with a GPU, "
               f"or set experiments.{exp.name}.resources.allow_cpu: true to sample on the CPU")
        if not exp.allow_cpu:
            raise NoGPUError(msg)
        emit(f"WARNING: {msg.split(': install')[0]}; sampling on the CPU (allow_cpu: true)")
    return info


@dataclass
class _State:
    """Host-side state of a job (what a checkpoint holds)."""

    step: int
    params: Any  # pytree, leading chain axis
    extra: Any  # the integrator's state (sampler.ChainState.extra), leading chain axis
    acc: dict
    sched: list[dict]
    losses: list[np.ndarray]  # chunks of (chains, k) sse
    snap_epochs: list[int]
    snap_sampling: list[np.ndarray]  # (chains,) bool per snapshot
    snaps: list[dict]  # per snapshot: name -> (chains, ...)
    full: list[tuple[int, np.ndarray, np.ndarray]]  # (epoch, W (chains, C, d), mask)
    lr_scale: np.ndarray
    n_backoffs: np.ndarray
    events: list[dict] = field(default_factory=list)

    def copy(self) -> _State:
        return _State(self.step, self.params, self.extra, dict(self.acc),
                      [dict(s) for s in self.sched],
                      list(self.losses), list(self.snap_epochs), list(self.snap_sampling),
                      list(self.snaps), list(self.full), self.lr_scale.copy(),
                      self.n_backoffs.copy(), [dict(e) for e in self.events])


@dataclass(frozen=True)
class _Setup:
    """What a job fixes before its first step (`_set_up`): the posterior, the chains' keys,
    initial state and layout, the recorder, and the identity a checkpoint must match."""

    exp: ExperimentConfig
    job: JobSpec
    tag: str  # the prefix of every log line
    emit: Callable[[str], None]
    device: dict[str, str]  # `check_device`'s sample-file attributes
    out_path: Path
    ckpt_path: Path | None
    dtype: Any
    potential: Any
    precond: Any
    sched: Any  # the lr schedule (`fleos.core.schedules`), one state per chain in _State
    integrator: Integrator
    keys: jax.Array  # chain keys (chains, 2)
    chain_batch: int
    params0: Any  # initial parameters, leading chain axis
    extra0: Any  # initial integrator state, leading chain axis
    acc0: dict
    recorder: Recorder
    rec_data: dict
    snap_fn: Callable
    chash: str  # `config_hash` of (experiment, job)
    data_sha: str  # SHA-256 of the data arrays
    ckpt_id: str  # what a checkpoint must carry to be resumed (`checkpoint_id`)

    @property
    def sc(self) -> Any:
        return self.exp.sampler


def chain_layout(sc: Any, model: Any, params0: Any, X: jax.Array, n_chains: int,
                 backend: str) -> tuple[int, int]:
    """(chain_batch, data_blocks) of a job: the sampler config's (`sc`) integers, or the `auto`
    choices of `fleos.sampling.sampler` (the data blocks from the number of pre-activation
    floats one training row makes). params0: the chains' initial parameters (leading chain
    axis)."""
    one = jax.tree.map(lambda a: a[0], params0)
    shapes = jax.eval_shape(lambda p, x: model.forward(p, x)[1], one, X[:1])
    per_row = sum(math.prod(a.shape) for a in jax.tree.leaves(shapes))
    n = X.shape[0]
    chain_batch = (auto_chain_batch(n_chains, backend)
                   if sc.chain_batch == "auto" else min(sc.chain_batch, n_chains))
    data_blocks = (auto_data_blocks(n, per_row, backend, chains=chain_batch)
                   if sc.data_blocks == "auto" else sc.data_blocks)
    return chain_batch, data_blocks


def _next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every


def chain_keys(seeds: tuple[int, ...], n: int, width: int) -> tuple[jax.Array, jax.Array]:
    """(init keys, chain keys), each (chains, 2): see the module docstring."""
    base = [jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(s), n), width)
            for s in seeds]
    init = jnp.stack([jax.random.fold_in(k, 0) for k in base])
    chain = jnp.stack([jax.random.fold_in(k, 1) for k in base])
    return init, chain


def _finite_per_chain(params: Any) -> np.ndarray:
    leaves = [np.asarray(jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim))))
              for x in jax.tree.leaves(params)]
    return np.logical_and.reduce(leaves)


def _fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{(s % 3600) // 60:02d}m{s % 60:02d}s"


def run_job(
    exp: ExperimentConfig,
    job: JobSpec,
    data_path: str | Path,
    out_path: str | Path,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    *,
    progress_every: float = 30.0,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Run the chains of `job` and write `out_path` (HDF5, docs/hdf5-layout.md).

    exp: the validated experiment; job: (experiment name, n, width, seeds); data_path: the
    npz of `fleos.nets.datasets.save_dataset` (its n must equal job.n); checkpoint_path: where to
    checkpoint / resume (None: in-memory rollback points only). Progress lines (no carriage
    returns, for SLURM logs) go to `log` (default: stderr) every `progress_every` seconds.
    Returns out_path. Raises NoGPUError (before any work: `check_device`),
    ChainDivergedError, CheckpointMismatchError, ValueError.

    The parts, in order: `_set_up` (model, data, potential, keys, layout, recorder),
    `_initial_state` (fresh, or restored from the checkpoint), `_sample` (the step loop, with
    `_save_checkpoint` and `_back_off`), `_write_outputs`.
    """
    if job.experiment != exp.name:
        raise ValueError(f"job is for experiment {job.experiment!r} but the config is "
                         f"{exp.name!r}")
    emit = log or (lambda s: print(s, file=sys.stderr, flush=True))
    su = _set_up(exp, job, data_path, out_path, checkpoint_path, emit)
    state = _initial_state(su)
    lam0 = (_warn_if_unstable(su, su.params0, state) if su.sc.check_stability else None)
    reporter = _Progress(su, enabled=progress, every=progress_every, step0=state.step)
    state = _sample(su, state, reporter, lam0)
    _write_outputs(su, state, reporter.t0)
    return su.out_path


def job_setup(exp: ExperimentConfig, job: JobSpec, data_path: str | Path,
              out_path: str | Path) -> _Setup:
    """What `run_job` fixes before its first step (model, data, potential, keys, chain layout,
    integrator state, recorder), without running it, for benchmarks and studies that time or
    vary the parts of a job (bench/bench_step_breakdown.py). Nothing is written; `out_path`
    only names the file a run would write."""
    return _set_up(exp, job, data_path, out_path, None, emit=lambda s: None)


# ---- set-up --------------------------------------------------------------------------------


def _set_up(exp: ExperimentConfig, job: JobSpec, data_path: str | Path,
            out_path: str | Path, checkpoint_path: str | Path | None,
            emit: Callable[[str], None]) -> _Setup:
    """Everything `job` fixes before its first step: device check, data, model, potential
    (Eq. 15 / Methods), preconditioner, schedule, keys, chain layout (docs/langevin.md §8),
    the integrator's initial state, the recorder and the checkpoint identity. Logs the device
    and the layout."""
    from fleos.core.schedules import schedule_from_config
    from fleos.nets.datasets import load_dataset
    from fleos.nets.models import build_model

    device = check_device(exp, emit)
    sc = exp.sampler
    tag = f"[{exp.name} n={job.n} width={job.width} seeds={list(job.seeds)}]"

    ds = load_dataset(data_path)
    if ds.X.shape[0] != job.n:
        raise ValueError(f"data file {data_path} has n={ds.X.shape[0]} training points, "
                         f"but the job asks for n={job.n}")
    dtype = jnp.dtype(sc.dtype)
    model = build_model(exp.arch, exp.model, job.width, param_dtype=dtype)

    def apply_fn(p, x):
        return model.forward(p, x)[0]

    X = jnp.asarray(ds.X, dtype)
    n_chains = len(job.seeds)
    init_keys, keys = chain_keys(job.seeds, job.n, job.width)
    params0 = jax.vmap(lambda k: model.init_prior(k, dtype))(init_keys)
    chain_batch, data_blocks = chain_layout(sc, model, params0, X, n_chains,
                                             device["jax_backend"])
    emit(f"{tag} layout: {chain_batch} chain(s) vmapped at a time, gradient over "
         f"{data_blocks} data block(s) of {job.n // data_blocks} rows")
    potential = make_potential(apply_fn, model.prior_variances(), X, jnp.asarray(ds.y, dtype),
                               exp.sigma2, data_blocks=data_blocks)
    precond = model.prior_variances() if sc.preconditioner == "prior" else None
    sched = schedule_from_config(dict(sc.schedule), total_steps=sc.steps)

    integrator = Integrator(sc.integrator, sc.friction)
    init_group = jax.vmap(lambda p, k: init_extra(potential, p, k, 0, integrator=integrator,
                                                  precond=precond))
    # Op by op when all chains run at once, compiled per group otherwise: the two ways the
    # integrator state was computed before the groups became host calls. Float rounding
    # differs between them; keeping both keeps the chains of every result sampled before
    # that change reproducible bit for bit (checked on laptop FCN, CNN2 and CNN3 jobs).
    extra0 = map_chains(init_group if chain_batch >= n_chains else jax.jit(init_group),
                        (params0, keys), chain_batch)
    W0 = model.input_weights(jax.tree.map(lambda a: a[0], params0))
    d_in = W0.shape[-1]
    recorder = Recorder(
        arch=exp.arch, apply_fn=apply_fn, input_weights=model.input_weights,
        preactivations=model.preactivations, record_every=sc.record_every,
        kernels=exp.kernels, model_cfg=dict(exp.model), probe_channels=sc.probe_channels,
        probe_spatial=sc.probe_spatial, keep_full_weights=sc.full_snapshots > 0,
        snapshot_channels=sc.snapshot_channels, readout_features=model.readout_features,
        readout_variance=model.prior_variances()[model.readout], sigma2=exp.sigma2,
        rb_every=sc.rao_blackwell_every,
    )
    rec_data = recorder.make_data(np.asarray(ds.X), np.asarray(ds.X_test), ds.teacher, d_in,
                                  sc.n_random_directions, sc.directions_seed, dtype,
                                  probe_size=sc.probe_size, y=np.asarray(ds.y))
    snap_fn = jax.jit(lambda p, data: jax.vmap(lambda q: recorder.snapshot(q, data))(p))
    acc1 = recorder.init_acc(rec_data, jax.tree.map(lambda a: a[0], params0))
    acc0 = jax.tree.map(lambda a: jnp.broadcast_to(a, (n_chains, *a.shape)), acc1)
    chash = config_hash(exp, job)
    data_sha = arrays_checksum({"X": ds.X, "y": ds.y, "X_test": ds.X_test,
                                "y_test": ds.y_test, "teacher": dict(ds.teacher)})
    ckpt_id = checkpoint_id(chash, data_sha, exp.arch)
    return _Setup(
        exp=exp, job=job, tag=tag, emit=emit, device=device, out_path=Path(out_path),
        ckpt_path=Path(checkpoint_path) if checkpoint_path is not None else None,
        dtype=dtype, potential=potential, precond=precond, sched=sched, integrator=integrator,
        keys=keys, chain_batch=chain_batch, params0=params0, extra0=extra0, acc0=acc0,
        recorder=recorder, rec_data=rec_data, snap_fn=snap_fn, chash=chash, data_sha=data_sha,
        ckpt_id=ckpt_id)


def checkpoint_id(chash: str, data_sha: str, arch: str) -> str:
    """What a checkpoint must carry to be resumed by a job.

    The same config (`chash`), the same data content (`data_sha`: a data file regenerated or
    edited under an unchanged config starts afresh) and the same numerics: the sampling
    version `fleos.sampling.NUMERICS_VERSION` and, where the architecture has one, its own
    entry of `fleos.sampling.ARCH_NUMERICS_VERSIONS`. A version bump reruns the job (the
    workflow hashes the versions too); without them in this id, a half-finished job's rerun
    would resume the old numerics' checkpoint and splice two samplers into one chain. With
    them, the job refuses that checkpoint (`CheckpointMismatchError`, naming the file).
    """
    key = f"{chash}:{data_sha}:numerics-{_versions.NUMERICS_VERSION}"
    arch_v = _versions.ARCH_NUMERICS_VERSIONS.get(arch)
    if arch_v:
        key += f":{arch}-numerics-{arch_v}"
    return hashlib.sha256(key.encode()).hexdigest()


def _take_snapshot(su: _Setup, st: _State, sampling: np.ndarray) -> None:
    """Append the snapshot of `st` (and, while sampling, its full input weights)."""
    snap = {k: np.asarray(v) for k, v in su.snap_fn(st.params, su.rec_data).items()}
    w_full = snap.pop("w_full", None)
    st.snap_epochs.append(st.step)
    st.snap_sampling.append(np.asarray(sampling, bool))
    st.snaps.append(snap)
    if w_full is not None and sampling.any():
        st.full = (st.full + [(st.step, w_full, np.asarray(sampling, bool))])[
            -su.sc.full_snapshots:]


def _initial_state(su: _Setup) -> _State:
    """The state the job starts from: its checkpoint's, when one matches this job, else epoch
    0 with its first snapshot. Removes the temporaries of a killed predecessor; moves a
    corrupt checkpoint aside with a warning (restarting gives the identical result)."""
    for p in (su.out_path, su.ckpt_path):
        if p is not None:
            remove_stale_temporaries(p)
    if su.ckpt_path is not None and su.ckpt_path.exists():
        try:
            state = _state_from_checkpoint(load_checkpoint(su.ckpt_path), su.ckpt_id,
                                           su.ckpt_path, su.params0, su.extra0, su.acc0,
                                           len(su.job.seeds))
            su.emit(f"{su.tag} resumed from checkpoint {su.ckpt_path} at epoch {state.step}")
            return state
        except CorruptFileError as e:
            bad = su.ckpt_path.with_name(su.ckpt_path.name + ".corrupt")
            su.ckpt_path.replace(bad)
            warnings.warn(f"{e}; moved it to {bad} and restarting from scratch", stacklevel=3)
    n_chains = len(su.job.seeds)
    state = _State(step=0, params=su.params0, extra=su.extra0, acc=su.acc0,
                   sched=[su.sched.init() for _ in su.job.seeds], losses=[], snap_epochs=[],
                   snap_sampling=[], snaps=[], full=[],
                   lr_scale=np.ones(n_chains), n_backoffs=np.zeros(n_chains, np.int64))
    _take_snapshot(su, state, np.array([su.sched.sampling(s) for s in state.sched]))
    return state


# ---- the step loop -------------------------------------------------------------------------


@dataclass
class _Progress:
    """Progress lines (no carriage returns, for SLURM logs): at most one per `every` seconds
    and per epoch, unless forced."""

    su: _Setup
    enabled: bool
    every: float
    step0: int  # the epoch the job (re)started at: the rate counts this run's steps only
    t0: float = field(default_factory=time.monotonic)
    last_print: float = -math.inf
    last_step: int = -1

    def report(self, st: _State, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or st.step == self.last_step or (
                not force and now - self.last_print < self.every):
            return
        self.last_print, self.last_step = now, st.step
        su, total = self.su, self.su.sc.steps
        rate = (st.step - self.step0) / max(now - self.t0, 1e-9)
        lrs = [su.sched.lr(s) * f for s, f in zip(st.sched, st.lr_scale, strict=True)]
        mse = (f"{np.mean(st.losses[-1][:, -1]) / su.job.n:.4g}" if st.losses else "?")
        cnt = np.asarray(st.acc["count"])
        su.emit(f"{su.tag} epoch {st.step}/{total} ({100 * st.step / total:.1f}%) "
                f"lr {min(lrs):.3g}..{max(lrs):.3g} train_mse {mse} "
                f"samples {cnt.min()}..{cnt.max()} {rate:.1f} steps/s "
                f"ETA {_fmt_time((total - st.step) / rate if rate > 0 else math.inf)}")


def _sample(su: _Setup, state: _State, reporter: _Progress, lam0: float | None = None
            ) -> _State:
    """The step loop: chunks of jitted steps up to the earliest of a schedule boundary of any
    chain, the next checkpoint, the next snapshot and the end (module docstring). A chunk
    with a non-finite chain rolls every chain back to the last checkpoint (`_back_off`).
    lam0: λ_max at the start (`_warn_if_unstable`), or None (no stability check): then the
    stability bound is checked once more after the first accepted chunk that reaches
    `_recheck_step`, if this run starts before it."""
    sc, sched, total = su.sc, su.sched, su.sc.steps
    recheck = _recheck_step(sc) if lam0 is not None and state.step < _recheck_step(sc) else None
    rollback = state.copy()  # the in-memory rollback point
    reporter.report(state, force=True)
    while state.step < total and not all(sched.done(s, state.step) for s in state.sched):
        step = state.step
        bounds = [sched.next_boundary(s, step) for s in state.sched]
        end = min(min(bounds), _next_multiple(step, sc.checkpoint_every),
                  _next_multiple(step, sc.snapshot_every), total)
        sampling = np.array([sched.sampling(s) and not sched.done(s, step)
                             for s in state.sched])
        lr_now = np.array([sched.lr(s) * f for s, f in
                           zip(state.sched, state.lr_scale, strict=True)])
        chains, acc, sse = _run_chunk(su, state, end - step, sampling, lr_now)
        ok = _finite_per_chain(chains.params) & np.all(np.isfinite(sse), axis=1)
        if not ok.all():
            state = _back_off(su, rollback, state, ok, sse, step, end, lr_now)
            rollback = state.copy()
            _save_checkpoint(su, state)
            continue
        _accept_chunk(su, state, chains, acc, sse, bounds, sampling)
        if recheck is not None and end >= recheck:
            _warn_if_unstable(su, state.params, state, lam0=lam0)
            recheck = None
        if end % sc.checkpoint_every == 0 and end < total:
            rollback = state.copy()
            _save_checkpoint(su, state)
        reporter.report(state)
    reporter.report(state, force=True)
    return state


def _run_chunk(su: _Setup, st: _State, n_steps: int, sampling: np.ndarray,
               lr_now: np.ndarray) -> tuple[ChainState, dict, np.ndarray]:
    """`n_steps` steps of every chain from `st` at the per-chain lr `lr_now`, the recorder's
    sums as the accumulator (`run_ensemble`; the step is shared by all chains, so the
    recorder's `lax.cond` stays a branch). Returns (chains, sums, sse (chains, n_steps))."""
    chains = ChainState(st.params, jnp.int32(st.step), st.extra)
    acc_in = dict(st.acc, sampling=jnp.asarray(sampling))
    chains, acc, sse = run_ensemble(
        su.potential, chains, su.keys, jnp.asarray(lr_now, su.dtype), n_steps,
        precond=su.precond, accumulate=su.recorder.accumulator, acc=acc_in,
        acc_data=su.rec_data, integrator=su.integrator, chain_batch=su.chain_batch)
    return chains, acc, np.asarray(sse)


def _accept_chunk(su: _Setup, st: _State, chains: ChainState, acc: dict, sse: np.ndarray,
                  bounds: list[int], sampling: np.ndarray) -> None:
    """Take a finite chunk into `st`: the chains, sums and losses; the schedule update of
    each chain whose boundary the chunk reached; the snapshot due at its end."""
    end = st.step + sse.shape[1]
    st.params, st.extra, st.acc, st.step = chains.params, chains.extra, acc, end
    st.losses.append(sse)
    hist = None
    for c, b in enumerate(bounds):
        if b == end:
            if hist is None:
                hist = np.concatenate(st.losses, axis=1)
            st.sched[c] = su.sched.update(st.sched[c], end, hist[c, :end])
    if end % su.sc.snapshot_every == 0 or end == su.sc.steps:
        _take_snapshot(su, st, sampling)


def _back_off(su: _Setup, ckpt: _State, state: _State, ok: np.ndarray, sse: np.ndarray,
              step: int, end: int, lr_now: np.ndarray) -> _State:
    """Roll back to `ckpt`, reducing the lr of each non-finite chain (or raise)."""
    exp, job, sc = su.exp, su.job, su.sc
    new = ckpt.copy()
    new.lr_scale, new.n_backoffs = state.lr_scale.copy(), state.n_backoffs.copy()
    new.events = [dict(e) for e in state.events]
    for c in np.flatnonzero(~ok):
        bad = np.flatnonzero(~np.isfinite(sse[c]))
        at = int(step + bad[0]) if bad.size else int(end)
        seed = job.seeds[c]
        if new.n_backoffs[c] >= sc.max_backoffs:
            raise ChainDivergedError(
                f"experiment {exp.name!r} (n={job.n}, width={job.width}): the chain of seed "
                f"{seed} diverged (non-finite parameters or loss) at step {at} with lr "
                f"{lr_now[c]:.4g} after {int(new.n_backoffs[c])} back-off(s) "
                f"(max_backoffs={sc.max_backoffs}); lower the schedule's lr")
        new.n_backoffs[c] += 1
        new.lr_scale[c] *= sc.backoff_factor
        new_lr = lr_now[c] * sc.backoff_factor
        new.events.append({"epoch": at, "chain": int(c), "seed": int(seed),
                           "old_lr": float(lr_now[c]), "new_lr": float(new_lr),
                           "rollback_to": int(ckpt.step)})
        su.emit(f"{su.tag} seed {seed} diverged at step {at}: rolling back to epoch "
                f"{ckpt.step} with lr {lr_now[c]:.4g} -> {new_lr:.4g}")
    return new


# ---- checkpoints ------------------------------------------------------------------------


def _save_checkpoint(su: _Setup, st: _State) -> None:
    """Write `st` to the job's checkpoint (atomically), if it has one."""
    if su.ckpt_path is not None:
        save_checkpoint(su.ckpt_path, _checkpoint_doc(st, su.keys, su.ckpt_id))


def _stack_snaps(snaps: list[dict]) -> dict:
    """list over time of {name: (chains, ...)} -> {name: (chains, T, ...)}."""
    if not snaps:
        return {}
    return {k: np.stack([s[k] for s in snaps], axis=1) for k in snaps[0]}


def _checkpoint_doc(st: _State, keys: jax.Array, chash: str) -> dict:
    arrays = {
        "params": _tree_arrays(st.params),
        **({} if not jax.tree.leaves(st.extra) else {"extra": _tree_arrays(st.extra)}),
        "acc": {k: np.asarray(v) for k, v in st.acc.items()},
        "chain_keys": np.asarray(keys),
        "losses": (np.concatenate(st.losses, axis=1) if st.losses
                   else np.zeros((len(st.lr_scale), 0))),
        "snap_epochs": np.asarray(st.snap_epochs, np.int64),
        "snap_sampling": np.asarray(st.snap_sampling, bool).reshape(-1, len(st.lr_scale)),
        "snaps": _stack_snaps(st.snaps),
        "full_epochs": np.asarray([f[0] for f in st.full], np.int64),
        "full_w": (np.stack([f[1] for f in st.full]) if st.full else np.zeros((0,))),
        "full_mask": (np.stack([f[2] for f in st.full]) if st.full else np.zeros((0,), bool)),
        "lr_scale": st.lr_scale,
        "n_backoffs": st.n_backoffs,
    }
    meta = {"config_hash": chash, "step": st.step, "sched": st.sched, "events": st.events,
            "n_loss_chunks": [int(x.shape[1]) for x in st.losses]}
    return {"arrays": arrays, "meta": meta}


def _state_from_checkpoint(doc: dict, chash: str, path: Path, params0: Any, extra0: Any,
                           acc0: dict, n_chains: int) -> _State:
    meta, a = doc["meta"], doc["arrays"]
    if meta.get("config_hash") != chash:
        raise CheckpointMismatchError(
            f"checkpoint {path} was written for a different configuration or data (hash "
            f"{str(meta.get('config_hash'))[:12]}… vs {chash[:12]}…); delete it to start "
            f"afresh or point --checkpoint elsewhere")
    params = _restore_tree(params0, a.get("params", {}), "params", path)
    extra = _restore_tree(extra0, a.get("extra", {}), "extra", path)
    try:
        acc = {k: jnp.asarray(a["acc"][k], v.dtype) for k, v in acc0.items()}
        losses_all = np.asarray(a["losses"])
        losses, off = [], 0
        for k in meta["n_loss_chunks"]:  # keep the original chunking (exact concatenation)
            losses.append(losses_all[:, off:off + k])
            off += k
        snaps_st = a.get("snaps", {})
        n_snap = len(a["snap_epochs"])
        snaps = [{k: v[:, t] for k, v in snaps_st.items()} for t in range(n_snap)]
        full = [(int(e), a["full_w"][i], a["full_mask"][i])
                for i, e in enumerate(a["full_epochs"])]
        st = _State(step=int(meta["step"]), params=params, extra=extra, acc=acc,
                    sched=meta["sched"],
                    losses=losses, snap_epochs=[int(e) for e in a["snap_epochs"]],
                    snap_sampling=[np.asarray(m, bool) for m in a["snap_sampling"]],
                    snaps=snaps, full=full, lr_scale=np.asarray(a["lr_scale"], np.float64),
                    n_backoffs=np.asarray(a["n_backoffs"], np.int64), events=meta["events"])
    except (KeyError, ValueError, IndexError, TypeError) as e:
        raise CorruptFileError(f"checkpoint {path} does not hold a valid sampler state: "
                               f"{e!r}") from e
    if len(st.lr_scale) != n_chains:
        raise CorruptFileError(f"checkpoint {path} has {len(st.lr_scale)} chains, "
                               f"expected {n_chains}")
    return st


# The second stability estimate comes after this many steps (or at the first checkpoint, if
# that is sooner): λ_max grows as a chain leaves its prior draw and fits the data, and by
# then it has (at the paper's CNN3: studies/cnn3_stability).
STABILITY_RECHECK_STEPS = 200


def _recheck_step(sc: Any) -> int:
    """The step after which `_sample` re-estimates λ_max: `STABILITY_RECHECK_STEPS` or the
    first checkpoint, whichever comes first."""
    return min(STABILITY_RECHECK_STEPS, sc.checkpoint_every)


def _warn_if_unstable(su: _Setup, params: Any, state: _State,
                      lam0: float | None = None) -> float:
    """Warn when the current lr exceeds the stability bound 2/λ_max of every integrator
    (docs/langevin.md §3), λ_max of the preconditioned Hessian at the first chain's
    `params` (leading chain axis; 20 Hessian-vector products, `stiffest_curvature`).

    Called twice per job when ``check_stability`` is on: at the initial parameters
    (`run_job`; `lam0` None) and after the first chunk reaching `_recheck_step` (`_sample`;
    `lam0` the first estimate, named in the line with the step). The second call also logs
    one line when the lr is within the bound. Reads the state only: no sampled number
    changes. Returns λ_max."""
    lr_max = max(su.sched.lr(s) * f for s, f in zip(state.sched, state.lr_scale, strict=True))
    lam = stiffest_curvature(su.potential, jax.tree.map(lambda a: a[0], params), n_iter=20,
                             precond=su.precond)
    where = ("the initial parameters" if lam0 is None else
             f"step {state.step}; {lam0:.4g} at the initial parameters")
    if lr_max * lam >= 2.0:
        msg = (f"{su.tag} lr {lr_max:.4g} is beyond the stability bound 2/λ_max = "
               f"{2 / lam:.4g} (λ_max = {lam:.4g} of the preconditioned Hessian at {where}); "
               f"expect back-offs or a biased chain")
        warnings.warn(msg, stacklevel=3)
        su.emit(msg)
    elif lam0 is not None:
        su.emit(f"{su.tag} stability: lr·λ_max = {lr_max * lam:.3g} (λ_max = {lam:.4g} of the "
                f"preconditioned Hessian at {where})")
    return lam


def _key_name(key: Any) -> str:
    """The name of one step of a pytree key path: a NamedTuple field, a dict key or a
    sequence index."""
    for attr in ("name", "key", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    raise TypeError(f"unsupported pytree key {key!r}")


def _tree_arrays(tree: Any) -> Any:
    """A pytree as the nested dicts of numpy arrays a checkpoint stores, named by key path
    (`_key_name`; a bare array stays an array). Any pytree works: the integrator states are
    NamedTuples, and a dict state with the same names gets the same layout."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    if len(flat) == 1 and not flat[0][0]:
        return np.asarray(flat[0][1])
    out: dict[str, Any] = {}
    for path, leaf in flat:
        *parents, last = [_key_name(k) for k in path]
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        node[last] = np.asarray(leaf)
    return out


def _restore_tree(template: Any, stored: Any, what: str, path: Path) -> Any:
    """The pytree of `template` (its structure, dtypes and shapes: the freshly initialised
    state of this job) rebuilt from what `_tree_arrays` stored, leaf by leaf by key path.
    A checkpoint that lacks a leaf of the template, holds one it does not have, or has one of
    another shape is refused (`CheckpointMismatchError`), naming the first such leaf."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = ["/".join(_key_name(k) for k in kp) for kp, _ in flat]
    held = set(flatten_tree(stored)) if isinstance(stored, Mapping) else {""}

    def refuse(problem: str) -> CheckpointMismatchError:
        return CheckpointMismatchError(
            f"checkpoint {path} {problem}: it was written by another integrator state or "
            f"another version of fleos; delete it to restart")

    missing = [n for n in names if n not in held]
    if missing:
        raise refuse(f"lacks {what}/{missing[0]} ({len(missing)} leaves missing)")
    unknown = sorted(held - set(names))
    if unknown:
        raise refuse(f"holds {what}/{unknown[0]}, which this job's {what} does not have")
    leaves = []
    for name, (_, ref) in zip(names, flat, strict=True):
        value = stored
        for part in name.split("/") if name else ():
            value = value[part]
        if np.shape(value) != ref.shape:
            raise refuse(f"has {what}/{name} of shape {np.shape(value)}, this job "
                         f"{ref.shape}")
        leaves.append(jnp.asarray(value, ref.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


# ---- outputs -------------------------------------------------------------------------------


def _write_outputs(su: _Setup, state: _State, t0: float) -> None:
    """Write the sample file (atomically), then delete the checkpoint. Warns for a chain that
    recorded no equilibrium samples."""
    job, total = su.job, su.sc.steps
    for c, seed in enumerate(job.seeds):
        if int(np.asarray(state.acc["count"])[c]) == 0:
            msg = (f"{su.tag} the chain of seed {seed} recorded no equilibrium samples (its "
                   f"lr schedule never reached the sampling stage in {total} epochs): its "
                   f"means are NaN")
            warnings.warn(msg, stacklevel=3)
            su.emit(msg)
    datasets = _output_datasets(state, job, su.sc, su.rec_data, su.recorder, su.sched)
    attrs = {"config_hash": su.chash, "data_sha256": su.data_sha,
             "schedule_states": state.sched, "steps_done": state.step, "total_steps": total,
             **su.device}
    write_samples(su.out_path, datasets, config=su.exp.to_dict(), seeds=job.seeds, n=job.n,
                  width=job.width, extra_attrs=attrs)
    if su.ckpt_path is not None and su.ckpt_path.exists():
        su.ckpt_path.unlink()
    su.emit(f"{su.tag} wrote {su.out_path} ({time.monotonic() - t0:.1f} s)")


def _diag_series(x: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """IAT and ESS per chain and component, split-R-hat per component, of snapshot series
    x (chains, T, ...) restricted to each chain's sampling snapshots ``mask`` (chains, T)."""
    from fleos.core.diagnostics import integrated_autocorr_time, split_rhat

    c, t = x.shape[:2]
    flat = x.reshape(c, t, -1)[:, :, :MAX_DIAG_COMPONENTS].astype(np.float64)
    m = flat.shape[2]
    iat = np.full((c, m), np.nan)
    lens = mask.sum(axis=1)
    for i in range(c):
        s = flat[i, mask[i]]
        for j in range(m):
            try:
                iat[i, j] = integrated_autocorr_time(s[:, j])
            except ValueError:  # fewer than 4 points or non-finite: no estimate
                pass
    ess = lens[:, None] / iat
    rhat = np.full(m, np.nan)
    tmin = int(lens.min()) if c else 0
    if c >= 2 and tmin >= 4:
        # the last tmin sampling snapshots of every chain: equal lengths for split-R-hat
        tails = np.stack([flat[i, mask[i]][-tmin:] for i in range(c)])
        for j in range(m):
            try:
                rhat[j] = split_rhat(tails[:, :, j])
            except ValueError:
                pass
    return {"iat": iat, "ess": ess, "rhat": rhat}


def _output_datasets(st: _State, job: JobSpec, sc: Any, rec_data: dict, recorder: Recorder,
                     sched: Any) -> dict:
    n_chains = len(job.seeds)
    acc = {k: np.asarray(v) for k, v in st.acc.items() if k != "sampling"}
    out: dict[str, Any] = finalize(acc)
    out["seeds"] = np.asarray(job.seeds, np.int64)
    losses = (np.concatenate(st.losses, axis=1) if st.losses else np.zeros((n_chains, 0)))
    idx = np.arange(0, losses.shape[1], sc.loss_every)
    out["loss"] = {"sse": losses[:, idx].astype(np.float32), "epoch": idx.astype(np.int64)}
    out["lr"] = {"final": np.array([sched.lr(s) * f for s, f in
                                    zip(st.sched, st.lr_scale, strict=True)]),
                 "backoff_scale": st.lr_scale}
    ev = st.events
    out["backoffs"] = {
        "epoch": np.array([e["epoch"] for e in ev], np.int64),
        "chain": np.array([e["chain"] for e in ev], np.int64),
        "seed": np.array([e["seed"] for e in ev], np.int64),
        "old_lr": np.array([e["old_lr"] for e in ev], np.float64),
        "new_lr": np.array([e["new_lr"] for e in ev], np.float64),
        "rollback_to": np.array([e["rollback_to"] for e in ev], np.int64),
    }
    snaps = _stack_snaps(st.snaps)
    mask = np.asarray(st.snap_sampling, bool).reshape(-1, n_chains).T  # (chains, T)
    out["snapshots"] = {"epoch": np.asarray(st.snap_epochs, np.int64), "sampling": mask,
                        **snaps,
                        "directions": np.asarray(rec_data["dirs"], np.float64)}
    if "teacher_dir" in rec_data:
        out["snapshots"]["teacher_direction"] = np.asarray(rec_data["teacher_dir"], np.float64)
    # Σ̂(θ) per snapshot is a matrix read through its projections (the top modes), not a
    # series of components: no per-component diagnostics for it.
    diag: dict[str, Any] = {name: _diag_series(v, mask) for name, v in snaps.items()
                            if name != "sigma"}
    # loss during sampling: IAT per chain in epochs (the loss is recorded every epoch)
    from fleos.core.diagnostics import integrated_autocorr_time

    loss_iat = np.full(n_chains, np.nan)
    for c in range(n_chains):
        window = _sampling_window(st.sched[c], losses.shape[1])
        if window is not None:
            try:
                loss_iat[c] = integrated_autocorr_time(losses[c, window[0]:window[1]])
            except ValueError:  # fewer than 4 points or non-finite
                pass
    diag["loss"] = {"iat": loss_iat}
    out["diagnostics"] = diag
    if st.full and "sigma" in out:
        out["top_modes"] = _top_modes(st, out["sigma"]["mean"], sc)
    return out


def _sampling_window(sched_state: dict, total: int) -> tuple[int, int] | None:
    """[start, end) epochs of a chain's sampling stage from its schedule events: "sampling"
    (constant, fixed) or "final" (spike) starts it, "sampling_end" (fixed) ends it."""
    start = None
    for e in sched_state.get("events", []):
        kind = e.get("kind")
        if start is None and kind in ("sampling", "final"):
            start = int(e["epoch"])
        elif start is not None and kind == "sampling_end":
            return start, int(e["epoch"])
    return None if start is None else (start, total)


def _top_modes(st: _State, sigma_mean: np.ndarray, sc: Any) -> dict:
    """Project the kept full input-weight snapshots on the top eigenvectors of each chain's
    mean Σ: the most strongly fluctuating first-layer weight modes (Fig. 2a)."""
    n_chains, d = sigma_mean.shape[0], sigma_mean.shape[-1]
    k = min(sc.top_modes, d)
    K = sc.full_snapshots
    C = st.full[0][1].shape[1]
    vecs = np.full((n_chains, d, k), np.nan)
    vals = np.full((n_chains, k), np.nan)
    proj = np.full((n_chains, K, C, k), np.nan)
    epochs = np.full((n_chains, K), -1, np.int64)
    for c in range(n_chains):
        if not np.all(np.isfinite(sigma_mean[c])):
            continue  # no samples for this chain
        w, v = np.linalg.eigh(sigma_mean[c])
        order = np.argsort(w)[::-1][:k]
        vecs[c], vals[c] = v[:, order], w[order]
        kept = [(e, W[c]) for e, W, m in st.full if m[c]][-K:]
        for i, (e, Wc) in enumerate(kept):
            proj[c, i] = np.asarray(Wc, np.float64) @ vecs[c]
            epochs[c, i] = e
    return {"eigvecs": vecs, "eigvals": vals, "proj": proj, "epoch": epochs}
