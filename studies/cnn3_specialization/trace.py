"""Figs. 4/5 at the paper's scale: each chain's hidden-layer teacher power along the whole run.

P = Σ_c (h2_c·ĥ2*)² over all C2 channels (the recorder's all-channel mean square × C2) and the
largest single channel's share of it (`specialization._shares`), averaged over blocks of
steps from step 0 (burn-in included: snapshots are taken all along). Reads each chunk's
finished sample file, or, for a job still running, its last checkpoint, so a long run can be
read while it samples. Decides the hypothesis of docs/results.md ("Figs. 4/5"): does a
chain without a specialised channel acquire one, and does a chain with one ever lose it?

    .venv/bin/python studies/cnn3_specialization/trace.py \\
        --run results/paper_cpu_cnn3_long --config config/paper_cpu_cnn3_long.yaml \\
        --block 5000 --out studies/cnn3_specialization/trace.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from specialization import SPECIALISED, _shares, cnn3_experiment, fail


def _chunk_snapshots(sample: Path, ckpt: Path, seeds: tuple[int, ...]
                     ) -> tuple[str, np.ndarray, dict, list[int], dict | None]:
    """(status, epochs, {name: (chains, T, ...)}, seeds, the samples or None) of one chunk
    of `seeds`: from its finished sample file, else from its checkpoint (status 'running, at
    step k')."""
    from fleos.sampling.io import load_checkpoint, read_samples

    if sample.is_file():
        s = read_samples(sample)
        snaps = s["snapshots"]
        return ("finished", np.asarray(snaps["epoch"]), snaps,
                [int(x) for x in np.asarray(s["seeds"])], s)
    doc = load_checkpoint(ckpt)
    arrays = doc["arrays"]
    return (f"running, at step {int(doc['meta']['step'])}", np.asarray(arrays["snap_epochs"]),
            arrays["snaps"], list(seeds), None)


def _finished_summary(s: dict, c: int, start: int, n: int) -> str:
    """A finished chain's window train MSE ± SE (from its own τ_int of the loss, read every
    10 steps) and its top Σ eigenvalue."""
    from fleos.core.diagnostics import integrated_autocorr_time

    epochs = np.asarray(s["loss"]["epoch"])
    mse = np.asarray(s["loss"]["sse"][c], np.float64)[epochs >= start] / n
    tau = integrated_autocorr_time(mse[::10]) * 10
    se = mse.std(ddof=1) * np.sqrt(tau / len(mse))
    top = np.linalg.eigvalsh(np.asarray(s["sigma"]["mean"][c], np.float64))[-1]
    return (f"train MSE {mse.mean():.6f} ± {se:.6f} (τ_int {tau:.0f} steps), "
            f"top Σ {top:.4f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="the run's results folder")
    ap.add_argument("--config", type=Path, required=True, help="the run's config file")
    ap.add_argument("--block", type=int, default=5000, help="steps per block (default 5000)")
    ap.add_argument("--out", type=Path, required=True, help="markdown file to write")
    args = ap.parse_args()
    if args.block < 1:
        fail(f"--block {args.block}: must be a positive number of steps")

    _, exp_name, exp = cnn3_experiment(args.config)
    if not args.run.is_dir():
        fail(f"--run {args.run}: no such folder")
    n, C = exp.data["n"][0], exp.widths[0]
    steps = exp.sampler.steps
    sub = Path(exp_name) / f"n{n}" / f"w{C}"
    chunks = exp.seed_chunks()
    edges = list(range(0, steps, args.block)) + [steps]
    head = [f"{a // 1000}k–{b // 1000}k" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    rows: list[str] = []
    footer: list[str] = []
    start = int(exp.sampler.schedule.get("sample_start", 0))
    for chunk, chunk_seeds in enumerate(chunks):
        sample = args.run / "samples" / sub / f"chunk{chunk}.h5"
        ckpt = args.run / "checkpoints" / sub / f"chunk{chunk}.ckpt"
        if not sample.is_file() and not ckpt.is_file():
            rows.append(f"| {', '.join(map(str, chunk_seeds))} | not started |"
                        + " |" * len(head))
            continue
        status, ep, snaps, seeds, samples = _chunk_snapshots(sample, ckpt, chunk_seeds)
        for c, seed in enumerate(seeds):
            sh = _shares(np.asarray(snaps["h2_teacher"][c], np.float64),
                         np.asarray(snaps["h2_teacher_msq"][c], np.float64), C)
            cells = []
            for a, b in zip(edges[:-1], edges[1:], strict=True):
                sel = (ep >= a) & (ep < b)
                cells.append(f"{sh['total'][sel].mean():.0f} ({sh['single'][sel].mean():.2f})"
                             if sel.any() else "")
            rows.append(f"| {seed} | {status} | " + " | ".join(cells) + " |")
            if samples is not None:
                footer.append(f"- seed {seed}, window: "
                              + _finished_summary(samples, c, start, n))
    lines = [
        "# Figs. 4/5 at the paper's scale: the teacher power of each chain along the run",
        "",
        f"Run: `{args.run}` (`{args.config}`: n = {n}, C1 = C2 = {C}, {steps} steps, "
        f"window from step {start}); made by "
        "`studies/cnn3_specialization/trace.py`.",
        "",
        f"Each cell: P = Σ_c (h2_c·ĥ2*)² over all {C} hidden channels, mean over the block "
        "of steps, and in brackets the largest single channel's share of P (read directly "
        "when that channel is recorded, else inferred from the unrecorded share: "
        f"specialization.py). A chain counts as specialised when that share is above "
        f"{SPECIALISED}.",
        "",
        "| seed | job | " + " | ".join(f"steps {h}" for h in head) + " |",
        "|---|---|" + "---|" * len(head),
        *rows,
        "",
        "Finished chains (train MSE over the sampling window, its SE from the chain's own "
        "τ_int of the loss; the chain's top Σ eigenvalue):",
        "",
        *footer,
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
