"""bench/gpu.py, the one-command GPU check, end to end through its CPU fallback on a tiny snapshot:
the bundle carries what the GPU machine needs, and the run prints one row per measured figure."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from test_models_contract import two_communities

from graphrec import snapshot as snap

ROOT = Path(__file__).resolve().parents[1]


def test_bundle_then_run_on_cpu(tmp_path):
    s = snap.write(two_communities(), tmp_path / "communities")
    bundle = tmp_path / "bundle"
    r = subprocess.run([sys.executable, str(ROOT / "bench/gpu.py"), "bundle", "--snapshots", str(s), "--out",
                        str(bundle), "--models", "hpmr,lightgcn", "--no-ranking"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    plan = json.loads((bundle / "plan.json").read_text())
    assert set(plan["datasets"]["communities"]["models"]) == {"hpmr", "lightgcn"}
    assert (bundle / plan["datasets"]["communities"]["snapshot"] / "manifest.json").is_file()
    # the run needs the repository on the path, not an installed graphrec (the GPU machine has none)
    r = subprocess.run([sys.executable, str(ROOT / "bench/gpu.py"), "run", "--bundle", str(bundle), "--device", "cpu",
                        "--epochs", "2", "--repeats", "1", "--out", str(tmp_path / "gpu.md")],
                       capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    table = (tmp_path / "gpu.md").read_text()
    assert "CUDA-marked tests" in table and "not run: no CUDA device" in table
    assert re.search(r"propagation fwd\+bwd \([\d,]+ nonzeros, d=64\)\s*\|\s*-\s*\|\s*[\d.]+ ms", table), table
    for model in ("hpmr", "lightgcn"):
        row = re.search(rf"{model} on communities \((\d+) steps/epoch, 16 test users\)\s*\|\s*([\d.]+) s\s*\|\s*"
                        rf"([\d.]+) s\s*\|\s*HR@10 ([\d.]+) after 2 epochs", table)
        assert row, table
        assert int(row[1]) >= 1 and float(row[2]) > 0 and float(row[3]) > 0 and 0 <= float(row[4]) <= 1
