"""Figs. 4/5 at the paper's scale: is the teacher direction carried by one specialised channel?

Reads the sample files of a 3-layer CNN run (config/paper_cpu_cnn3.yaml) and writes, per
chain: the hidden layer's teacher power P(t) = Σ_c (h2_c·ĥ2*)² over ALL C2 channels (from the
recorder's all-channel mean square, × C2) at points of the run; the share of P carried by the
largest recorded channel and by the channels outside the recorded subset
(`snapshot_channels`); the same for the input weights' teacher overlap; the chain's top Σ
eigenvalue; and Eq. 5's Σ prediction (Fig. 5, the paper's reading with the empirical Q̂2)
evaluated at that chain's own kernels Σ̂, K̂2, Q̂2, beside the pooled one the workflow draws.

    .venv/bin/python studies/cnn3_specialization/specialization.py \\
        --run results/paper_cpu_cnn3 --config config/paper_cpu_cnn3.yaml \\
        --out studies/cnn3_specialization/specialization.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

EPOCHS = (0, 1000, 2000, 4000, 8000, 12000, 16000, 20000)
GATED = ("h2_teacher_msq", "w_teacher_msq", "h2_random_msq", "w_random_msq")
SPECIALISED = 0.5  # a chain whose P sits > this share in one channel (recorded or inferred)


def _gates_by_subset(series: dict[str, list[np.ndarray]], seeds: list[int],
                     plain: list[int], moved: list[int]) -> list[str]:
    """R̂ and bulk ESS of the gated all-channel series over chain subsets: all chains;
    without the chains that have no specialised channel; also without those whose P moved
    between levels inside the window; and the latter's last half-window."""
    from fleos.core.diagnostics import ess_bulk, rhat_rank

    t = min(len(x) for x in series[GATED[0]])
    subsets = [("all chains, window", seeds, 0),
               ("without " + ", ".join(map(str, plain)), [s for s in seeds if s not in plain], 0),
               ("without " + ", ".join(map(str, plain + moved)),
                [s for s in seeds if s not in plain + moved], 0),
               ("the same, last half of the window",
                [s for s in seeds if s not in plain + moved], t // 2)]
    out = ["| series | " + " | ".join(lab for lab, _, _ in subsets) + " |",
           "|---|" + "---|" * len(subsets)]
    for key in GATED:
        cells = []
        for _, keep, t0 in subsets:
            x = np.stack([series[key][seeds.index(s)][-t:] for s in keep])[:, t0:]
            cells.append(f"R̂ {rhat_rank(x):.3f}, ESS {ess_bulk(x):.0f}")
        out.append(f"| {key.removesuffix('_msq')}_sq | " + " | ".join(cells) + " |")
    return out


def fail(msg: str) -> NoReturn:
    print(f"{Path(sys.argv[0]).name}: {msg}", file=sys.stderr)
    sys.exit(2)


def cnn3_experiment(path: Path) -> tuple[dict, str, Any]:
    """(the config document, the name of its cnn3 experiment, its ExperimentConfig); a
    one-line exit naming --config when the file is missing, invalid or has no cnn3."""
    from fleos.config import experiment_from_file, load_config_file

    if not path.is_file():
        fail(f"--config {path}: no such file")
    try:
        doc = load_config_file(path)
        name = next(k for k, v in doc.get("experiments", {}).items()
                    if v.get("arch") == "cnn3")
        return doc, name, experiment_from_file(path, name)
    except StopIteration:
        fail(f"--config {path}: no cnn3 experiment")
    except ValueError as err:
        fail(f"--config {path}: {err}")


def _shares(proj: np.ndarray, msq: np.ndarray, C: int) -> dict[str, np.ndarray]:
    """Per snapshot: total power C·msq, share of the largest recorded channel, share outside
    the recorded channels, the ratio of the mean power per unrecorded channel to the mean
    per recorded one (≫ 1 only if the unrecorded power sits in few channels), and the
    largest single channel's share: the top recorded one's, or the unrecorded power less
    what its other channels carry at the recorded channels' typical rate (the recorded
    ones but the top), whichever is larger."""
    total = C * msq
    p2 = proj**2
    recorded, top = p2.sum(-1), p2.max(-1)
    k = proj.shape[-1]
    outside = np.clip(total - recorded, 0.0, None)
    if C > k:
        ratio = (outside / (C - k)) / (recorded / k)
        typical = (recorded - top) / (k - 1)
        single = np.maximum(top, outside - (C - k - 1) * typical)
    else:
        ratio, single = np.full_like(total, np.nan), top
    return {"total": total, "top": top / total, "outside": outside / total, "ratio": ratio,
            "single": single / total}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="the run's results folder")
    ap.add_argument("--config", type=Path, required=True, help="the run's config file")
    ap.add_argument("--out", type=Path, required=True, help="markdown file to write")
    ap.add_argument("--no-eos", action="store_true", help="skip the per-chain Eq. 5")
    args = ap.parse_args()

    import fleos  # noqa: F401  (float64 for the EoS)
    from fleos.config import theory_options
    from fleos.nets.datasets import load_dataset
    from fleos.sampling.io import read_samples
    from fleos.theory.runs import cnn3_spectra

    doc, exp_name, exp = cnn3_experiment(args.config)
    n, C = exp.data["n"][0], exp.widths[0]
    folder = args.run / "samples" / exp_name / f"n{n}" / f"w{C}"
    chunks = sorted(folder.glob("chunk*.h5"))
    data_path = args.run / "data" / exp_name / f"n{n}.npz"
    if not chunks or not data_path.is_file():
        fail(f"--run {args.run}: no sample files in {folder} or no {data_path}")
    ds = load_dataset(data_path)
    model = dict(exp.model)
    ridge = float(theory_options("cnn3", doc["experiments"][exp_name].get("theory"))["ridge"])

    rows, times, pooled = [], [], {"Sigma": [], "K2": [], "Q2": []}
    series: dict[str, list[np.ndarray]] = {k: [] for k in GATED}
    for path in chunks:
        s = read_samples(path)
        snaps, seeds = s["snapshots"], np.asarray(s["seeds"])
        if "h2_teacher_msq" not in snaps or "w_teacher_msq" not in snaps:
            fail(f"--run {args.run}: {path.name} lacks the all-channel mean squares")
        ep = np.asarray(snaps["epoch"])
        mask = np.asarray(snaps["sampling"], bool)
        for c, seed in enumerate(seeds):
            h = _shares(np.asarray(snaps["h2_teacher"][c], np.float64),
                        np.asarray(snaps["h2_teacher_msq"][c], np.float64), C)
            w = _shares(np.asarray(snaps["w_teacher"][c], np.float64),
                        np.asarray(snaps["w_teacher_msq"][c], np.float64), C)
            win = np.where(mask[c])[0]
            for key in GATED:
                series[key].append(np.asarray(snaps[key][c], np.float64)[win])
            q = np.array_split(win, 4)
            Sig = np.asarray(s["sigma"]["mean"][c], np.float64)
            K2 = np.asarray(s["K2"]["mean"][c], np.float64)
            Q2 = np.asarray(s["Q2"]["mean"][c], np.float64)
            for key, val in (("Sigma", Sig), ("K2", K2), ("Q2", Q2)):
                pooled[key].append(val)
            row = {"seed": int(seed),
                   "P_quarters": [float(h["total"][i].mean()) for i in q],
                   "top_end": float(h["top"][q[-1]].mean()),
                   "outside_end": float(h["outside"][q[-1]].mean()),
                   "single_end": float(h["single"][q[-1]].mean()),
                   "ratio_end": float(h["ratio"][q[-1]].mean()),
                   "W_quarters": [float(w["total"][i].mean()) for i in q],
                   "w_top_end": float(w["top"][q[-1]].mean()),
                   "sigma_top": float(np.linalg.eigvalsh(Sig)[-1])}
            if not args.no_eos:
                spec = cnn3_spectra(ds, Sig, K2, Q2, model, exp.sigma2, C, C, ridge,
                                    top_sigma=1, top_q2=1)
                row["sigma_pred_top"] = spec["sigma_pred_eigs"][0]
            rows.append(row)
            times.append([float(h["total"][min(np.searchsorted(ep, e), len(ep) - 1)])
                          for e in EPOCHS])
    pooled_pred = None
    if not args.no_eos:
        mean = {k: np.mean(v, axis=0) for k, v in pooled.items()}
        pooled_pred = cnn3_spectra(ds, mean["Sigma"], mean["K2"], mean["Q2"], model,
                                   exp.sigma2, C, C, ridge, top_sigma=1, top_q2=1)

    lines = [
        "# Figs. 4/5 at the paper's scale: one specialised hidden channel",
        "",
        f"Run: `{args.run}` ({len(rows)} chains, n = {n}, C1 = C2 = {C}); made by "
        "`studies/cnn3_specialization/specialization.py`.",
        "",
        "P = Σ_c (h2_c·ĥ2*)², the hidden layer's teacher power over all channels. "
        "Shares at the end (last quarter of the sampling window): the largest recorded "
        f"channel's, and that of the {C - snaps['h2_teacher'].shape[-1]} channels outside "
        "the recorded subset; 'per-channel ratio' = mean power per unrecorded channel / mean "
        "per recorded channel (≫ 1 only if the unrecorded power sits in a few channels); "
        "the largest single channel's share: the top recorded channel's, or, outside the "
        "subset, the unrecorded share less what its other channels carry at the recorded "
        "channels' typical rate (an inference). "
        "W = Σ_c (w_c·ŵ*)², the same for the input weights.",
        "",
        "| seed | P by quarter of the window | top recorded channel's share of P | share "
        "outside the subset | per-channel ratio | largest single channel's share of P "
        "| W by quarter | top channel's share of W | top Σ | Eq. 5 top Σ at the chain's own "
        "kernels |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pred = f"{r['sigma_pred_top']:.4f}" if "sigma_pred_top" in r else "—"
        lines.append(
            f"| {r['seed']} | {', '.join(f'{v:.0f}' for v in r['P_quarters'])} | "
            f"{r['top_end']:.2f} | {r['outside_end']:.2f} | {r['ratio_end']:.1f} | "
            f"{r['single_end']:.2f} | "
            f"{', '.join(f'{v:.1f}' for v in r['W_quarters'])} | {r['w_top_end']:.3f} | "
            f"{r['sigma_top']:.4f} | {pred} |")
    lines += ["", "P at epochs " + ", ".join(str(e) for e in EPOCHS) + ":", "",
              "| seed | " + " | ".join(str(e) for e in EPOCHS) + " |",
              "|---|" + "---|" * len(EPOCHS)]
    for r, t in zip(rows, times, strict=True):
        lines.append(f"| {r['seed']} | " + " | ".join(f"{v:.0f}" for v in t) + " |")
    seeds = [r["seed"] for r in rows]
    spec = {r["seed"]: r["single_end"] > SPECIALISED for r in rows}
    plain = [s for s in seeds if not spec[s]]
    moved = [r["seed"] for r in rows if spec[r["seed"]]
             and r["P_quarters"][-1] > 1.15 * r["P_quarters"][0]]
    lines += ["", f"Specialised (one channel > {SPECIALISED:.0%} of P at the end, read "
              "directly or, outside the subset, as the share above what the other channels "
              f"carry): {sum(spec.values())} of {len(seeds)} chains. Without one: seeds "
              f"{plain}. P rose by more than 15 % inside the window: seeds {moved}.", "",
              "The gated series (all-channel mean squares) over subsets of the chains:", "",
              *_gates_by_subset(series, seeds, plain, moved)]
    if pooled_pred is not None:
        lines += ["", f"Pooled over the chains (the workflow's Fig. 5 reading): top Σ "
                  f"{np.linalg.eigvalsh(np.mean(pooled['Sigma'], 0))[-1]:.4f}, Eq. 5 "
                  f"{pooled_pred['sigma_pred_eigs'][0]:.4f}."]
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
