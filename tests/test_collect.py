"""`fleos collect` / fleos.analysis.collect: a finished run into a small committed folder."""

from __future__ import annotations

import csv

import yaml

from fleos.cli import main


def _fake_run(tmp_path):
    res = tmp_path / "results"
    (res / "tables").mkdir(parents=True)
    (res / "figures").mkdir()
    (res / "tables" / "fig3.csv").write_text("n,C,rhat\n8,4,1.002\n")
    (res / "tables" / "fig3_summary.rst").write_text("* ok\n")
    (res / "figures" / "fig3.png").write_bytes(b"\x89PNG fake")
    (res / "figures" / "fig3.pdf").write_bytes(b"%PDF fake")  # not copied: PNG is enough
    for chunk, wall in ((0, 12.5), (1, 7.5)):
        b = res / "benchmarks" / "sample" / "cnn2" / "n8" / "w4" / f"chunk{chunk}.tsv"
        b.parent.mkdir(parents=True, exist_ok=True)
        b.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\t"
                     f"cpu_time\n{wall}\t0:00:12\t100.0\t1\t1\t1\t0\t0\t99.5\t{wall - 0.5}\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "results": str(res), "gates": {"ess_min": 800},
        "experiments": {"cnn2": {"seeds": 4, "seeds_per_job": 2, "sampler": {
            "integrator": "baoab", "steps": 100, "schedule": {"lr": 0.002, "burn_in": 20}}}}}))
    return res, cfg


def test_collect_copies_tables_and_figures_and_writes_costs(tmp_path, capsys):
    res, cfg = _fake_run(tmp_path)
    out = tmp_path / "docs" / "results" / "run"
    rc = main(["collect", "--results", str(res), "--config", str(cfg), "--out", str(out),
               "--run-command", "snakemake fig3", "--note", "load average 1.0"])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["RUN.md", "fig3.csv", "fig3.png", "fig3_summary.rst", "jobs.csv"]
    assert (out / "fig3.csv").read_text() == (res / "tables" / "fig3.csv").read_text()
    with (out / "jobs.csv").open() as fh:
        jobs = list(csv.DictReader(fh))
    assert [(j["chunk"], float(j["wall_s"]), float(j["cpu_s"])) for j in jobs] == [
        ("0", 12.5, 12.0), ("1", 7.5, 7.0)]
    assert jobs[0]["integrator"] == "baoab" and jobs[0]["seeds"] == "2"
    run_md = (out / "RUN.md").read_text()
    assert "`snakemake fig3`" in run_md and "2 jobs, 0.3 min wall" in run_md
    assert "bulk ESS ≥ 800" in run_md and "- load average 1.0" in run_md


def test_collect_refuses_an_unfinished_run_in_one_line(tmp_path, capsys):
    res, cfg = _fake_run(tmp_path)
    for p in (res / "tables").iterdir():
        p.unlink()
    rc = main(["collect", "--results", str(res), "--config", str(cfg), "--out",
               str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--results" in err[0]
