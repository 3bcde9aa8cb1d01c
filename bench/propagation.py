"""One propagation Y = Â E over a Beibei-view-sized bipartite graph: forward + backward per method.

    python bench/propagation.py [--dim 64] [--device cpu|cuda|auto] [--repeats 7] [--threads N] [--json PATH]

It needs torch and numpy only; where graphrec is not installed (the GPU machine), run it from the
checkout as `PYTHONPATH=. python bench/propagation.py --device cuda`.

Workload: the real Beibei view graph when ../shared/data/beibei/pv.txt exists (one line per user:
`uid item item ...`), else seeded unique random edges of the same shape (21,716 users x 7,977 items,
2,412,586 edges) with Zipf-like item popularity and log-normal user activity. Â is the symmetric
normalized (U+V)x(U+V) matrix; the loss is (Y * G).sum() for a fixed random G. Times are medians of
--repeats runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch

from graphrec import native
from graphrec.adjacency import SparseAdj, csr_tensor, normalized_bipartite, spmm
from graphrec.malloc import keep_freed_memory
from graphrec.progress import format_table

ROOT = Path(__file__).resolve().parents[1]

N_USERS, N_ITEMS, N_EDGES = 21_716, 7_977, 2_412_586
OURS = "ours: graphrec.adjacency.spmm, explicit transpose"
MKL = "ours on MKL's product (compiled kernel off), column tiles"
PV = ROOT.parent / "shared/data/beibei/pv.txt"
# Peak HBM bandwidth in GB/s, matched by substring of torch.cuda.get_device_name() (first match wins).
PEAK_GBPS = {"H100 PCIe": 2000, "H100 NVL": 3900, "H100": 3350, "H200": 4800, "A100-SXM4-80GB": 2039,
             "A100-PCIE-80GB": 1935, "A100": 1555, "L40S": 864, "A10G": 600, "T4": 320}


def load_edges(seed: int) -> tuple[np.ndarray, np.ndarray, int, int, str]:
    if PV.exists():
        users, items = [], []
        for line in PV.read_text().splitlines():
            ids = line.split()
            if len(ids) > 1:
                users.append(np.full(len(ids) - 1, int(ids[0]), dtype=np.int64))
                items.append(np.asarray(ids[1:], dtype=np.int64))
        u, i = np.concatenate(users), np.concatenate(items)
        n_u, n_i = int(u.max()) + 1, int(i.max()) + 1
        key = np.unique(u * n_i + i)
        return key // n_i, key % n_i, n_u, n_i, f"real Beibei view graph ({PV})"
    rng = np.random.default_rng(seed)
    p_item = 1.0 / np.arange(1, N_ITEMS + 1) ** 0.8
    p_item = rng.permutation(p_item / p_item.sum())
    p_user = rng.lognormal(0.0, 1.0, N_USERS)
    p_user /= p_user.sum()
    keys = np.empty(0, dtype=np.int64)
    while keys.size < N_EDGES:  # popular items saturate (every user), so draw until enough are unique
        m = 2 * (N_EDGES - keys.size)
        new = rng.choice(N_USERS, m, p=p_user) * N_ITEMS + rng.choice(N_ITEMS, m, p=p_item)
        keys = np.unique(np.concatenate([keys, new]))
    keys = np.sort(rng.choice(keys, N_EDGES, replace=False))
    return keys // N_ITEMS, keys % N_ITEMS, N_USERS, N_ITEMS, (
        "synthetic (no pv.txt): seeded unique edges, Zipf(0.8) item popularity, log-normal user activity")


def compacted(adj: SparseAdj, keep: float, generator: torch.Generator) -> SparseAdj:
    """Edge dropout that removes the dropped nonzeros instead of zeroing them (the rejected variant)."""
    m, t = adj.matrix, adj.transpose
    mask = torch.rand(adj.nnz, generator=generator, device=m.device) < keep
    mask_t = mask.index_select(0, adj.perm)
    kept_before = torch.zeros(adj.nnz + 1, dtype=torch.int64, device=m.device)
    torch.cumsum(mask, 0, out=kept_before[1:])

    def squeeze(csr: torch.Tensor, keep_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        crow = csr.crow_indices()
        before = kept_before if keep_mask is mask else torch.cat([kept_before[:1], torch.cumsum(keep_mask, 0)])
        kept = torch.nonzero(keep_mask).squeeze(1)
        return csr_tensor(before.index_select(0, crow.long()).to(crow.dtype), csr.col_indices().index_select(0, kept),
                    csr.values().index_select(0, kept) / keep, tuple(csr.shape)), kept

    new_m, _ = squeeze(m, mask)
    new_t, kept_t = squeeze(t, mask_t)
    # New position of a kept matrix nonzero = number of kept ones before it.
    perm = kept_before.index_select(0, adj.perm.index_select(0, kept_t))
    return SparseAdj(new_m, new_t, perm, cpu_tile_bytes=adj.cpu_tile_bytes)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_methods(steps: dict, E: torch.Tensor, G: torch.Tensor, repeats: int, device: torch.device,
                 on_mkl: set[str] = frozenset()) -> dict:
    """steps: name -> step(E) -> Y (or a string saying why it is skipped). Runs the methods in turn,
    round after round, so background load hits all of them alike; returns median forward,
    backward and total milliseconds per method. The methods named in ``on_mkl`` run (forward and
    backward) with graphrec's compiled kernel turned off."""
    times = {name: ([], [], []) for name, step in steps.items() if not isinstance(step, str)}
    for r in range(repeats + 1):
        for name, (fwd, bwd, tot) in times.items():
            native.use(False if name in on_mkl else None)
            E.grad = None
            sync(device)
            t0 = time.perf_counter()
            loss = (steps[name](E) * G).sum()
            sync(device)
            t1 = time.perf_counter()
            loss.backward()
            sync(device)
            t2 = time.perf_counter()
            if r:  # round 0 is the warm-up (allocations, MKL/cuSPARSE handles, CPU tile plans)
                fwd.append((t1 - t0) * 1e3)
                bwd.append((t2 - t1) * 1e3)
                tot.append((t2 - t0) * 1e3)
    native.use(None)
    return {name: {"forward_ms": median(times[name][0]), "backward_ms": median(times[name][1]),
                   "total_ms": median(times[name][2])} if name in times else step
            for name, step in steps.items()}


def dgl_step(u: np.ndarray, i: np.ndarray, n_u: int, n_i: int, device: torch.device):
    from graphrec.compat import DGLUnavailable, import_dgl

    try:
        dgl = import_dgl()
    except DGLUnavailable as exc:
        return None, str(exc)
    fn = dgl.function
    ut, it = torch.from_numpy(u), torch.from_numpy(i)
    g = dgl.heterograph({("user", "r", "item"): (ut, it), ("item", "rev_r", "user"): (it, ut)},
                        num_nodes_dict={"user": n_u, "item": n_i})
    try:
        g = g.to(device)
    except Exception as exc:  # a CPU-only DGL build on a GPU host
        return None, f"DGL cannot use {device}: {exc}"
    du = torch.bincount(ut, minlength=n_u).double()
    di = torch.bincount(it, minlength=n_i).double()
    w = torch.rsqrt(du[ut] * di[it]).float().unsqueeze(1).to(device)
    g.edges["r"].data["w"] = w
    g.edges["rev_r"].data["w"] = w

    def step(E: torch.Tensor) -> torch.Tensor:
        g.nodes["user"].data["h"] = E[:n_u]
        g.nodes["item"].data["h"] = E[n_u:]
        for etype in ("r", "rev_r"):
            g.update_all(fn.u_mul_e("h", "w", "m"), fn.sum("m", "out"), etype=etype)
        return torch.cat([g.nodes["user"].data.pop("out"), g.nodes["item"].data.pop("out")])

    return step, ""


def main() -> None:
    keep_freed_memory()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--keep", type=float, default=0.9, help="edge-dropout keep probability")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    torch.manual_seed(args.seed)

    u, i, n_u, n_i, source = load_edges(args.seed)
    t = time.perf_counter()
    adj = normalized_bipartite(u, i, n_u, n_i, device=device)
    sync(device)
    build_s = time.perf_counter() - t
    n = n_u + n_i
    E = torch.randn(n, args.dim, device=device, requires_grad=True)
    G = torch.randn(n, args.dim, device=device)
    gen = torch.Generator(device=device).manual_seed(args.seed)

    A = adj.matrix
    step, why = dgl_step(u, i, n_u, n_i, device)
    # Compacting changes the structure, so a CPU tile plan would be rebuilt every step; untiled is
    # the rejected variant's best case.
    untiled = SparseAdj(adj.matrix, adj.transpose, adj.perm, cpu_tile_bytes=0)
    steps = {
        "torch built-in: torch.sparse.mm(A_csr, E), torch's backward": lambda x: torch.sparse.mm(A, x),
        "DGL update_all (u_mul_e, sum; both etypes)": step or f"skipped: {why}",
        OURS: lambda x: spmm(adj, x),
        f"ours + edge dropout (keep {args.keep}), fresh mask each step": lambda x: spmm(adj.dropout(args.keep, gen), x),
        MKL: (lambda x: spmm(adj, x)) if device.type == "cpu" else "skipped: the MKL product is the CPU's",
        "ours on MKL's product without CPU column tiles (cpu_tile_bytes=0)": lambda x: spmm(untiled, x),
        "rejected: dropout removing dropped entries (untiled)": lambda x: spmm(compacted(untiled, args.keep, gen), x),
    }
    if device.type != "cpu":
        del steps["ours on MKL's product without CPU column tiles (cpu_tile_bytes=0)"]
    methods = time_methods(steps, E, G, args.repeats, device, on_mkl={MKL, "ours on MKL's product without CPU column "
                                                                   "tiles (cpu_tile_bytes=0)"})
    ours = methods[OURS]

    def draw_mask() -> None:
        adj.dropout(args.keep, gen)
        sync(device)

    draw_mask()
    t_drop = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        draw_mask()
        t_drop.append((time.perf_counter() - t) * 1e3)

    rows = []
    for name, r in methods.items():
        if isinstance(r, str):
            rows.append([name, r, "", "", ""])
        else:
            rows.append([name, round(r["forward_ms"], 1), round(r["backward_ms"], 1), round(r["total_ms"], 1),
                         f"{r['total_ms'] / ours['total_ms']:.2f}x"])
    lines = [
        f"workload: {source}",
        f"{n_u:,} users x {n_i:,} items, {len(u):,} edges -> {adj.nnz:,} nonzeros; d={args.dim}; "
        f"device={device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}; "
        f"torch {torch.__version__}, threads={torch.get_num_threads()}; median of {args.repeats}",
        f"normalized_bipartite build: {build_s * 1e3:.0f} ms; index dtype {A.col_indices().dtype}; "
        f"CPU product: {native.status()}",
        "",
        format_table(["method", "forward ms", "backward ms", "fwd+bwd ms", "speed-up vs ours"], rows),
        "",
        "speed-up vs ours = that row's fwd+bwd / ours' fwd+bwd (above 1: ours is faster).",
        f"adj.dropout() alone (draws the mask; values and tiles are derived when the product needs them): "
        f"{median(t_drop):.1f} ms",
    ]
    result: dict = {"source": source, "users": n_u, "items": n_i, "edges": int(len(u)), "nnz": adj.nnz,
                    "dim": args.dim, "device": str(device), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "repeats": args.repeats, "build_ms": build_s * 1e3,
                    "dropout_mask_ms": median(t_drop), "methods": methods}
    if device.type == "cuda":
        idx_b, val_b = A.col_indices().element_size(), A.values().element_size()
        per_spmm = adj.nnz * (idx_b + val_b) + (n + 1) * idx_b + adj.nnz * args.dim * 4 + n * args.dim * 4
        gbps = 2 * per_spmm / (ours["total_ms"] * 1e-3) / 1e9
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_GBPS.items() if k in name), None)
        lines.append(
            f"achieved bandwidth, ours fwd+bwd: {gbps:,.0f} GB/s"
            + (f" = {100 * gbps / peak:.0f}% of {name}'s ~{peak:,} GB/s peak" if peak else " (peak unknown)")
            + f"; bytes per spmm = nnz*(index {idx_b} B + value {val_b} B) + (rows+1)*{idx_b} B"
            f" + nnz*d*4 (gathered rows) + rows*d*4 (written) = {per_spmm / 1e6:,.0f} MB")
        result.update(bandwidth_gbps=gbps, peak_gbps=peak, bytes_per_spmm=per_spmm)
    print("\n".join(lines))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
