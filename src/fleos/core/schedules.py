"""Learning-rate protocols of the paper (Methods, "Bayesian posterior sampling with
Langevin-type dynamics"), as host-side per-chain state machines.

A schedule never touches arrays on the device: the job driver asks it for the lr in force and
the next *boundary* epoch, runs one jitted chunk of ULA steps up to that boundary, then calls
`update` with the chain's train-loss (sse) history. States are plain JSON-serialisable dicts so
that they go into checkpoints unchanged; each holds an `events` list of
{"epoch", "kind", "lr", ...} records (the lr *after* the event).

Protocols:
* `ConstantSchedule`: fixed lr, sampling after `burn_in`.
* `SpikeSchedule` (2- and 3-layer CNNs): lr0/10 for 100 epochs, then lr0; from epoch 5e3,
  every 1e3 epochs look for loss spikes and multiply lr by 0.7 on each; once 5e4 epochs pass
  without a spike, halve lr, keep it fixed and sample until 3e5. Our exact reading of the
  spike rule is in `detect_spike` and docs/langevin.md.
* `FixedSchedule` (3-layer FCN): lr0 = half the largest stable lr, ÷2 at epochs 100, 1e5, 1e6,
  3e6, ÷4 at 4e6 and 5e6; sample in [6e6, 7e6).

Every epoch count is a config key (the laptop config shrinks them).
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Schedule(Protocol):
    """Interface the job driver uses (one instance shared by chains, one state per chain)."""

    def init(self) -> dict: ...

    def lr(self, state: dict) -> float: ...

    def next_boundary(self, state: dict, epoch: int) -> int: ...

    def update(self, state: dict, epoch: int, losses: np.ndarray) -> dict: ...

    def sampling(self, state: dict) -> bool: ...

    def done(self, state: dict, epoch: int) -> bool: ...


# ------------------------------------------------------------------------------ config helpers


def _as_int(name: str, value: Any) -> int:
    """Epoch counts may come from YAML as 5.0e4 (float) or "5e4" (PyYAML reads it as str)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"schedule key {name!r} must be an integer, got {value!r}") from None
    if not math.isfinite(f) or f != int(f):
        raise ValueError(f"schedule key {name!r} must be an integer, got {value!r}")
    return int(f)


def _as_float(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"schedule key {name!r} must be a number, got {value!r}") from None


def _build(cls, cfg: dict, kind: str):
    """Construct schedule `cls` from a dict, naming unknown and missing keys."""
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self")
    unknown = sorted(set(cfg) - set(params))
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} for schedule kind {kind!r}; allowed: {sorted(params)}"
        )
    missing = [n for n, p in params.items() if n not in cfg and p.default is p.empty]
    if missing:
        raise ValueError(f"schedule kind {kind!r} requires key(s) {missing}")
    return cls(**cfg)


def _event(epoch: int, kind: str, lr: float, **extra: Any) -> dict:
    ev = {"epoch": int(epoch), "kind": kind, "lr": float(lr)}
    for k, v in extra.items():
        ev[k] = float(v) if isinstance(v, (float, np.floating)) else v
    return ev


def _check_epoch(sched: Any, epoch: int) -> int:
    epoch = int(epoch)
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if epoch >= sched.total_steps:
        raise ValueError(f"schedule is done at epoch {epoch} (total_steps={sched.total_steps})")
    return epoch


# ------------------------------------------------------------------------------ constant


class ConstantSchedule:
    """Fixed lr η for `total_steps` epochs; samples are taken from epoch `burn_in` on.

    (A plain immutable class rather than a dataclass: the config key `lr` would clash with the
    `lr(state)` method of the Schedule protocol.)
    """

    __slots__ = ("_lr", "burn_in", "total_steps")

    def __init__(self, lr: float, burn_in: int, total_steps: int) -> None:
        lr_f = _as_float("lr", lr)
        burn, total = _as_int("burn_in", burn_in), _as_int("total_steps", total_steps)
        if not lr_f > 0:
            raise ValueError(f"schedule key 'lr' must be positive, got {lr_f}")
        if not 0 <= burn < total:
            raise ValueError(
                f"schedule keys need 0 <= burn_in < total_steps, got burn_in={burn}, "
                f"total_steps={total}"
            )
        object.__setattr__(self, "_lr", lr_f)
        object.__setattr__(self, "burn_in", burn)
        object.__setattr__(self, "total_steps", total)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"ConstantSchedule is immutable (tried to set {name!r})")

    def __repr__(self) -> str:
        return (
            f"ConstantSchedule(lr={self._lr}, burn_in={self.burn_in}, "
            f"total_steps={self.total_steps})"
        )

    def init(self) -> dict:
        ev = [_event(0, "start", self._lr)]
        if self.burn_in == 0:
            ev.append(_event(0, "sampling", self._lr))
        return {"lr": self._lr, "sampling": self.burn_in == 0, "events": ev}

    def lr(self, state: dict) -> float:
        return float(state["lr"])

    def next_boundary(self, state: dict, epoch: int) -> int:
        epoch = _check_epoch(self, epoch)
        return self.burn_in if epoch < self.burn_in else self.total_steps

    def update(self, state: dict, epoch: int, losses: np.ndarray) -> dict:
        new = copy.deepcopy(state)
        if not new["sampling"] and epoch >= self.burn_in:
            new["sampling"] = True
            new["events"].append(_event(epoch, "sampling", new["lr"]))
        return new

    def sampling(self, state: dict) -> bool:
        return bool(state["sampling"])

    def done(self, state: dict, epoch: int) -> bool:
        return int(epoch) >= self.total_steps


# ------------------------------------------------------------------------------ spike


_REFERENCES = ("trailing", "block")


def detect_spike(
    losses: np.ndarray,
    start: int,
    stop: int,
    window: int,
    n_sigma: float,
    reference: str = "trailing",
) -> tuple[int | None, float]:
    """Look for a loss spike among epochs [start, stop) (our reading of the Methods' rule).

    reference="trailing": epoch t is a spike if losses[t] > mean + n_sigma·std of the `window`
    epochs before it, losses[t-window:t] (each epoch against its own past).
    reference="block": every epoch of [start, stop) is compared with the single window
    losses[start-window:start] that precedes the interval.
    std is the sample standard deviation (ddof=1). A non-finite loss is a spike (z = inf).
    Returns (first spiking epoch or None, largest z = (loss − mean)/std seen).
    """
    if reference not in _REFERENCES:
        raise ValueError(
            f"schedule key 'reference' must be one of {_REFERENCES}, got {reference!r}"
        )
    losses = np.asarray(losses, dtype=np.float64)
    if start - window < 0 or stop > len(losses) or stop <= start:
        raise ValueError(
            f"need 0 <= start-window and start < stop <= len(losses); got start={start}, "
            f"stop={stop}, window={window}, len(losses)={len(losses)}"
        )
    cur = losses[start:stop]
    if reference == "trailing":
        ref = np.lib.stride_tricks.sliding_window_view(losses[start - window : stop - 1], window)
        mean, std = ref.mean(axis=1), ref.std(axis=1, ddof=1)
    else:
        ref = losses[start - window : start]
        mean, std = np.full(len(cur), ref.mean()), np.full(len(cur), ref.std(ddof=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (cur - mean) / std
    # Zero spread (or a non-finite reference): any rise is infinitely significant.
    z = np.where(std > 0, z, np.where(cur > mean, np.inf, 0.0))
    z = np.where(np.isfinite(cur), np.nan_to_num(z, nan=np.inf), np.inf)
    hits = np.nonzero(z > n_sigma)[0]
    first = int(start + hits[0]) if len(hits) else None
    return first, float(np.max(z))


@dataclass(frozen=True)
class SpikeSchedule:
    """Adaptive protocol of the paper for the 2- and 3-layer CNNs (Methods).

    Stages: "warmup" (lr0·warmup_factor for epochs [0, warmup_epochs)), "search" (lr0, then
    ×decay at every check that finds a spike; checks at epochs check_start + k·check_every,
    each examining the check_every epochs before it with `detect_spike`), "final" (entered at
    the first check at which `quiet_epochs` epochs have passed with no spike: lr ×final_factor,
    fixed, samples are equilibrium samples) until `total_steps`. The quiet clock starts at the
    first monitored epoch, check_start − check_every, and restarts at every spike check.
    """

    lr0: float
    total_steps: int = 300_000
    warmup_epochs: int = 100
    warmup_factor: float = 0.1
    check_start: int = 5_000
    check_every: int = 1_000
    window: int = 500
    spike_sigma: float = 5.0
    decay: float = 0.7
    quiet_epochs: int = 50_000
    final_factor: float = 0.5
    reference: str = "trailing"

    def __post_init__(self) -> None:
        for name in ("total_steps", "warmup_epochs", "check_start", "check_every", "window",
                     "quiet_epochs"):
            object.__setattr__(self, name, _as_int(name, getattr(self, name)))
        for name in ("lr0", "warmup_factor", "spike_sigma", "decay", "final_factor"):
            val = _as_float(name, getattr(self, name))
            if not val > 0:
                raise ValueError(f"schedule key {name!r} must be positive, got {val}")
            object.__setattr__(self, name, val)
        if self.reference not in _REFERENCES:
            raise ValueError(
                f"schedule key 'reference' must be one of {_REFERENCES}, got {self.reference!r}"
            )
        if self.check_every < 1 or self.window < 2:
            raise ValueError(
                f"schedule keys need check_every >= 1 and window >= 2, got "
                f"check_every={self.check_every}, window={self.window}"
            )
        if self.check_start < self.check_every + self.window:
            raise ValueError(
                "schedule key 'check_start' must be >= check_every + window (the first check "
                f"needs that much history), got {self.check_start} < "
                f"{self.check_every} + {self.window}"
            )
        if not 0 <= self.warmup_epochs < self.check_start:
            raise ValueError(
                f"schedule key 'warmup_epochs' must be in [0, check_start), got "
                f"{self.warmup_epochs}"
            )
        if self.total_steps <= self.check_start:
            raise ValueError(
                f"schedule key 'total_steps' must exceed check_start={self.check_start}, got "
                f"{self.total_steps}"
            )

    def init(self) -> dict:
        warm = self.warmup_epochs > 0
        lr = self.lr0 * self.warmup_factor if warm else self.lr0
        return {
            "stage": "warmup" if warm else "search",
            "lr": lr,
            "quiet_since": self.check_start - self.check_every,
            "last_update": 0,
            "events": [_event(0, "start", lr)],
        }

    def lr(self, state: dict) -> float:
        return float(state["lr"])

    def _is_check(self, epoch: int) -> bool:
        return epoch >= self.check_start and (epoch - self.check_start) % self.check_every == 0

    def next_boundary(self, state: dict, epoch: int) -> int:
        epoch = _check_epoch(self, epoch)
        cands = [self.total_steps]
        if state["stage"] == "warmup" and self.warmup_epochs > epoch:
            cands.append(self.warmup_epochs)
        if state["stage"] != "final":
            if epoch < self.check_start:
                cands.append(self.check_start)
            else:
                k = (epoch - self.check_start) // self.check_every + 1
                cands.append(self.check_start + k * self.check_every)
        return min(c for c in cands if c > epoch)

    def update(self, state: dict, epoch: int, losses: np.ndarray) -> dict:
        """Advance the state machine at `epoch`; `losses[:epoch]` is the sse history.

        Idempotent: a second call at the same epoch, or a call at an epoch that is not a
        boundary of this schedule (the driver may stop for checkpoints), changes nothing.
        """
        epoch = int(epoch)
        new = copy.deepcopy(state)
        if epoch <= new["last_update"]:
            return new
        new["last_update"] = epoch
        if new["stage"] == "warmup" and epoch >= self.warmup_epochs:
            new["stage"] = "search"
            new["lr"] = self.lr0
            new["events"].append(_event(epoch, "warmup_end", new["lr"]))
        if new["stage"] == "search" and self._is_check(epoch):
            losses = np.asarray(losses)
            if len(losses) < epoch:
                raise ValueError(
                    f"update at epoch {epoch} needs the loss history of epochs [0, {epoch}), "
                    f"got {len(losses)} values"
                )
            t, zmax = detect_spike(
                losses[:epoch], epoch - self.check_every, epoch, self.window, self.spike_sigma,
                self.reference,
            )
            if t is not None:
                new["lr"] = new["lr"] * self.decay
                new["quiet_since"] = epoch
                new["events"].append(
                    _event(epoch, "spike", new["lr"], loss_epoch=t, z=min(zmax, 1e300))
                )
            elif epoch - new["quiet_since"] >= self.quiet_epochs:
                new["lr"] = new["lr"] * self.final_factor
                new["stage"] = "final"
                new["events"].append(_event(epoch, "final", new["lr"]))
        return new

    def sampling(self, state: dict) -> bool:
        return state["stage"] == "final"

    def done(self, state: dict, epoch: int) -> bool:
        return int(epoch) >= self.total_steps


# ------------------------------------------------------------------------------ fixed


_PAPER_FCN_MILESTONES = (
    (100, 0.5),
    (100_000, 0.5),
    (1_000_000, 0.5),
    (3_000_000, 0.5),
    (4_000_000, 0.25),
    (5_000_000, 0.25),
)


@dataclass(frozen=True)
class FixedSchedule:
    """Piecewise-constant lr (paper's 3-layer FCN protocol, Methods).

    lr(epoch) = lr0 · Π_{milestones m with m.epoch <= epoch} m.factor; sampling for epochs in
    [sample_start, sample_end); run until total_steps (default: sample_end). `milestones` is a
    list of [epoch, factor] pairs (defaults: the paper's ÷2 at 100, 1e5, 1e6, 3e6 and ÷4 at 4e6,
    5e6; lr0 is half the largest stable lr, see `fleos.sampling.sampler.stiffest_curvature`).
    """

    lr0: float
    milestones: tuple = field(default=_PAPER_FCN_MILESTONES)
    sample_start: int = 6_000_000
    sample_end: int = 7_000_000
    total_steps: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr0", _as_float("lr0", self.lr0))
        if not self.lr0 > 0:
            raise ValueError(f"schedule key 'lr0' must be positive, got {self.lr0}")
        ms = []
        for i, m in enumerate(self.milestones):
            if len(m) != 2:
                raise ValueError(
                    f"schedule key 'milestones'[{i}] must be [epoch, factor], got {m!r}"
                )
            e = _as_int(f"milestones[{i}].epoch", m[0])
            f = _as_float(f"milestones[{i}].factor", m[1])
            if e <= 0 or not f > 0:
                raise ValueError(
                    f"schedule key 'milestones'[{i}] needs epoch > 0 and factor > 0, got {m!r}"
                )
            ms.append((e, f))
        object.__setattr__(self, "milestones", tuple(sorted(ms)))
        object.__setattr__(self, "sample_start", _as_int("sample_start", self.sample_start))
        object.__setattr__(self, "sample_end", _as_int("sample_end", self.sample_end))
        total = self.sample_end if self.total_steps is None else self.total_steps
        object.__setattr__(self, "total_steps", _as_int("total_steps", total))
        if not 0 <= self.sample_start < self.sample_end <= self.total_steps:
            raise ValueError(
                "schedule keys need 0 <= sample_start < sample_end <= total_steps, got "
                f"{self.sample_start}, {self.sample_end}, {self.total_steps}"
            )

    def lr_at(self, epoch: int) -> float:
        """The lr in force during epoch `epoch`."""
        lr = self.lr0
        for e, f in self.milestones:
            if e <= epoch:
                lr *= f
        return lr

    def _in_window(self, epoch: int) -> bool:
        return self.sample_start <= epoch < self.sample_end

    def init(self) -> dict:
        return {
            "lr": self.lr0,
            "sampling": self._in_window(0),
            "events": [_event(0, "start", self.lr0)],
        }

    def lr(self, state: dict) -> float:
        return float(state["lr"])

    def next_boundary(self, state: dict, epoch: int) -> int:
        epoch = _check_epoch(self, epoch)
        cands = [e for e, _ in self.milestones] + [
            self.sample_start, self.sample_end, self.total_steps
        ]
        return min(c for c in cands if c > epoch)

    def update(self, state: dict, epoch: int, losses: np.ndarray) -> dict:
        """Set lr and the sampling flag for `epoch` (a pure function of epoch; idempotent)."""
        epoch = int(epoch)
        new = copy.deepcopy(state)
        lr = self.lr_at(epoch)
        if lr != new["lr"]:
            new["lr"] = lr
            new["events"].append(_event(epoch, "milestone", lr))
        samp = self._in_window(epoch)
        if samp != new["sampling"]:
            new["sampling"] = samp
            new["events"].append(_event(epoch, "sampling" if samp else "sampling_end", lr))
        return new

    def sampling(self, state: dict) -> bool:
        return bool(state["sampling"])

    def done(self, state: dict, epoch: int) -> bool:
        return int(epoch) >= self.total_steps


# ------------------------------------------------------------------------------ factory


_KINDS = {"constant": ConstantSchedule, "spike": SpikeSchedule, "fixed": FixedSchedule}
# The kinds a config may name (`fleos.config` and the workflow's schema read them from here).
SCHEDULE_KINDS = tuple(_KINDS)


def schedule_from_config(cfg: dict, *, total_steps: int | None = None) -> Schedule:
    """Build a schedule from its config block, e.g. {"kind": "spike", "lr0": 1e-4, ...}.

    cfg["kind"] in `SCHEDULE_KINDS`; the other keys are the fields of
    ConstantSchedule / SpikeSchedule / FixedSchedule. `total_steps` (e.g. the sampler's
    `steps`) is used when cfg does not set it; if both are given they must agree.
    """
    if not isinstance(cfg, dict):
        raise ValueError(f"schedule config must be a mapping, got {type(cfg).__name__}")
    cfg = dict(cfg)
    kind = cfg.pop("kind", None)
    if kind not in _KINDS:
        raise ValueError(f"schedule key 'kind' must be one of {sorted(_KINDS)}, got {kind!r}")
    if total_steps is not None:
        if "total_steps" in cfg and _as_int("total_steps", cfg["total_steps"]) != int(total_steps):
            raise ValueError(
                f"schedule key 'total_steps'={cfg['total_steps']} disagrees with the sampler's "
                f"steps={total_steps}"
            )
        cfg.setdefault("total_steps", int(total_steps))
    return _build(_KINDS[kind], cfg, kind)


__all__ = [
    "ConstantSchedule",
    "FixedSchedule",
    "SCHEDULE_KINDS",
    "Schedule",
    "SpikeSchedule",
    "detect_spike",
    "schedule_from_config",
]
