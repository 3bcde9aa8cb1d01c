"""bench/published.py: the ablation-ordering check that bench/reproduce.py reports."""

import importlib.util
import json
from pathlib import Path

from published import ABLATIONS, ablation_order_violations


def _reproduce():
    """bench/reproduce.py as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("reproduce", Path(__file__).parents[1] / "bench" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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

    from published import TABLE2, views

    for (dataset, model) in TABLE2:
        if dataset == "beibei" and model in MODELS:
            assert views("beibei", model) != "unknown", model
    for (dataset, variant) in ABLATIONS:
        assert views(dataset, variant) not in ("", "unknown")
    assert views("beibei", "hpmr").startswith("yes") and views("beibei", "ghcf").startswith("no")


def test_reproduce_report_from_finished_and_unfinished_runs(tmp_path):
    """bench/reproduce.py's table: a finished run's test result, an unfinished run's best evaluation
    so far (HR and NDCG of the same epoch), published numbers, relative difference, the views column."""
    reproduce = _reproduce()
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
    assert rows["ghcf"] == ["paper", "0.2114", "0.1000", "0.1922", "0.1012", "+10.0%", "no: λ_view = 0",
                            "best epoch 70 of 120"]
    assert rows["nmtr"] == ["paper", "0.0500", "0.0300", "0.0524", "0.0285", "-4.6%", "yes: view → cart → buy cascade",
                            "unfinished: best so far at epoch 10 of 20"]
    assert rows["ehcf"][:5] == ["paper", "", "", "0.1551", "0.0831"] and rows["ehcf"][-1] == "not run"
    assert (tmp_path / "beibei-paper.csv").read_text().count("\n") == 4


def test_reproduce_report_on_taobao_mbcgcn_under_the_fixed_protocol(tmp_path):
    """A finished fixed run (tested once, at its last epoch) beside MuLe's table, a running fixed run
    (no evaluation before the end), and HPMR without views, which has no published row."""
    reproduce = _reproduce()
    out = tmp_path / "taobao_mbcgcn-fixed"
    (out / "hpmr").mkdir(parents=True)
    (out / "hpmr" / "results.json").write_text(json.dumps(
        {"best_epoch": 100, "epochs_run": 100, "selection": None,
         "results": {"test": {"hr@10": 0.1104 * 0.97, "ndcg@10": 0.0580}}}))
    (out / "lightgcn").mkdir()
    (out / "lightgcn" / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "loss": 1.0}) + "\n"
                                                             for e in (1, 2, 3)))
    (out / "hpmr" / "run.json").write_text(json.dumps({"train": {"epochs": 100}}))
    (out / "hpmr-wo-PTN").mkdir()
    (out / "hpmr-wo-PTN" / "run.json").write_text(json.dumps({"train": {"epochs": 100}}))
    (out / "hpmr-wo-PTN" / "results.json").write_text(json.dumps(
        {"best_epoch": 100, "epochs_run": 100, "selection": None,
         "results": {"test": {"hr@10": 0.09, "ndcg@10": 0.05}}}))
    todo = reproduce.variants(["hpmr", "lightgcn"], ablations=True, without_views=True)
    text = reproduce.report("taobao_mbcgcn", "fixed", todo, out)
    assert "view → cart → buy on the same files" in text and "fixed protocol" in text
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ")}
    assert rows["hpmr"] == ["fixed", "0.1071", "0.0580", "0.1104", "0.0599", "-3.0%", "yes: the same view file",
                            "epoch 100 of 100 (fixed budget)"]
    assert rows["lightgcn"][:5] == ["fixed", "", "", "0.0411", "0.0240"]
    assert rows["lightgcn"][-1] == "running: epoch 3, no test evaluation before the end"
    assert rows["hpmr without views"][:5] == ["fixed", "", "", "", ""]
    assert rows["hpmr without views"][-2] == "ours without the view behavior"
    # the ablation table: full HPMR is the fixed run itself (same budget), w/o PTN finished, the rest missing
    assert (rows["hpmr (full)"][:1] == ["0.1071"]
            and rows["hpmr (full)"][-1].startswith("the hpmr run, epoch 100 of 100"))
    assert rows["hpmr w/o PTN"][0] == "0.0900" and rows["hpmr w/o SIT"][-1] == "not run"
    assert "not checked: w/o URR, w/o URS, w/o SIT missing" in text


def test_overridden_runs_live_apart_from_the_default_ones():
    """A `--set` comparison must never report the finished default run as its own."""
    name = _reproduce().out_dir_name
    assert name("taobao_mbcgcn", "fixed", []) == "taobao_mbcgcn-fixed"
    a = name("taobao_mbcgcn", "fixed", ["models.lightgcn.init_std=0.01", "train.epochs=120"])
    assert a.startswith("taobao_mbcgcn-fixed-set-") and a != "taobao_mbcgcn-fixed"
    assert a == name("taobao_mbcgcn", "fixed", ["train.epochs=120", "models.lightgcn.init_std=0.01"])  # order-free
    assert a != name("taobao_mbcgcn", "fixed", ["models.lightgcn.init_std=0.01", "train.epochs=100"])
