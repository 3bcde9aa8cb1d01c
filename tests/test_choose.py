"""bench/choose.py: the recorded accuracy figures and the "Which model should I use?" table."""

from pathlib import Path

import pytest

from choose import FLOOR, read_accuracy, table

ROOT = Path(__file__).resolve().parents[1]


def test_recorded_figures_name_registered_models_and_presets():
    from graphrec.models import MODELS

    acc = read_accuracy(ROOT / "docs" / "accuracy.csv")
    assert acc[("taobao_mbcgcn", "histgcn")]["seeds"] == 3
    for (dataset, model), row in acc.items():
        assert model in MODELS or model == FLOOR, model
        assert (ROOT / "configs" / f"{dataset}.yaml").is_file(), dataset
        assert 0 < row["ndcg@10"] <= row["hr@10"] < 1, (dataset, model)
        assert row["protocol"] in ("paper", "honest", "fixed")


def test_a_second_row_for_one_model_is_refused_with_its_line(tmp_path):
    f = tmp_path / "acc.csv"
    f.write_text("dataset,protocol,model,hr@10,ndcg@10,seeds,run\n"
                 "beibei,paper,hpmr,0.2,0.1,1,a\nbeibei,honest,hpmr,0.21,0.11,1,b\n")
    with pytest.raises(SystemExit, match=r"line 3: a second row for hpmr on beibei"):
        read_accuracy(f)
    f.write_text("dataset,protocol,model,hr@10,ndcg@10,seeds,run\nbeibei,paper,hpmr,high,0.1,1,a\n")
    with pytest.raises(SystemExit, match=r"line 2: .*'high'"):
        read_accuracy(f)


def test_table_ranks_by_hr_and_shows_untrained_models_by_cost():
    acc = {("d", "a"): {"protocol": "fixed", "hr@10": 0.1, "ndcg@10": 0.05, "seeds": 1},
           ("d", "b"): {"protocol": "fixed", "hr@10": 0.3, "ndcg@10": 0.15, "seeds": 3},
           ("d", FLOOR): {"protocol": "fixed", "hr@10": 0.2, "ndcg@10": 0.1, "seeds": 0}}
    cost = {f"d/{m}": {"epoch_s": s, "steps_per_epoch": 10, "eval_s": 0.5, "peak_rss_mib": 1024}
            for m, s in (("a", 2.0), ("b", 4.0), ("c", 60.0))}
    lines = [ln for ln in table(["d"], ["a", "b", "c"], cost, acc).splitlines() if ln.startswith("| d ")]
    assert [ln.split("|")[2].strip() for ln in lines] == ["b", FLOOR, "a", "c"]
    assert "no figure yet" in lines[-1] and "60.0" in lines[-1]
    cells = [c.strip() for c in lines[0].split("|")[1:-1]]
    assert cells[3:] == ["0.3000", "0.1500", "3", "4.0", "10", "0.50", "1.00"]


def test_the_committed_costs_rebuild_the_table_in_the_results_page():
    """docs/costs.json + docs/accuracy.csv give exactly the table docs/results.md shows, so the page
    cannot drift from the figures `bench/choose.py --report-only` reads."""
    import json

    from choose import DATASETS, MODELS

    cost = json.loads((ROOT / "docs" / "costs.json").read_text())
    for key, c in cost.items():
        assert {"epoch_s", "steps_per_epoch", "eval_s", "peak_rss_mib", "device", "measured"} <= c.keys(), key
    acc = read_accuracy(ROOT / "docs" / "accuracy.csv")
    assert all(f"{d}/{m}" in cost for d, m in acc if m != FLOOR), "a recorded figure without a cost"
    page = (ROOT / "docs" / "results.md").read_text()
    section = page[page.index("## Which model should I use?"):]
    shown = [ln for ln in section.splitlines() if ln.startswith("|")]
    built = table(DATASETS.split(","), MODELS.split(","), cost, acc).splitlines()
    assert shown[:len(built)] == built
