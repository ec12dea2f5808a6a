"""The package as a whole: float64 and the BLAS thread limit (fleos/__init__.py), and the
direction of its imports (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import jax
import pytest
import threadpoolctl

import fleos


def test_float64_is_enabled():
    assert jax.config.jax_enable_x64


def test_limit_blas_threads_sets_every_blas_pool():
    fleos.limit_blas_threads(1)
    pools = [d for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"]
    assert pools and all(d["num_threads"] == 1 for d in pools)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        fleos.limit_blas_threads(0)


def test_the_variable_sets_the_limit_at_import_and_a_bad_value_is_named():
    code = ("import fleos, threadpoolctl; "
            "print(max(d['num_threads'] for d in threadpoolctl.threadpool_info()))")
    env_bad = {"FLEOS_BLAS_THREADS": "two", "PATH": ""}
    bad = subprocess.run([sys.executable, "-c", code], env=env_bad, capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "FLEOS_BLAS_THREADS" in bad.stderr and "'two'" in bad.stderr
    one = subprocess.run([sys.executable, "-c", code], env={"FLEOS_BLAS_THREADS": "1"},
                         capture_output=True, text=True, check=True)
    assert one.stdout.strip() == "1"


# ---------------------------------------------------------------------------------------------
# Import direction (docs/architecture.md, "Import direction"): a layer imports only layers
# below it or its own; no module imports itself back through others, lazy imports included.
# ---------------------------------------------------------------------------------------------

# Lowest first. Units in one tier may import each other's modules, but never in a circle,
# and never across a pair of `APART`.
TIERS: tuple[tuple[str, ...], ...] = (
    ("fleos",),  # the package's __init__: float64 and the BLAS thread limit
    ("core",),
    ("nets",),
    ("config",),  # the typed config; the engines above read it
    ("sampling", "theory"),
    ("analysis", "figures"),
    ("pipeline", "cli"),
)
# (importer, imported) units that must not meet although the tiers allow it: the theory knows
# no sampler, and the figures only read files (aggregates through fleos.analysis, JSON through
# fleos.core.files), so they know neither the sampler nor the theory.
APART: tuple[tuple[str, str], ...] = (
    ("theory", "sampling"),
    ("figures", "sampling"),
    ("figures", "theory"),
)
SRC = Path(__file__).resolve().parents[1] / "src"


def _modules(src: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module of `package` under `src`."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports anywhere in its body (ast, not executed).
    ``from a import b`` counts as importing ``a.b`` when that is a module, else ``a``."""
    mods = _modules(src, package)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = name.split(".")[: len(name.split(".")) - node.level + is_pkg]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in mods and t != name}
        graph[name] = deps
    return graph


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layering_errors(graph: dict[str, set[str]], tiers=TIERS, apart=APART) -> list[str]:
    """Upward imports, imports between units kept apart, modules outside every tier, and
    import circles, one line each."""
    rank = {unit: i for i, tier in enumerate(tiers) for unit in tier}
    errors = [f"{m} is in no tier of TIERS" for m in graph if _unit(m) not in rank]
    for m, deps in sorted(graph.items()):
        for d in sorted(deps):
            if _unit(m) in rank and _unit(d) in rank and rank[_unit(d)] > rank[_unit(m)]:
                errors.append(f"{m} imports {d}: upward ({_unit(m)} below {_unit(d)})")
            if (_unit(m), _unit(d)) in apart:
                errors.append(f"{m} imports {d}: {_unit(m)} must not import {_unit(d)}")
    # A circle: depth-first search for a back edge.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                errors.append("import circle: " + " -> ".join([*stack[stack.index(d):], d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return errors


def test_imports_point_downward_and_never_in_a_circle():
    graph = import_graph(SRC, "fleos")
    assert len(graph) > 30 and graph["fleos.pipeline"]  # the walk found the package
    assert layering_errors(graph) == []


def test_the_layering_check_catches_an_upward_import_and_a_circle(tmp_path):
    files = {
        "pkg/__init__.py": "",
        "pkg/core/__init__.py": "",
        "pkg/core/a.py": "def f():\n    from pkg.pipeline import g  # lazy, still counted\n",
        "pkg/nets/__init__.py": "",
        "pkg/nets/m.py": "from . import d\n",
        "pkg/nets/d.py": "from pkg.nets import m\n",
        "pkg/pipeline.py": "import pkg.core.a\n",
        "pkg/extra.py": "",
        "pkg/theory/__init__.py": "",
        "pkg/theory/runs.py": "def w():\n    from pkg.sampling.io import atomic_path\n",
        "pkg/sampling/__init__.py": "",
        "pkg/sampling/io.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.core.a"] == {"pkg.pipeline"}
    assert graph["pkg.nets.m"] == {"pkg.nets.d"}
    errors = layering_errors(graph, tiers=(("pkg",), ("core",), ("nets",),
                                           ("sampling", "theory"), ("pipeline",)),
                             apart=(("theory", "sampling"),))
    assert "pkg.extra is in no tier of TIERS" in errors
    assert "pkg.core.a imports pkg.pipeline: upward (core below pipeline)" in errors
    assert "import circle: pkg.nets.d -> pkg.nets.m -> pkg.nets.d" in errors
    assert "import circle: pkg.core.a -> pkg.pipeline -> pkg.core.a" in errors
    assert ("pkg.theory.runs imports pkg.sampling.io: theory must not import sampling"
            in errors)
    assert not [e for e in errors if e.startswith("pkg.sampling")]  # the other way is allowed
