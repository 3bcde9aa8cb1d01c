"""Memory bounded by the graph and the embeddings: training and full evaluation on 10^5 users ×
10^5 items inside an address-space limit that one (users × items) tensor (10 GB as bytes, 40 GB as
float32) cannot fit in."""

import json
import resource
import subprocess
import sys

import numpy as np
import pytest
import yaml

from graphrec import snapshot as snap
from graphrec.ingest import bulk
from graphrec.schema import Behaviors

N = 100_000
#: Address space for the whole process (torch alone maps ~3 GiB of it at import).
LIMIT = 8 << 30
# one step of every user (a few for the pair models); under `fixed` the test split is evaluated once, at the end
TRAIN = dict(protocol="fixed", epochs=1, batch_size=N, lr=0.001, eval_every=1, patience=5, seed=3)


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, preexec_fn=_limited, timeout=600)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """10^5 users × 10^5 items, cart → buy: three carts and two purchases per user; 2,000 users have a
    test purchase (evaluation still ranks each of them against all 10^5 items)."""
    root = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(5)
    users = np.repeat(np.arange(N), 5)
    items = (users * 7 + rng.integers(0, N, users.size)) % N
    pairs = np.unique(np.stack([users, items], 1), axis=0)
    cart, buy = pairs[::2], pairs[1::2]
    split = np.zeros(len(buy), np.int8)
    first = np.flatnonzero(np.r_[True, buy[1:, 0] != buy[:-1, 0]])
    split[first[buy[first, 0] < 2000]] = snap.SPLIT_CODES["test"]
    behaviors = Behaviors(("cart", "buy"))
    train = buy[split == snap.SPLIT_CODES["train"]]
    keep = bulk.derive(cart[:, 0], cart[:, 1], train[:, 0], train[:, 1], N)
    s = snap.build("wide", behaviors, [str(k) for k in range(N)], [str(k) for k in range(N)], {
        "cart": {"user": cart[:, 0], "item": cart[:, 1]},
        "buy": {"user": buy[:, 0], "item": buy[:, 1], "split": split},
        "cart_not_buy": {"user": cart[keep, 0], "item": cart[keep, 1],
                         "holdout": np.full(int(keep.sum()), snap.NO_HOLDOUT, np.int8)}})
    path = snap.write(s, root / "snap")
    cfg = root / "wide.yaml"
    cfg.write_text(yaml.safe_dump({"train": TRAIN}))
    return root, path, cfg


def test_the_limit_refuses_one_users_by_items_tensor():
    for dtype in ("uint8", "float32"):
        r = _run("-c", f"import torch; torch.zeros({N}, {N}, dtype=torch.{dtype})")
        assert r.returncode != 0 and "alloc" in r.stderr.lower(), (dtype, r.stderr[-500:])


@pytest.mark.parametrize("model", ["hpmr", "lightgcn", "ehcf", "nmtr"])
def test_training_and_full_evaluation_fit_under_the_limit(wide, model):
    root, path, cfg = wide
    r = _run("-m", "graphrec.cli", "train", "--model", model, "--snapshot", str(path), "--config", str(cfg),
             "--run", str(root / model), "--threads", "1", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    test = json.loads((root / model / "results.json").read_text())["results"]["test"]
    assert test["users"] == 2000 and 0 <= test["hr@10"] <= 1  # every test user ranked against all 10^5 items
