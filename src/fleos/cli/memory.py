"""Peak memory of the theory commands, estimated from their arguments before any work.

A theory command's memory is set by its kernels: n × n float64 matrices (n training points),
n_test × n test blocks, (nN)² hidden kernels of the 3-layer CNN, the d × d input covariance
of the FCN, and the data themselves. A size the machine cannot hold would run until the
kernel's out-of-memory killer stops it (and, on a shared node, other people's jobs with it);
`require_memory` refuses it instead, on one line naming the argument, the bytes needed and the
bytes available, exit 2 (`fleos.cli`). ``FLEOS_SKIP_MEMORY_CHECK=1`` skips the check.

Each estimate is a sum of terms, float64 counts times 8 bytes, times `SAFETY`, plus `BASE`
(the interpreter, JAX and the compiled programs):

    bytes = BASE + SAFETY · 8 · Σ_k c_k · term_k

The terms are the arrays that grow with the arguments (read from the code: the solvers'
Krylov bases and Anderson histories, the linearizations they keep, the kernels and their
Cholesky factors and inverses); the coefficients c_k are peak resident set sizes measured on
the CPU backend at two sizes each, per unit of the term (docs/reliability.md, "Memory of the
theory commands", gives the measurements). The estimate is for host memory: on a GPU the
same arrays live in device memory, which this check does not read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fleos.cli.args import InputError

SKIP_ENV = "FLEOS_SKIP_MEMORY_CHECK"
FLOAT = 8  # bytes of a float64
BASE = 600e6  # interpreter + JAX + compiled programs (peak RSS of the smallest runs)
SAFETY = 1.5  # over the measured coefficients: XLA's buffer reuse differs between sizes


@dataclass(frozen=True)
class Term:
    """`count` float64 values of the arrays described by `what`, set by the arguments `args`."""

    count: float
    what: str
    args: str

    @property
    def bytes(self) -> float:
        return SAFETY * FLOAT * self.count


def total_bytes(terms: Iterable[Term]) -> tuple[float, Term]:
    """(estimated peak bytes, the largest term) of one run."""
    terms = list(terms)
    return BASE + sum(t.bytes for t in terms), max(terms, key=lambda t: t.bytes)


# ---- the estimates, one per command ---------------------------------------------------------
# Coefficients: peak RSS per float64 of the term (fits in docs/reliability.md).


def fcn_terms(n: int, n_test: int, d: int, depth: int, method: str, n_arg: str) -> list[Term]:
    """`fleos eos fcn` (Eq. 5): the unknowns are Σ (d × d) and L − 2 hidden n × n kernels;
    Newton-Krylov keeps a GMRES basis of 31 such vectors and the linearization of the map
    (L n × n kernels with their inverses), Anderson a history of 2·5 of them."""
    per_unknown = 170.0 if method == "newton_krylov" else 40.0
    unknowns = d * d + (depth - 2) * n * n
    return [
        Term(per_unknown * unknowns, f"{per_unknown:.0f} copies of Σ (d×d) and the "
             f"{depth - 2} hidden n×n kernels", f"{n_arg} --d {d} --depth {depth}"),
        Term(12.0 * depth * n * n, f"{12 * depth} n×n kernels", f"{n_arg} --depth {depth}"),
        Term(8.0 * n_test * n, "8 n_test×n test kernels", f"{n_arg} --n-test {n_test}"),
        Term(6.0 * (n + n_test) * d, "6 copies of the data",
             f"{n_arg} --n-test {n_test} --d {d}"),
    ]


def cnn2_terms(n: int, n_test: int, N: int, S: int, matched_samples: int,
               n_arg: str) -> list[Term]:
    """`fleos eos cnn2` (Eq. 8): n × n kernels (Q_f, its Cholesky factor, K_f⁻¹, the field A
    and one patch's G with its pullback), n_test × n test kernels, the data as patches, and
    with --matched-samples a batch of 128 channels' activations on all n·N patches."""
    terms = [
        Term(12.0 * n * n, "12 n×n kernels", n_arg),
        Term(8.0 * n_test * n, "8 n_test×n test kernels", f"{n_arg} --n-test {n_test}"),
        Term(6.0 * (n + n_test) * N * S, "6 copies of the data",
             f"{n_arg} --n-test {n_test} --N {N} --S {S}"),
        Term(100.0 * S * S, "100 S×S matrices", f"--S {S}"),
    ]
    if matched_samples:
        terms.append(Term(4.0 * 128 * n * N, "the activations of 128 channels on n·N patches",
                          f"{n_arg} --N {N} --matched-samples {matched_samples}"))
    return terms


def fls_terms(arch: str, n: int, d: int, depth: int, N: int, S: int) -> list[Term]:
    """`fleos fls` (Eq. 6) at one (arch, n): the GP kernels and their Cholesky factor
    (FCN: one n × n kernel per layer; CNN: one patch's G and its gradient) and the data."""
    if arch.startswith("fcn"):
        return [Term((4.0 + 2 * depth) * n * n, f"{4 + 2 * depth} n×n kernels",
                     f"--arch {arch} --n {n}"),
                Term(6.0 * n * d, "6 copies of the data", f"--arch {arch} --n {n} --d {d}")]
    return [Term(12.0 * n * n, "12 n×n kernels", f"--arch {arch} --n {n}"),
            Term(6.0 * n * N * S, "6 copies of the data",
                 f"--arch {arch} --n {n} --N {N} --S {S}"),
            Term(100.0 * S * S, "100 S×S matrices", f"--arch {arch} --S {S}")]


def cnn3_terms(n: int, N: int, S1: int, S0: int, n_arg: str) -> list[Term]:
    """`fleos eos cnn3` (Eq. 14 at empirical kernels): (nN) × (nN) hidden kernels (K̂2, Q̂2,
    Q2(Σ), its inverse, the KL field, one i-block's G with its pullback, Q2_pred) and the
    N same-j n × n blocks of Q_f."""
    nN = n * N
    return [Term(16.0 * nN * nN, "16 (n·N)×(n·N) hidden kernels", f"{n_arg} --N {N}"),
            Term(4.0 * N * n * n, "4·N n×n blocks of Q_f", f"{n_arg} --N {N}"),
            Term(6.0 * nN * S1 * S0, "6 copies of the data",
                 f"{n_arg} --N {N} --S1 {S1} --S0 {S0}")]


# ---- what the machine has --------------------------------------------------------------------


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def cgroup_room(root: Path = Path("/sys/fs/cgroup"),
                self_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """Limit minus usage of this process's memory cgroup (v2, else v1), None without a limit."""
    rel = ""
    try:
        for line in self_cgroup.read_text().splitlines():
            if line.startswith("0::"):
                rel = line[3:].lstrip("/")
    except OSError:
        pass
    for folder, limit_name, usage_name in ((root / rel, "memory.max", "memory.current"),
                                           (root, "memory.max", "memory.current"),
                                           (root / "memory", "memory.limit_in_bytes",
                                            "memory.usage_in_bytes")):
        limit = _read_int(folder / limit_name)
        if limit is not None and limit < 2**60:  # v1 writes ~2^63 for no limit
            return max(0, limit - (_read_int(folder / usage_name) or 0))
    return None


def available_memory() -> int | None:
    """Bytes this process can still allocate: the smaller of the kernel's MemAvailable
    (/proc/meminfo) and the room left under a cgroup memory limit, if one is set."""
    known = [b for b in (_meminfo_available(), cgroup_room()) if b is not None]
    return min(known) if known else None


def _size(nbytes: float) -> str:
    for unit, scale in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{math.ceil(nbytes / 1e3)} kB"


def require_memory(terms: Iterable[Term], available: int | None = None) -> None:
    """InputError, one line, if the estimated peak of `terms` exceeds `available` bytes
    (default: `available_memory()`); nothing if it fits, if the machine does not say, or if
    FLEOS_SKIP_MEMORY_CHECK=1."""
    if os.environ.get(SKIP_ENV) == "1":
        return
    have = available_memory() if available is None else available
    if have is None:
        return
    need, top = total_bytes(terms)
    if need > have:
        raise InputError(f"{top.args} needs ~{_size(need)} ({top.what}), this machine has "
                         f"{_size(have)} available ({SKIP_ENV}=1 runs it anyway)")
