"""Two gloo processes under torchrun against one process: the same losses, evaluations and results
(same global batch), a distributed run resumed from its checkpoint, and the sharding arithmetic."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from test_models_contract import TINY_PARAMS, two_communities

from graphrec import distributed
from graphrec import snapshot as snap
from graphrec.models.base import Batch

# 16 users, batch 8: two steps per epoch, each split 4 + 4 between the processes
TRAIN = dict(protocol="paper", epochs=6, batch_size=8, lr=0.02, eval_every=2, patience=50, seed=7, drop_last=False)
# the contract suite's tiny settings with dropout off: the processes then see exactly one process's step
PARAMS = {**TINY_PARAMS, "ehcf": {**TINY_PARAMS["ehcf"], "user_dropout": 0.0}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    path = snap.write(two_communities(), root / "snap")
    cfg = root / "tiny.yaml"
    models = {name: {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()} for name, p in PARAMS.items()}
    cfg.write_text(yaml.safe_dump({"train": TRAIN, "models": models, "model_train": {"lightgcn": {"batch_size": 16},
                                                                                     "nmtr": {"batch_size": 16}}}))
    return root, path, cfg


def train(setup, model: str, run: str, procs: int, *extra: str) -> subprocess.CompletedProcess:
    root, path, cfg = setup
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    cli = ["-m", "graphrec.cli", "train", "--model", model, "--snapshot", str(path), "--config", str(cfg),
           "--run-dir", str(root / run), "--threads", "1", "--device", "cpu", *extra]
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
              if procs > 1 else [sys.executable])
    return subprocess.run(launch + cli, capture_output=True, text=True, env=env, timeout=300)


def rows(setup, run: str) -> list[dict]:
    return [json.loads(r) for r in (setup[0] / run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("model", ["hpmr", "ghcf", "ehcf", "lightgcn", "nmtr"])
def test_two_processes_follow_one_process(setup, model):
    one, two = train(setup, model, f"{model}-1", 1), train(setup, model, f"{model}-2", 2)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    assert "2 processes" in two.stderr
    a, b = rows(setup, f"{model}-1"), rows(setup, f"{model}-2")
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == list(range(1, 7))
    for ra, rb in zip(a, b):
        for k in ra:
            if k in ("epoch_seconds", "eval_seconds", "split", "users"):
                continue
            assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-6), (model, ra["epoch"], k)
    assert [r.get("users") for r in a] == [r.get("users") for r in b]  # every test user, once
    ra = json.loads((setup[0] / f"{model}-1" / "results.json").read_text())["results"]["test"]
    rb = json.loads((setup[0] / f"{model}-2" / "results.json").read_text())["results"]["test"]
    assert rb["hr@10"] == pytest.approx(ra["hr@10"]) and rb["ndcg@10"] == pytest.approx(ra["ndcg@10"], rel=1e-5)
    # the weights end up where one process puts them
    wa = torch.load(setup[0] / f"{model}-1" / "best.pt", weights_only=True)["model"]
    wb = torch.load(setup[0] / f"{model}-2" / "best.pt", weights_only=True)["model"]
    for k in wa:
        np.testing.assert_allclose(wb[k].numpy(), wa[k].numpy(), rtol=1e-3, atol=1e-5, err_msg=k)


def test_a_distributed_run_resumes_to_the_uninterrupted_result(setup):
    full = train(setup, "hpmr", "hpmr-full", 2)
    assert full.returncode == 0, full.stderr[-2000:]
    part = train(setup, "hpmr", "hpmr-part", 2, "--set", "train.epochs=4")
    assert part.returncode == 0, part.stderr[-2000:]
    resumed = train(setup, "hpmr", "hpmr-part", 2, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr
    losses = lambda run: [r["loss"] for r in rows(setup, run)]  # noqa: E731
    np.testing.assert_allclose(losses("hpmr-part"), losses("hpmr-full"), rtol=1e-6)


def test_shards_cover_the_step_once_and_weigh_means_by_their_share():
    users = torch.arange(10, 17)  # 7 users: shares of 3 and 4
    rows_, items = torch.tensor([0, 0, 2, 3, 5, 6, 6]), torch.tensor([1, 2, 3, 4, 5, 6, 7])
    batch = Batch(users=users, positives={"buy": (rows_, items)})
    parts = [distributed.shard(batch, "users", "buy", distributed.Context(r, 2))[0] for r in range(2)]
    assert [p.users.tolist() for p in parts] == [[10, 11, 12], [13, 14, 15, 16]]
    assert [p.ranks for p in parts] == [2, 2]
    back = [(p.users[r].item(), i.item()) for p in parts for r, i in zip(*p.positives["buy"])]
    assert back == [(users[r].item(), i.item()) for r, i in zip(rows_, items)]
    pairs = Batch(users=users, pos={"buy": users + 1}, neg={"buy": users + 2})
    shares = [distributed.shard(pairs, "pairs", "buy", distributed.Context(r, 2)) for r in range(2)]
    assert [w for _, w in shares] == pytest.approx([2 * 3 / 7, 2 * 4 / 7])
    assert [s.pos["buy"].tolist() for s, _ in shares] == [[11, 12, 13], [14, 15, 16, 17]]


def test_environment_is_read_strictly():
    assert distributed.from_env({}) == distributed.Context()
    assert distributed.from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}) == distributed.Context(1, 2, 1)
    with pytest.raises(ValueError, match="RANK 2 is outside WORLD_SIZE 2"):
        distributed.from_env({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(ValueError, match="must be integers"):
        distributed.from_env({"WORLD_SIZE": "two"})
