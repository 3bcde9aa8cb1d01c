"""Test HR@10 / NDCG@10 of a run's latest checkpoint, mid-run: where a `fixed` run stands before its
one test evaluation (a look on the way, never the protocol's figure).

    python bench/checkpoint_eval.py RUN_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from graphrec.evaluate import evaluate_split
from graphrec.runs import CHECKPOINT, load_weights, open_model


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    run = sys.argv[1]
    _, model, data, graphs = open_model(run, "cpu", weights=CHECKPOINT)
    epoch = json.loads(load_weights(Path(run), CHECKPOINT, "cpu")["state"])["epoch"]
    m = evaluate_split(model, graphs, data, "test", [10], 1024, torch.device("cpu"))
    print(json.dumps({"epoch": epoch, "hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"]}))


if __name__ == "__main__":
    main()
