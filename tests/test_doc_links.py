"""Citations of bench/ and studies/ resolve: every file named exists, and every section cited
by name after bench/RESULTS.md or studies/perf_history.md (the name in double quotes) is a
heading of that file (a heading that starts with the quoted words, as citations abbreviate).

studies/perf_history.md itself is the dated record, kept unchanged: the paths it names are
those of its time, so it is not scanned.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("bench/RESULTS.md", "studies/perf_history.md")
SOURCES = ["README.md", "Snakefile", "docs/**/*.md", "config/*.yaml", "src/**/*.py",
           "workflow/**/*.smk", "workflow/**/*.py", "workflow/**/*.rst", "bench/*.py",
           "bench/*.sh", "bench/*.md", "studies/**/*.md", "studies/**/*.py", "tests/*.py"]


def _sources() -> list[Path]:
    files = {p for pattern in SOURCES for p in ROOT.glob(pattern) if p.is_file()}
    files.discard(ROOT / "studies" / "perf_history.md")
    return sorted(files)


def _flat(text: str) -> str:
    """One line: comment markers at line starts (#, #:) and line breaks become one space."""
    return re.sub(r"\s*\n\s*(?:#:?\s*)?", " ", text)


def _headings(page: str) -> list[str]:
    return [line.lstrip("#").strip() for line in (ROOT / page).read_text().splitlines()
            if line.startswith("#")]


def test_every_cited_bench_or_studies_file_exists():
    missing = []
    for src in _sources():
        for m in re.finditer(r"(?<![\w/.])((?:bench|studies)/[\w./*{},-]*[\w/])",
                             src.read_text()):
            path = m.group(1)
            if "*" in path or "{" in path:  # a glob, e.g. fig5*.{csv,json,png}
                ok = any(ROOT.glob(path.split("{")[0].rstrip("*") + "*"))
            else:
                ok = (ROOT / path).exists()
            if not ok:
                missing.append(f"{src.relative_to(ROOT)}: {path}")
    assert not missing, missing


def test_every_cited_section_is_a_heading_of_its_page():
    heads = {page: _headings(page) for page in PAGES}
    cited, unknown = 0, []
    for src in _sources():
        text = _flat(src.read_text())
        for page in PAGES:
            for m in re.finditer(re.escape(page) + r',? "([^"]+)"', text):
                cited += 1
                name = m.group(1)
                if not any(h.startswith(name) for h in heads[page]):
                    unknown.append(f"{src.relative_to(ROOT)}: {page} \"{name}\"")
    assert cited > 20  # the scan sees the citations (about 40 when written)
    assert not unknown, unknown
