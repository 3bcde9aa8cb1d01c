"""LightGCN per epoch: graphrec against PyTorch Geometric, side by side in one process.

    pip install -e '.[bench]'     # PyTorch Geometric: a peer for comparison, never a graphrec dependency
    python bench/pyg.py [--snapshot .graphrec/snapshots/beibei] [--epochs 3] [--threads 2]
                        [--variants graphrec,pyg-csr,pyg-edge-index] [--out bench/out/pyg.md]

The same snapshot, split, initial embeddings, hyperparameters (the data set's preset), batches
(graphrec's BPR sampler, one seeded stream per variant), loss (BPR + graphrec's L2 on the batch's
ego rows) and evaluation function (graphrec.evaluate.evaluate_full, every test user against all
items): only the propagation differs.

* graphrec: ``LightGCN`` (tiled CSR product with an explicit transpose, last layer for the batch).
* pyg-csr: ``torch_geometric.nn.models.LightGCN`` over graphrec's normalized adjacency as a torch
  CSR matrix (``normalize=False``): PyG's sparse-matrix path, torch's own sparse backward.
* pyg-edge-index: the same model over ``edge_index`` with PyG's gcn_norm (its example's path).

The variants run epoch by epoch in turn (variant order rotates each round), so background load
hits all alike; the table has the median epoch with min/max, the full-evaluation time and test
HR@10/NDCG@10 after the last epoch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from graphrec import snapshot as snap
from graphrec.config import load_config, model_params, preset_for, train_config
from graphrec.evaluate import evaluate_full
from graphrec.losses import bpr_loss, l2
from graphrec.malloc import keep_freed_memory
from graphrec.models import build_model, get_model
from graphrec.optimize import make_adam
from graphrec.progress import format_table
from graphrec.sampling import TrainData, pair_batches

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("graphrec", "pyg-csr", "pyg-edge-index")


class PyGLightGCN:
    """PyG's LightGCN holding the same initial embeddings, trained with the same loss."""

    def __init__(self, init: torch.Tensor, layers: int, adj, n_users: int, edge_index: bool):
        from torch_geometric.nn.models import LightGCN

        self.model = LightGCN(init.shape[0], init.shape[1], layers, normalize=edge_index)
        with torch.no_grad():
            self.model.embedding.weight.copy_(init)
        self.adj, self.n_users = adj, n_users

    def parameters(self):
        return self.model.parameters()

    def embeddings(self) -> torch.Tensor:
        return self.model.get_embedding(self.adj)

    def loss(self, u, pos, neg, reg: float) -> torch.Tensor:
        e, nu = self.embeddings(), self.n_users
        eu, ep, en = e[u], e[nu + pos], e[nu + neg]
        w = self.model.embedding.weight
        return bpr_loss((eu * ep).sum(-1), (eu * en).sum(-1)) + reg * l2(w[u], w[nu + pos], w[nu + neg]) / len(u)


def setup(snapshot: Path, variants: list[str]):
    s = snap.read(snapshot)
    cfg = load_config(preset_for(s.dataset), [])
    tc, params = train_config(cfg, "lightgcn"), model_params(cfg, "lightgcn")
    cls = get_model("lightgcn").cls
    data = TrainData.for_model(s, tc, cls, "cpu")
    graphs = data.graphs(cls.relations(data.meta), "cpu")
    torch.manual_seed(tc.seed)
    ours = build_model("lightgcn", params, data.meta)
    init = torch.cat([ours.user, ours.item]).detach().clone()
    adj = graphs[data.meta.target]
    models = {}
    for v in variants:
        if v == "graphrec":
            models[v] = ours
        elif v == "pyg-csr":
            models[v] = PyGLightGCN(init, params.layers, adj.matrix, data.meta.n_users, edge_index=False)
        elif v == "pyg-edge-index":
            m = adj.matrix
            rows = torch.repeat_interleave(torch.arange(m.shape[0]), m.crow_indices().diff().long())
            ei = torch.stack([m.col_indices().long(), rows])  # source -> target, both directions present
            models[v] = PyGLightGCN(init, params.layers, ei, data.meta.n_users, edge_index=True)
        else:
            raise SystemExit(f"unknown variant {v!r}; among: {', '.join(VARIANTS)}")
    return s, tc, params, data, graphs, models


def epoch(name: str, model, data, graphs, tc, params, opt, gen) -> float:
    t = data.meta.target
    u_all, i_all = data.edges[t]
    t0 = time.perf_counter()
    for u, pos, neg in pair_batches(u_all, i_all, data.meta.n_items, tc.batch_size, tc.drop_last, gen):
        if name == "graphrec":
            from graphrec.models.base import Batch

            loss, _ = model.loss(Batch(users=u, pos={t: pos}, neg={t: neg}), graphs)
        else:
            loss = model.loss(u, pos, neg, params.reg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def evaluate(name: str, model, data, graphs) -> tuple[float, dict]:
    test, exclude = data.eval_sets["test"]
    users = torch.nonzero(test.counts() > 0).flatten()
    t0 = time.perf_counter()
    with torch.no_grad():
        if name == "graphrec":
            model.eval()
            score = model.scorer(graphs)
        else:
            e = model.embeddings()
            eu, ei = e[:data.meta.n_users], e[data.meta.n_users:].T.contiguous()
            score = lambda us: eu[us] @ ei  # noqa: E731
        m = evaluate_full(score, users, test, exclude, data.meta.n_items, ks=(10,), batch_size=1024)
    return time.perf_counter() - t0, m


def main() -> None:
    keep_freed_memory()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshot", type=Path, default=ROOT / ".graphrec/snapshots/beibei")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/pyg.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import torch_geometric

    variants = args.variants.split(",")
    s, tc, params, data, graphs, models = setup(args.snapshot, variants)
    # Each side with its own optimizer: graphrec trains with torch's fused Adam (make_optimizer),
    # PyG's LightGCN example with torch.optim.Adam's default; the arithmetic is the same.
    opts = {v: make_adam(models[v].parameters(), tc.lr) if v == "graphrec" else
            torch.optim.Adam(models[v].parameters(), lr=tc.lr) for v in variants}
    gens = {v: torch.Generator().manual_seed(tc.seed) for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.epochs):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            if hasattr(models[v], "train"):
                models[v].train()
            times[v].append(epoch(v, models[v], data, graphs, tc, params, opts[v], gens[v]))
            print(f"epoch {r + 1} {v}: {times[v][-1]:.2f} s", flush=True)
    rows, base = [], statistics.median(times[variants[0]])
    for v in variants:
        eval_s, m = evaluate(v, models[v], data, graphs)
        med = statistics.median(times[v])
        rows.append([v, f"{med:.2f}", f"{min(times[v]):.2f}", f"{max(times[v]):.2f}", f"{med / base:.1f}x",
                     f"{eval_s:.2f}", f"{m['hr@10']:.4f}", f"{m['ndcg@10']:.4f}"])
    steps = -(-len(data.edges[data.meta.target][0]) // tc.batch_size)
    text = (f"LightGCN on {s.dataset} ({data.meta.n_users:,} users, {data.meta.n_items:,} items, {steps} steps of "
            f"{tc.batch_size} pairs per epoch, d={params.dim}, {params.layers} layers, Adam lr {tc.lr}); "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}, PyG {torch_geometric.__version__}; "
            f"{args.epochs} epochs per variant, alternating\n\n"
            + format_table(["variant", "median epoch s", "min", "max", f"vs {variants[0]}", "full eval s",
                            f"test HR@10 after {args.epochs}", "NDCG@10"], rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
