"""Training data per protocol, resume, strict config, and the train/evaluate/recommend CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_snapshot
from test_models_contract import TINY_TRAIN, tiny_params, two_communities

from graphrec import cli
from graphrec import snapshot as snap
from graphrec.config import ConfigError, load_config, model_params, train_config
from graphrec.runs import RunBusy, TrainError, run_lock
from graphrec.sampling import TrainData
from graphrec.train import fit


def with_valid() -> snap.Snapshot:
    """tiny_snapshot plus a validation purchase (u1, i0) and the derived edge it leaves behind."""
    s = tiny_snapshot()
    return snap.build("tiny", s.behaviors, s.users.keys, s.items.keys, {
        "cart": {"user": [0, 0, 1, 1, 2, 2], "item": [0, 1, 0, 2, 0, 3]},
        "buy": {"user": [0, 0, 1, 1, 2], "item": [0, 1, 0, 2, 3], "split": [0, 2, 1, 0, 0]},
        "cart_not_buy": {"user": [0, 1, 2], "item": [1, 0, 0], "holdout": [2, 1, -1]},
    })


def test_protocols_decide_what_is_trained_on():
    s = with_valid()
    paper = TrainData.from_snapshot(s, "paper", ("cart", "buy", "cart_not_buy"))
    honest = TrainData.from_snapshot(s, "honest", ("cart", "buy", "cart_not_buy"))
    pairs = lambda d, r: sorted(zip(*(a.tolist() for a in d.edges[r])))  # noqa: E731
    # paper: the validation purchase is a training purchase, so its derived edge disappears
    assert pairs(paper, "buy") == [(0, 0), (1, 0), (1, 2), (2, 3)]
    assert pairs(paper, "cart_not_buy") == [(0, 1), (2, 0)]
    assert paper.selection == "test" and set(paper.eval_sets) == {"test"}
    # honest: it is held out, selection on it, and test excludes it from ranking too
    assert pairs(honest, "buy") == [(0, 0), (1, 2), (2, 3)]
    assert pairs(honest, "cart_not_buy") == [(0, 1), (1, 0), (2, 0)]
    assert honest.selection == "valid"
    # fixed: the training data of paper (every non-test purchase), no selection split at all
    fixed = TrainData.from_snapshot(s, "fixed", ("cart", "buy", "cart_not_buy"))
    assert all(pairs(fixed, r) == pairs(paper, r) for r in ("cart", "buy", "cart_not_buy"))
    assert fixed.selection is None and set(fixed.eval_sets) == {"test"}
    test, exclude = honest.eval_sets["test"]
    assert (test.indices.tolist() == [1]
            and sorted(exclude.indices[exclude.indptr[1]:exclude.indptr[2]].tolist()) == [0, 2])
    # positive lists per user, as (row in batch, item) pairs
    rows, items = paper.positives["buy"].rows(torch.tensor([2, 1]))
    assert rows.tolist() == [0, 1, 1] and items.tolist() == [3, 0, 2]
    assert honest.positives["buy"].counts().tolist() == [1, 1, 1]


def test_positive_lists_are_truncated_at_the_percentile():
    from graphrec.sampling import _truncated

    users = np.array([0] * 10 + [1, 2, 2])
    items = np.array(list(range(10)) + [3, 5, 4])
    lists = _truncated(users, items, 3, 50.0)  # lengths 10, 1, 2 -> median 2
    assert lists.rows(torch.tensor([0, 1, 2]))[1].tolist() == [0, 1, 3, 4, 5]


def test_honest_protocol_without_validation_purchases_says_what_to_do():
    with pytest.raises(TrainError, match="train.protocol=paper"):
        TrainData.from_snapshot(tiny_snapshot(), "honest", ("cart", "buy"))


def test_resume_continues_to_the_same_result(tmp_path):
    import dataclasses

    path = snap.write(two_communities(), tmp_path / "snap")
    tc = dataclasses.replace(TINY_TRAIN, epochs=8, eval_every=2, patience=100)
    full = fit("ghcf", tiny_params("ghcf"), tc, path, tmp_path / "full", device="cpu", log=None)
    # the same run stopped after epoch 4 (its last checkpoint), then resumed
    stop = dataclasses.replace(tc, epochs=4)
    fit("ghcf", tiny_params("ghcf"), stop, path, tmp_path / "part", device="cpu", log=None)
    resumed = fit("ghcf", tiny_params("ghcf"), tc, path, tmp_path / "part", device="cpu", resume=True, log=None)
    losses = lambda d: [json.loads(r)["loss"] for r in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    np.testing.assert_allclose(losses(tmp_path / "part"), losses(tmp_path / "full"), rtol=1e-6)
    assert resumed.epochs_run == full.epochs_run == 8
    with pytest.raises(TrainError, match="already holds a run; pass --resume"):
        fit("ghcf", tiny_params("ghcf"), tc, path, tmp_path / "full", device="cpu", log=None)
    with pytest.raises(TrainError, match="different model, params or snapshot"):
        fit("lightgcn", tiny_params("lightgcn"), tc, path, tmp_path / "full", device="cpu", resume=True, log=None)


def test_a_run_directory_is_trained_by_one_process_at_a_time(tmp_path):
    path = snap.write(two_communities(), tmp_path / "snap")
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom graphrec.runs import run_lock\n"
         "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusy, match="in use by another graphrec process"):
            fit("ghcf", tiny_params("ghcf"), TINY_TRAIN, path, run, device="cpu", log=None)
        assert not (run / "metrics.jsonl").exists()  # refused before it wrote anything
    finally:
        holder.kill()
        holder.wait()
    # a killed holder leaves no lock behind, and the lock is re-entrant within one process
    with run_lock(run):
        fit("ghcf", tiny_params("ghcf"), TINY_TRAIN, path, run, device="cpu", log=None)
    assert (run / "results.json").is_file()


def test_strict_model_config(tmp_path):
    cfg = load_config("configs/beibei.yaml", ["models.hpmr.layers=2"])
    assert model_params(cfg, "hpmr").layers == 2 and model_params(cfg, "hpmr").coefficient == (5 / 6, 1 / 6)
    assert train_config(cfg, "lightgcn").batch_size == 2048 and train_config(cfg, "hpmr").batch_size == 256
    with pytest.raises(ConfigError, match=r"models.hpmr: unknown key\(s\) 'layerz'; valid keys: dim, encoder"):
        model_params(load_config(None, ["models.hpmr.layerz=2"]), "hpmr")
    with pytest.raises(ConfigError, match="unknown model 'hprm'; among choices: .*hpmr"):
        model_params(load_config(None, ["models.hprm.layers=2"]), "hpmr")
    with pytest.raises(ConfigError, match="unknown encoder 'gccn'"):
        model_params(load_config(None, ["models.hpmr.encoder=gccn"]), "hpmr")
    with pytest.raises(ConfigError, match="train.metric must be"):
        load_config(None, ["train.metric=hr@20"])
    # every section is checked, whichever model is trained
    with pytest.raises(ConfigError, match=r"models.ghcf: unknown key\(s\) 'layrs'"):
        model_params(load_config(None, ["models.ghcf.layrs=2"]), "hpmr")
    with pytest.raises(ConfigError, match="model_train: unknown model 'lightgnc'"):
        train_config(load_config(None, ["model_train.lightgnc.lr=0.1"]), "hpmr")
    with pytest.raises(ConfigError, match=r"model_train.ehcf: unknown key\(s\) 'lrr'"):
        train_config(load_config(None, ["model_train.ehcf.lrr=0.1"]), "hpmr")


def test_a_runs_record_is_read_strictly():
    from graphrec.runs import RunNotFound, params_from_dict

    assert params_from_dict("ghcf", {"layers": 2, "coefficient": [0.5, 0.5]}).coefficient == (0.5, 0.5)
    with pytest.raises(RunNotFound, match="unknown key.*'layerz'.*another graphrec version"):
        params_from_dict("ghcf", {"layerz": 2})


def test_cli_train_evaluate_recommend(tmp_path, capsys):
    path = snap.write(two_communities(), tmp_path / "snap")
    run = tmp_path / "run"
    rc = cli.main(["train", "--model", "lightgcn_m", "--snapshot", str(path), "--run", str(run), "--device", "cpu",
                   "--set", "train.protocol=paper", "--set", "train.epochs=4", "--set", "train.eval_every=2",
                   "--set", "models.lightgcn_m.coefficient=[0.5,0.5]", "--set", "models.lightgcn_m.dim=4"])
    assert rc == 0
    for name in ("run.json", "metrics.jsonl", "checkpoint.pt", "best.pt", "results.md", "results.json", "curve.png"):
        assert (run / name).is_file(), name
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4
    capsys.readouterr()
    assert cli.main(["evaluate", "--run", str(run), "--ks", "1,5", "--sampled", "--negatives", "3",
                     "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "1 + 3 sampled" in out and "hr@5" in out
    assert cli.main(["recommend", "--run", str(run), "--user", "0", "-k", "2", "--device", "cpu"]) == 0
    rows = [r.split("|")[1:-1] for r in capsys.readouterr().out.splitlines()[2:]]
    assert [(u.strip(), rank.strip()) for u, rank, _, _ in rows] == [("0", "1"), ("0", "2")]
    scores = [float(sc) for *_, sc in rows]
    assert scores == sorted(scores, reverse=True)
    assert cli.main(["recommend", "--run", str(run), "--user", "nobody", "--device", "cpu"]) == cli.EXIT_INPUT
    assert "unknown user 'nobody'" in capsys.readouterr().err
    assert cli.main(["train", "--model", "nope", "--snapshot", str(path)]) == cli.EXIT_INPUT
    assert "unknown model 'nope'; among choices:" in capsys.readouterr().err
    assert cli.main(["evaluate", "--run", str(tmp_path)]) == cli.EXIT_INPUT  # a wrong --run is bad input
    assert "is not a run directory" in capsys.readouterr().err


def test_weights_are_written_atomically_hashed_and_checked_on_load(tmp_path, capsys):
    """best.pt and checkpoint.pt arrive by rename with their SHA-256 in run.json; a flipped byte, a
    truncated or empty file, and a run.json of the wrong shape are refused with exit 2, never used."""
    import dataclasses
    import shutil

    from graphrec.runs import CheckpointError, open_model, sha256

    path = snap.write(two_communities(), tmp_path / "snap")
    tc = dataclasses.replace(TINY_TRAIN, epochs=2, eval_every=1, patience=100)
    run = tmp_path / "run"
    fit("ghcf", tiny_params("ghcf"), tc, path, run, device="cpu", log=None)
    files = json.loads((run / "run.json").read_text())["files"]
    assert files == {"best.pt": sha256(run / "best.pt"), "checkpoint.pt": sha256(run / "checkpoint.pt")}
    assert not list(run.glob(".*.tmp"))
    open_model(run)  # intact: loads
    good = (run / "best.pt").read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    (run / "best.pt").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=rf"best.pt is damaged: SHA-256 \w+, run.json records {files['best.pt']}"):
        open_model(run)
    capsys.readouterr()
    assert cli.main(["evaluate", "--run", str(run)]) == cli.EXIT_INPUT
    assert "is damaged" in capsys.readouterr().err
    # a file with no recorded hash (a run from before hashes) is still checked for being loadable
    info = json.loads((run / "run.json").read_text())
    info["files"] = {}
    (run / "run.json").write_text(json.dumps(info))
    for broken in (good[: len(good) // 3], b""):
        (run / "best.pt").write_bytes(broken)
        with pytest.raises(CheckpointError, match="cannot be read"):
            open_model(run)
    (run / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="checkpoint.pt cannot be read"):
        fit("ghcf", tiny_params("ghcf"), dataclasses.replace(tc, epochs=3), path, run, device="cpu", resume=True,
            log=None)
    # run.json that is JSON of another shape
    other = tmp_path / "other"
    shutil.copytree(run, other)
    for text in ("[1, 2]", '{"model": "ghcf"}', "{not json"):
        (other / "run.json").write_text(text)
        assert cli.main(["evaluate", "--run", str(other)]) == cli.EXIT_INPUT
        assert "train a new run" in capsys.readouterr().err


def test_snapshot_rewrite_swaps_in_one_step_and_cleans_stale_temporaries(tmp_path, monkeypatch):
    out = snap.write(two_communities(), tmp_path / "snap")
    stale = tmp_path / ".snap.killed-write"
    stale.mkdir()
    swaps = []
    real = snap.exchange
    monkeypatch.setattr(snap, "exchange", lambda a, b: swaps.append((a, b)) or real(a, b))
    snap.write(two_communities(), out)
    assert swaps and swaps[0][1] == out and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"]  # no temporary or old copy is left
    assert snap.read(out).n_users == two_communities().n_users
