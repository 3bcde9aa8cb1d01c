"""bench/knobs.py: each knob's runs set what they name, and a finished run is read back, not retrained."""

import json

from conftest import tiny_snapshot
from knobs import knob_table

from graphrec import snapshot as snap


def test_layers_knob_sets_the_models_layers_and_reuses_finished_runs(tmp_path):
    s = snap.write(tiny_snapshot(), tmp_path / "tiny")
    out = tmp_path / "knobs"
    text = knob_table(str(s), "lightgcn", "layers", [1, 2], 2, 1, out)
    for value in (1, 2):
        run = json.loads((out / f"lightgcn-layers{value}" / "run.json").read_text())
        assert run["params"]["layers"] == value and run["train"]["epochs"] == 2
    rows = [[c.strip() for c in ln.split("|")[1:-1]] for ln in text.splitlines() if ln.startswith("|")][2:]
    assert [r[0] for r in rows] == ["1", "2"] and rows[0][1] == rows[1][1]  # the same steps per epoch
    (out / "lightgcn-layers1" / "knob.json").write_text(json.dumps(
        {"value": 1, "steps": 99, "epoch_s": 1.0, "epoch_min": 1.0, "epoch_max": 1.0, "hr@10": 0.5,
         "ndcg@10": 0.25, "peak_rss_mib": 1024}) + "\n")
    again = knob_table(str(s), "lightgcn", "layers", [1], 2, 1, out)
    cells = [c.strip() for c in again.splitlines()[-1].split("|")[1:-1]]
    assert cells[1] == "99" and cells[4] == "0.5000"
