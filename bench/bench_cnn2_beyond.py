"""Benchmark: the two 2-layer CNN theories beyond Eq. 8 at the paper's Fig. 3 size, before and
after a code change: the moment-matched EoS (`fleos.theory.eos.cnn2_matched`, solved and
diagnosed as the workflow's theory rule does, `fleos.theory.runs.cnn2_matched_row`) and the
kernel-fluctuation correction (`fleos.theory.eos.cnn2_fluct`, i.i.d. and resummed, as the rule
writes the fluct_* and fluct_resummed_* columns).

Run by hand (never in CI), e.g. on one pinned core with the workflow's XLA flags:
    git archive <old commit> src | tar -x -C /tmp/fleos_before
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        taskset -c 1 .venv/bin/python bench/bench_cnn2_beyond.py \\
        --compare-src /tmp/fleos_before/src --points 1600:640 1600:160 800:320

Each point n:C is the paper-scale problem of config/paper_cpu.yaml (S = 64, N = 20, erf,
σ² = 0.1, σ_w² = σ_a² = 2, n_test = 1000, teacher_seed 0, data_seed 1) at Eq. 8's Σ for that C,
solved once in this process with this checkout's code (tol 1e-8) and handed to both codes, so
both start the matched solve from the same Σ (the workflow adds the previous C's matched
offset to it; here every point starts from Eq. 8's Σ alone). The theory options are the
workflow's defaults: 4096 matched samples (seed 0), 2048 fluctuation draws (seed C, as the rule
makes it from fluct_seed 0). Each code runs in a fresh process (PYTHONPATH = its src/), the
order swapped every round; a process first compiles its programs at the problem's shapes
(reported apart: paid once per n by the workflow's job) and then times every point. Reported
per point: CPU seconds (`time.process_time`, the comparable number on a shared machine), wall
seconds, map evaluations, the load average, and the results (top Σ, α) of both codes with the
difference in units of the Monte Carlo SE.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time


def _loadavg() -> list[str]:
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def _points(specs: list[str]) -> list[tuple[int, float]]:
    out = []
    for spec in specs:
        n, sep, C = spec.partition(":")
        try:
            out.append((int(n), float(C)))
        except ValueError:
            sys.exit(f"bench_cnn2_beyond: --points: expected n:C, got {spec!r}")
        if not sep or out[-1][0] < 2 or out[-1][1] <= 0:
            sys.exit(f"bench_cnn2_beyond: --points: expected n:C with n >= 2, C > 0, got {spec!r}")
    return out


def _problem(n: int, n_test: int):  # noqa: ANN202
    from fleos.nets.data import make_dataset
    from fleos.theory.eos import cnn2

    cfg = {"S": 64, "N": 20, "sigma_w2": 2.0, "sigma_a2": 2.0, "activation": "erf"}
    ds = make_dataset("cnn2", cfg, n, n_test, 0, 1)
    return cnn2.CNN2Problem.from_arrays(ds.X, ds.y, 20, 64, ds.X_test, ds.y_test, sigma2=0.1,
                                        sigma_a2=2.0, sigma_w2=2.0)


def eq8_starts(args: argparse.Namespace, path: str) -> None:
    """Eq. 8's Σ at every point (this checkout's code), saved for both codes."""
    import numpy as np

    from fleos.theory.eos import cnn2

    out = {}
    for n in sorted({n for n, _ in args.pts}):
        pb = _problem(n, args.n_test)
        Cs = sorted({C for m, C in args.pts if m == n}, reverse=True)
        for C, res in zip(Cs, cnn2.sweep_cnn2(pb, Cs, tol=1e-8), strict=True):
            if not res.converged:
                sys.exit(f"bench_cnn2_beyond: Eq. 8 did not converge at n = {n}, C = {C:g}")
            out[f"{n}:{C:g}"] = np.asarray(res.x)
    np.savez(path, **out)


def timed_run(args: argparse.Namespace) -> None:
    """All points with whatever fleos is importable; one JSON line on stdout."""
    import jax
    import numpy as np

    import fleos
    from fleos.theory.eos import cnn2_fluct, cnn2_matched
    from fleos.theory.eos.cnn2 import cnn2_observables
    from fleos.theory.runs import cnn2_matched_row
    from fleos.theory.solvers import _flat_eval  # noqa: F401  (present in both codes)

    fleos.limit_blas_threads()
    starts = np.load(args.timed_run)
    th = {"matched_samples": 4096, "matched_seed": 0}
    rows, compile_s = [], {}
    for n in sorted({n for n, _ in args.pts}, reverse=True):
        pb = _problem(n, args.n_test)
        Sig0 = starts[f"{n}:{next(C for m, C in args.pts if m == n):g}"]
        # compile at this n's shapes: one map evaluation, the diagnostics, one small call of
        # each fluctuation variant (same batch shapes as the timed calls)
        c0 = time.process_time()
        jax.block_until_ready(cnn2_matched.matched_map(pb, 640.0, Sig0))
        cnn2_matched.matched_diagnostics(pb, 640.0, Sig0)
        cnn2_observables(pb, Sig0)
        for resum in (False, True):
            cnn2_fluct.kernel_fluctuation_correction(pb, 640.0, Sig0, n_draws=256,
                                                     resum=resum)
        compile_s[n] = time.process_time() - c0
        for m, C in args.pts:
            if m != n:
                continue
            Sig = starts[f"{n}:{C:g}"]
            load0 = _loadavg()
            c0, t0 = time.process_time(), time.perf_counter()
            matched, _ = cnn2_matched_row(pb, C, Sig, th, log=lambda _s: None)
            m_cpu, m_wall = time.process_time() - c0, time.perf_counter() - t0
            c0, t0 = time.process_time(), time.perf_counter()
            seed = int(C)  # the rule's fluct_seed 0 · 1_000_003 + C
            if hasattr(cnn2_fluct, "fluct_rows"):
                fluct = cnn2_fluct.fluct_rows(pb, C, Sig, n_draws=2048, seed=seed)
            else:
                fluct = {}
                for prefix, resum in (("fluct", False), ("fluct_resummed", True)):
                    fluct.update(cnn2_fluct.fluct_row(pb, C, Sig, n_draws=2048, seed=seed,
                                                      resum=resum, prefix=prefix))
            f_cpu, f_wall = time.process_time() - c0, time.perf_counter() - t0
            rows.append({"n": n, "C": C, "load_start": load0, "load_end": _loadavg(),
                         "matched_cpu_s": m_cpu, "matched_wall_s": m_wall,
                         "fluct_cpu_s": f_cpu, "fluct_wall_s": f_wall,
                         **{k: v for k, v in matched.items()},
                         **{k: v for k, v in fluct.items() if not k.endswith("seconds")}})
            print(f"  n={n} C={C:g}: matched {m_cpu:.1f} CPU-s ({matched['matched_iterations']}"
                  f" evaluations), fluct {f_cpu:.1f} CPU-s", file=sys.stderr, flush=True)
    print(json.dumps({"fleos": os.path.dirname(fleos.__file__), "compile_cpu_s": compile_s,
                      "rows": rows}))


def compare(args: argparse.Namespace) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    srcs = {"before": os.path.abspath(args.compare_src),
            "after": os.path.join(os.path.dirname(here), "src")}
    pts = [f"{n}:{C:g}" for n, C in args.pts]
    base = [sys.executable, os.path.abspath(__file__), "--n-test", str(args.n_test),
            "--points", *pts]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        starts = os.path.join(tmp, "starts.npz")
        eq8_starts(args, starts)
        order = [lab for r in range(args.rounds)
                 for lab in (("before", "after") if r % 2 == 0 else ("after", "before"))]
        if args.only:
            order = [lab for lab in order if lab == args.only]
        for r, label in enumerate(order):
            env = dict(os.environ, PYTHONPATH=srcs[label])
            print(f"run {r}: {label}, load {_loadavg()}", file=sys.stderr, flush=True)
            proc = subprocess.run([*base, "--timed-run", starts], env=env, stdout=subprocess.PIPE,
                                  text=True, check=False)
            if proc.returncode != 0:
                sys.exit(f"bench_cnn2_beyond: the {label} run failed (exit {proc.returncode})")
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            run["label"] = label
            runs.append(run)
    out = {"settings": {"points": pts, "n_test": args.n_test, "rounds": args.rounds,
                        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
                        "affinity": sorted(os.sched_getaffinity(0)), "srcs": srcs},
           "machine": {"node": platform.node(), "cpus": os.cpu_count(),
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
           "runs": runs, "agreement": _agreement(runs)}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


def _agreement(runs: list[dict]) -> list[dict]:
    """after − before at every point, in units of the result's Monte Carlo SE."""
    first = {}
    for run in runs:
        first.setdefault(run["label"], run)
    if set(first) != {"before", "after"}:
        return []
    out = []
    for b, a in zip(first["before"]["rows"], first["after"]["rows"], strict=True):
        row = {"n": b["n"], "C": b["C"]}
        for key, se in (("sigma_top_matched", "sigma_top_matched_mc_se"),
                        ("alpha_train_fluct", "alpha_train_fluct_mc_se"),
                        ("alpha_test_fluct", "alpha_test_fluct_mc_se"),
                        ("alpha_train_fluct_resummed", "alpha_train_fluct_resummed_mc_se"),
                        ("alpha_test_fluct_resummed", "alpha_test_fluct_resummed_mc_se")):
            row[f"{key}_diff_in_se"] = (a[key] - b[key]) / b[se]
        for key in ("alpha_test_matched", "alpha_train_matched"):
            row[f"{key}_rel_diff"] = (a[key] - b[key]) / abs(b[key])
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", nargs="+", default=["1600:640", "1600:160", "800:320"],
                    help="n:C pairs (default: 1600:640 1600:160 800:320)")
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--compare-src", metavar="DIR", required=False,
                    help="fleos source tree of the 'before' code")
    ap.add_argument("--rounds", type=int, default=1, help="before/after rounds")
    ap.add_argument("--only", choices=["before", "after"], help="run one of the two codes")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--timed-run", metavar="NPZ", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.pts = _points(args.points)
    if args.timed_run is not None:
        timed_run(args)
        return
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    if args.compare_src is None:
        ap.error("--compare-src is required")
    if not os.path.isdir(os.path.join(args.compare_src, "fleos")):
        ap.error(f"--compare-src: no fleos package under {args.compare_src!r}")
    compare(args)


if __name__ == "__main__":
    import fleos

    fleos.limit_blas_threads()  # as the CLI and the workflow (bench/RESULTS.md "BLAS threads")
    main()
