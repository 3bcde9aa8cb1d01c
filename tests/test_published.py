"""graphrec.published: the ablation-ordering check that bench/reproduce.py reports."""

from graphrec.published import ABLATIONS, ablation_order_violations


def test_published_table4_satisfies_its_own_ordering():
    for dataset, full in (("beibei", 0.2375), ("taobao", 0.0948)):
        hr = {"full": full} | {v: x for (d, v), x in ABLATIONS.items() if d == dataset}
        assert ablation_order_violations(hr) == []


def test_violations_name_the_broken_pairs_and_skip_missing_variants():
    hr = {"full": 0.20, "w/o URR": 0.21, "w/o URS": 0.19, "w/o SIT": 0.18, "w/o PTN": 0.185}
    assert ablation_order_violations(hr) == ["full 0.2000 <= w/o URR 0.2100", "w/o SIT 0.1800 <= w/o PTN 0.1850"]
    assert ablation_order_violations({"full": 0.2, "w/o PTN": 0.3}) == []  # no pair has both ends
    assert ablation_order_violations({"w/o URS": 0.2, "w/o PTN": 0.2}) == ["w/o URS 0.2000 <= w/o PTN 0.2000"]


def test_every_beibei_comparison_says_what_views_did():
    from graphrec.models import MODELS
    from graphrec.published import TABLE2, views

    for (dataset, model) in TABLE2:
        if dataset == "beibei" and model in MODELS:
            assert views("beibei", model) != "unknown", model
    for (dataset, variant) in ABLATIONS:
        assert views(dataset, variant) not in ("", "unknown")
    assert views("beibei", "hpmr").startswith("yes") and views("beibei", "ghcf").startswith("no")


def test_reproduce_report_from_finished_and_unfinished_runs(tmp_path):
    """bench/reproduce.py's table: a finished run's test result, an unfinished run's best evaluation
    so far (HR and NDCG of the same epoch), published numbers, relative difference, the views column."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("reproduce", Path(__file__).parents[1] / "bench" / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    out = tmp_path / "beibei-paper"
    (out / "ghcf").mkdir(parents=True)
    (out / "ghcf" / "results.json").write_text(json.dumps(
        {"best_epoch": 70, "epochs_run": 120, "results": {"test": {"hr@10": 0.1922 * 1.1, "ndcg@10": 0.1}}}))
    (out / "nmtr").mkdir()
    (out / "nmtr" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"epoch": 10, "loss": 1.0, "split": "test", "hr@10": 0.05, "ndcg@10": 0.03},
        {"epoch": 11, "loss": 0.9},
        {"epoch": 20, "loss": 0.8, "split": "test", "hr@10": 0.04, "ndcg@10": 0.02}]))
    text = reproduce.report("beibei", "paper", [("ghcf", "ghcf", {}), ("nmtr", "nmtr", {}), ("ehcf", "ehcf", {})],
                            out)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ")}
    assert rows["ghcf"] == ["0.2114", "0.1000", "0.1922", "0.1012", "+10.0%", "no: λ_view = 0", "best epoch 70 of 120"]
    assert rows["nmtr"] == ["0.0500", "0.0300", "0.0524", "0.0285", "-4.6%", "yes: view → cart → buy cascade",
                            "unfinished: best so far at epoch 10 of 20"]
    assert rows["ehcf"][:4] == ["", "", "0.1551", "0.0831"] and rows["ehcf"][-1] == "not run"
    assert (tmp_path / "beibei-paper.csv").read_text().count("\n") == 4
