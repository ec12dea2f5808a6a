"""Fig. 6's stand-in: does a chain's train loss follow its step size? Run by hand from the
repository root, after `snakemake --cores 1 --configfile=config/fig6_standin.yaml fig6`:

    .venv/bin/python studies/fig6_standin/stepsize_check.py --results results/fig6_standin

The sampler halves a chain's η when the chain diverges and rolls it back to its last
checkpoint (`fleos.sampling.experiment`, "back-off"); the sample file lists each back-off
(epoch, rollback point, new η). In config/fig6_standin.yaml's run some back-offs fall inside
the sampling window, so the window holds stretches at different η, within a chain and across
chains. BAOAB's stationary law differs from the posterior by O(η) in general (exactly zero
only for a Gaussian posterior), so a loss that depends on η would show as a between-chain
difference (R̂) and a within-chain drift that longer chains cannot remove.

Prints, from the per-step train loss (sse/n) in the window: each chain's stretches at constant
η with their mean ± SE (SE from the stretch's integrated autocorrelation time); the mean over
stretches per η; the change across each switch of η inside the window (3000 steps either side,
in combined SE); and the gates' R̂ and bulk ESS of the loss (every 10th step) over all chains
and over the chains at one η in a common stretch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fleos.analysis.aggregate import backoff_schedule, load_chunks
from fleos.core.diagnostics import ess_bulk, integrated_autocorr_time, rhat_rank


def lr_in_force(events: list[tuple[int, float]], lr0: float, epochs: np.ndarray) -> np.ndarray:
    """η at each epoch of a chain's accepted trajectory under a constant schedule: each
    back-off's factor holds from its rollback point on (`backoff_schedule`)."""
    lr = np.full(len(epochs), lr0)
    for r, factor in sorted(events):
        lr[epochs >= r] *= factor
    return lr


def mean_se(x: np.ndarray) -> tuple[float, float, float]:
    tau = integrated_autocorr_time(x)
    return float(x.mean()), float(x.std() * np.sqrt(tau / len(x))), float(tau)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default="results/fig6_standin")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--width", type=int, default=16)
    args = p.parse_args()
    files = sorted(Path(args.results, "samples", "myrtle5", f"n{args.n}",
                        f"w{args.width}").glob("chunk*.h5"))
    if not files:
        raise SystemExit(f"--results: no sample files under {args.results}/samples/myrtle5")
    loss, lrs, burn = [], [], None
    for path in files:
        samples = load_chunks([path])
        sched = samples["config"]["sampler"]["schedule"]
        if sched.get("kind", "constant") != "constant":
            raise SystemExit(f"{path}: schedule kind {sched.get('kind')!r}; this check reads "
                             "the constant schedule's lr and burn_in")
        burn = int(sched["burn_in"])
        epochs = np.asarray(samples["loss/epoch"])
        if not np.array_equal(epochs, np.arange(len(epochs))):
            raise SystemExit(f"{path}: the loss is not recorded at every step")
        events = backoff_schedule(samples)
        sse = np.asarray(samples["loss/sse"], np.float64) / args.n
        for seed, row in zip(np.asarray(samples["seeds"]), sse, strict=True):
            loss.append(row)
            lrs.append(lr_in_force(events.get(int(seed), []), float(sched["lr"]), epochs))
    L, LR = np.array(loss), np.array(lrs)
    steps = L.shape[1]
    print(f"# Train loss against step size: {len(L)} chains, window [{burn}, {steps})\n")
    print("| chain | η | steps | train MSE ± SE | τ_int |")
    print("|---|---|---|---|---|")
    by_eta: dict[float, list[float]] = {}
    for c in range(len(L)):
        for eta in np.unique(LR[c, burn:]):
            m = LR[c] == eta
            m[:burn] = False
            mu, se, tau = mean_se(L[c, m])
            by_eta.setdefault(float(eta), []).append(mu)
            print(f"| {c} | {eta:.3g} | {m.sum()} | {mu:.4f} ± {se:.4f} | {tau:.0f} |")
    print("\n| η | stretches | mean of their means | SD across stretches |")
    print("|---|---|---|---|")
    for eta, ms in sorted(by_eta.items()):
        sd = f"{np.std(ms, ddof=1):.4f}" if len(ms) > 1 else "—"
        print(f"| {eta:.3g} | {len(ms)} | {np.mean(ms):.4f} | {sd} |")
    print("\nSwitches of η inside the window (3000 steps either side):\n")
    print("| chain | step | η before → after | MSE before | MSE after | change (SE) |")
    print("|---|---|---|---|---|---|")
    for c in range(len(L)):
        for t in np.flatnonzero(np.diff(LR[c]) != 0) + 1:
            if t <= burn:
                continue
            a, sa, _ = mean_se(L[c, max(burn, t - 3000):t])
            b, sb, _ = mean_se(L[c, t:t + 3000])
            print(f"| {c} | {t} | {LR[c, t - 1]:.3g} → {LR[c, t]:.3g} | {a:.4f} ± {sa:.4f} | "
                  f"{b:.4f} ± {sb:.4f} | {(b - a) / np.hypot(sa, sb):+.1f} |")
    print("\nThe loss gate (rank-normalised R̂, bulk ESS; every 10th step):\n")
    print("| chains | stretch | R̂ | bulk ESS |")
    print("|---|---|---|---|")
    common = [c for c in range(len(L)) if len(np.unique(LR[c, burn:])) == 1]
    rows = [("all", range(len(L)), slice(burn, steps))]
    mid = slice(burn + (steps - burn) // 2 - 2500, burn + (steps - burn) // 2 + 2500)
    rows.append(("all", range(len(L)), mid))
    for eta in sorted(by_eta):
        same = [c for c in range(len(L)) if np.all(LR[c, mid] == eta)]
        if len(same) >= 2:
            rows.append((f"η = {eta:.3g}: {same}", same, mid))
    for name, cs, w in rows:
        X = L[list(cs), w][:, ::10]
        print(f"| {name} | [{w.start}, {w.stop}) | {rhat_rank(X):.3f} | {ess_bulk(X):.0f} |")
    print(f"\nChains at one η over the whole window: {common}")


if __name__ == "__main__":
    main()
