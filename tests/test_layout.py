"""The house rules as tests: no module shadows the standard library, the CLI runs as a script,
and the recall models import neither the ranking stage nor config, Neo4j or the training loop
(../shared/DESIGN.md: models never read config, Neo4j or devices)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (ROOT / "graphrec", ROOT / "ingest")


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in pkg.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_module_shadows_the_standard_library():
    stdlib = sys.stdlib_module_names
    shadows = [p for p in _modules() if p.stem in stdlib and p.stem != "__init__"]
    assert not shadows, shadows


def test_the_cli_runs_as_a_script():
    r = subprocess.run([sys.executable, str(ROOT / "graphrec" / "cli.py"), "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("usage: graphrec"), r.stderr[-2000:]


def test_recall_models_import_no_ranking_config_neo4j_or_training():
    forbidden = ("graphrec.ranking", "graphrec.config", "graphrec.neo4j", "neo4j",
                 "graphrec.train", "graphrec.cli", "graphrec.ingest")
    models = [p for p in (ROOT / "graphrec" / "models").glob("*.py") if p.name != "__init__.py"]
    assert len(models) >= 7
    for path in models:
        bad = sorted(m for m in _imports(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
        assert not bad, (path.name, bad)


def test_the_data_set_probe_needs_only_the_standard_library():
    """`make demo` runs graphrec.datasets before anything is installed."""
    allowed = set(sys.stdlib_module_names) | {"graphrec", "graphrec.errors", "__future__"}
    lazy = {"pooch", "requests"}  # imported inside the download function only
    top = set()
    for node in ast.parse((ROOT / "graphrec" / "datasets.py").read_text()).body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.add(node.module if node.module.startswith("graphrec") else node.module.split(".")[0])
    assert top <= allowed and not (top & lazy), top - allowed


def test_the_ranking_stage_and_serving_do_not_import_the_training_loop():
    """Run records, sampling and optimizers live in runs.py, sampling.py and optimize.py, which the
    recall loop (train.py), the ranking stage and serving share; none of the latter import train.py."""
    users = [*(ROOT / "graphrec" / "ranking").glob("*.py"), ROOT / "graphrec" / "recommend.py",
             ROOT / "graphrec" / "runs.py", ROOT / "graphrec" / "sampling.py", ROOT / "graphrec" / "optimize.py"]
    for path in users:
        lazy = {n.module for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.ImportFrom) and n.module}
        assert "graphrec.train" not in _imports(path) | lazy, path.name


def test_one_registry_per_stage():
    from graphrec.models import MODELS, all_models
    from graphrec.ranking.registry import RANKERS

    assert {e.stage for e in MODELS.values()} == {"recall"} and {e.stage for e in RANKERS.values()} == {"ranking"}
    assert set(all_models()) == set(MODELS) | set(RANKERS) and not set(MODELS) & set(RANKERS)
    top = [n for n in ast.parse((ROOT / "graphrec" / "models" / "__init__.py").read_text()).body
           if isinstance(n, ast.ImportFrom)]
    assert not [n.module for n in top if n.module.startswith("graphrec.ranking")]  # only on use, in all_models


def test_ingest_installs_as_graphrec_ingest_and_nothing_else_at_top_level(tmp_path):
    """pyproject's package list is the tree's packages, and outside the checkout `ingest` is not importable."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    tree = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "graphrec").rglob("__init__.py")}
    assert set(cfg["packages"]) == tree | {"graphrec.ingest"} and cfg["package-dir"] == {"graphrec.ingest": "ingest"}
    probe = ("import importlib.util, graphrec.ingest.readers, graphrec.ingest.pipeline; "
             "print(importlib.util.find_spec('ingest'))")
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "None", r.stderr[-2000:]


def test_the_cli_parses_calls_and_prints():
    """Library work (metrics, sparsity groups, reading logs, arrays) lives in the library; cli.py
    imports none of it."""
    forbidden = ("numpy", "pandas", "graphrec.evaluate", "graphrec.sparsity", "graphrec.ingest.readers")
    used = _imports(ROOT / "graphrec" / "cli.py")
    assert not [m for m in used if any(m == f or m.startswith(f + ".") for f in forbidden)], used


def test_benchmarks_use_the_installed_package_and_its_public_names():
    for path in (ROOT / "bench").glob("*.py"):
        text = path.read_text()
        assert "sys.path" not in text, path.name
        private = [(n.module, a.name) for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ImportFrom)
                   and (n.module or "").startswith("graphrec") for a in n.names if a.name.startswith("_")]
        assert not private, (path.name, private)
