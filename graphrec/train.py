"""Training: the only place with optimizers, epochs, early stopping, checkpoints and run directories.

    config → snapshot → TrainData → model → fit → evaluate

A run directory holds ``run.json`` (resolved config, model params, dataset and snapshot hash),
``metrics.jsonl`` (one line per epoch and per evaluation), ``checkpoint.pt`` (latest state, for
``--resume``), ``best.pt`` (weights at the best evaluation), ``results.md`` / ``results.json``
and ``curve.png``. Everything loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

import numpy as np
import torch

from graphrec import snapshot as snap
from graphrec.adjacency import SparseAdj, normalized_bipartite
from graphrec.config import TrainConfig
from graphrec.errors import UserError, WorkFailed
from graphrec.evaluate import UserItems, evaluate_full
from graphrec.models import GraphMeta, Recommender, build_model, get_model
from graphrec.models.base import Batch
from graphrec.progress import STDERR, format_table
from graphrec.runs import RUN_FILE, load_weights, save_weights, write_atomic
from graphrec.schema import derived_name

METRICS_FILE = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


#: What each protocol's test figures mean, printed beside every results table.
PROTOCOL_NOTES = {
    "paper": "paper protocol: early stopping used the test split, as the reference code does; these test figures "
             "are for comparison with published numbers only",
    "honest": "honest protocol: model selected on the validation split; test evaluated once",
    "fixed": "fixed protocol: a fixed epoch budget on every non-test purchase, no model selection; test evaluated "
             "once, after the last epoch",
}


class TrainError(WorkFailed, RuntimeError):
    pass


class RunNotFound(UserError, FileNotFoundError):
    """A --run that is not a run directory."""


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


# ----------------------------------------------------------------------------------------------- data


@dataclass
class TrainData:
    """What training needs from a snapshot under one protocol, as arrays and padded tensors."""

    meta: GraphMeta
    edges: dict[str, tuple[np.ndarray, np.ndarray]]  # training edges per relation
    positives: dict[str, UserItems]                  # relation -> item lists per user (truncated)
    selection: str | None                            # split used for early stopping (None: fixed budget)
    eval_sets: dict[str, tuple[UserItems, UserItems]]  # split -> (held-out items, items excluded from ranking)
    protocol: str

    @classmethod
    def from_snapshot(cls, s: snap.Snapshot, protocol: str, relations: tuple[str, ...],
                      pad_percentile: float = 99.99, device: torch.device | str = "cpu",
                      behaviors: tuple[str, ...] | None = None) -> "TrainData":
        target = s.target
        codes = snap.SPLIT_CODES
        # paper and fixed train on every non-test purchase; honest holds the validation purchase out
        every_purchase = protocol in ("paper", "fixed")
        train_codes = [codes["train"]] + ([codes["valid"]] if every_purchase else [])
        edges = {}
        for name in relations:
            if name not in s.relations:
                raise TrainError(f"the model needs relation {name!r} but snapshot {s.path} has "
                                 f"{', '.join(s.relations)}; ingest the behaviors it needs")
            rel = s.relations[name]
            if rel.split is not None:
                keep = np.isin(rel.split, train_codes)
            elif rel.holdout is not None and every_purchase:
                # Under `paper` and `fixed` the validation purchase is a training purchase, so the derived edge it
                # removes must not exist (the held-out *test* item stays, as in the reference code).
                keep = rel.holdout != codes["valid"]
            else:
                keep = np.ones(len(rel), dtype=bool)
            edges[name] = (rel.user[keep], rel.item[keep])
        if s.behaviors.target not in edges:
            mask = np.isin(target.split, train_codes)
            edges[s.behaviors.target] = (target.user[mask], target.item[mask])
        positives = {name: _truncated(u, i, s.n_users, pad_percentile).to(device) for name, (u, i) in edges.items()}
        train_u, train_i = edges[s.behaviors.target]
        exclude_train = UserItems.from_pairs(train_u, train_i, s.n_users)
        test_u, test_i = target.select("test")
        if every_purchase:
            # `fixed` has no selection split: fit never evaluates before the last epoch
            eval_sets = {"test": (UserItems.from_pairs(test_u, test_i, s.n_users), exclude_train)}
            selection = "test" if protocol == "paper" else None
        else:
            valid_u, valid_i = target.select("valid")
            known = (np.concatenate([train_u, valid_u]), np.concatenate([train_i, valid_i]))
            eval_sets = {"valid": (UserItems.from_pairs(valid_u, valid_i, s.n_users), exclude_train),
                         "test": (UserItems.from_pairs(test_u, test_i, s.n_users),
                                  UserItems.from_pairs(*known, s.n_users))}
            selection = "valid"
            if len(valid_u) == 0:
                raise TrainError("the honest protocol needs validation purchases but the snapshot has none; ingest "
                                 "with ingest.split.valid=true, or train with --set train.protocol=paper")
        return cls(_meta(s, behaviors), edges, positives, selection, eval_sets, protocol)

    @classmethod
    def for_model(cls, s: snap.Snapshot, tc: TrainConfig, model_cls: type, device: torch.device | str = "cpu"
                  ) -> "TrainData":
        """What ``model_cls`` reads from ``s`` under ``tc`` (its protocol, cascade and padding)."""
        order = train_behaviors(s, tc)
        return cls.from_snapshot(s, tc.protocol, model_cls.label_relations(_meta(s, order)), tc.pad_percentile,
                                 device, order)

    def graphs(self, names: tuple[str, ...], device: torch.device | str) -> dict[str, SparseAdj]:
        return {n: normalized_bipartite(*self.edges[n], self.meta.n_users, self.meta.n_items, device=device)
                for n in names}


def _truncated(users: np.ndarray, items: np.ndarray, n_users: int, percentile: float) -> UserItems:
    """Each user's items (ascending id), cut to the given percentile of the non-zero list lengths,
    as the reference code pads and truncates its positive lists (MODELS.md §0b)."""
    order = np.lexsort((items, users))
    users, items = users[order].astype(np.int64), items[order].astype(np.int64)
    counts = np.bincount(users, minlength=n_users)
    nonzero = counts[counts > 0]
    width = max(1, int(math.ceil(np.percentile(nonzero, percentile)))) if len(nonzero) else 1
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    keep = (np.arange(len(users)) - starts[users]) < width
    return UserItems.from_pairs(users[keep], items[keep], n_users)


# -------------------------------------------------------------------------------------------- batches


def user_batches(n_users: int, batch_size: int, drop_last: bool, generator: torch.Generator) -> list[torch.Tensor]:
    perm = torch.randperm(n_users, generator=generator)
    n = n_users // batch_size if drop_last and n_users >= batch_size else math.ceil(n_users / batch_size)
    return [perm[k * batch_size:(k + 1) * batch_size] for k in range(n)]


def pair_batches(users: np.ndarray, items: np.ndarray, n_items: int, batch_size: int, drop_last: bool,
                 generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Shuffled (user, positive, negative) batches; negatives uniform over items the user has not
    interacted with in training (collisions are redrawn)."""
    n = len(users)
    perm = torch.randperm(n, generator=generator).numpy()
    u, i = users[perm].astype(np.int64), items[perm].astype(np.int64)
    known = np.sort(users.astype(np.int64) * n_items + items)
    neg = sample_negatives(u, known, n_items, generator)
    nb = n // batch_size if drop_last and n >= batch_size else math.ceil(n / batch_size)
    return [(torch.from_numpy(u[k * batch_size:(k + 1) * batch_size]),
             torch.from_numpy(i[k * batch_size:(k + 1) * batch_size]),
             torch.from_numpy(neg[k * batch_size:(k + 1) * batch_size])) for k in range(nb)]


def sample_negatives(users: np.ndarray, known: np.ndarray, n_items: int, generator: torch.Generator,
                     rounds: int = 20) -> np.ndarray:
    """One item per entry of ``users`` (int64), uniform over the items that user has no pair with in
    ``known`` (sorted keys user·n_items + item). Collisions are redrawn for ``rounds`` rounds; the
    few left after that are drawn from the user's complement directly (a user with every item
    keeps a colliding draw)."""
    neg = torch.randint(0, n_items, (len(users),), generator=generator).numpy()
    for _ in range(rounds):
        hit = member(known, users * n_items + neg)
        if not hit.any():
            return neg
        neg[hit] = torch.randint(0, n_items, (int(hit.sum()),), generator=generator).numpy()
    for k in np.flatnonzero(member(known, users * n_items + neg)):
        lo, hi = np.searchsorted(known, [users[k] * n_items, (users[k] + 1) * n_items])
        free = np.setdiff1d(np.arange(n_items), known[lo:hi] - users[k] * n_items)
        if len(free):
            neg[k] = free[int(torch.randint(0, len(free), (1,), generator=generator))]
    return neg


def behavior_pair_batches(edges: dict[str, tuple[np.ndarray, np.ndarray]], target: str, n_items: int,
                          batch_size: int, negatives: int, generator: torch.Generator
                          ) -> list[dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Per step, a slice of every behavior's shuffled training pairs: behavior -> (users, positive
    items, negative items n×``negatives``). Negatives are uniform over the items the user has no
    training pair with in *that* behavior. Every behavior is cut into the same number of steps,
    ceil(|target pairs| / batch_size), in near-equal consecutive slices, so each pair of each
    behavior is seen exactly once per epoch (no last partial batch is dropped)."""
    n_steps = math.ceil(len(edges[target][0]) / batch_size)
    sliced = {}
    for name, (users, items) in edges.items():
        n = len(users)
        perm = torch.randperm(n, generator=generator).numpy()
        u, i = users[perm].astype(np.int64), items[perm].astype(np.int64)
        known = np.sort(users.astype(np.int64) * n_items + items)
        neg = sample_negatives(np.repeat(u, negatives), known, n_items, generator).reshape(n, negatives)
        bounds = (np.arange(n_steps + 1) * n) // max(n_steps, 1)
        sliced[name] = (torch.from_numpy(u), torch.from_numpy(i), torch.from_numpy(neg), bounds)
    return [{name: (u[b[k]:b[k + 1]], i[b[k]:b[k + 1]], neg[b[k]:b[k + 1]]) for name, (u, i, neg, b) in sliced.items()}
            for k in range(n_steps)]


def member(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Whether each of ``keys`` is in ``sorted_keys`` (ascending; may be empty)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.searchsorted(sorted_keys, keys).clip(max=len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


# ----------------------------------------------------------------------------------------------- runs


@dataclass
class RunInfo:
    model: str
    params: dict
    train: dict
    dataset: str
    snapshot: str
    snapshot_manifest_sha256: str
    device: str
    created: str
    files: dict = dataclasses.field(default_factory=dict)  # SHA-256 of the weights files (graphrec.runs)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"


def manifest_hash(path: Path) -> str:
    return hashlib.sha256((Path(path) / snap.MANIFEST).read_bytes()).hexdigest()


def load_run(run_dir: str | Path) -> RunInfo:
    f = Path(run_dir) / RUN_FILE
    if not f.is_file():
        raise RunNotFound(f"{run_dir} is not a run directory (no {RUN_FILE}); train one with `graphrec train`")
    try:
        data = json.loads(f.read_text())
    except ValueError as exc:
        raise RunNotFound(f"{f} is not valid JSON ({exc}); the run directory is damaged: train a new run") from None
    if not isinstance(data, dict):
        raise RunNotFound(f"{f} holds {type(data).__name__}, not a run's record; train a new run")
    if data.get("stage") == "ranking":
        raise TrainError(f"{run_dir} is a ranking run; this needs a recall run (a graph model such as hpmr), e.g. "
                         f"its --recall-run {data.get('recall_run')}")
    names = {fl.name for fl in dataclasses.fields(RunInfo)}
    required = {fl.name for fl in dataclasses.fields(RunInfo) if fl.default is dataclasses.MISSING
                and fl.default_factory is dataclasses.MISSING}
    if set(data) - names or required - set(data):
        raise RunNotFound(f"{f} is not a recall run's record (keys {sorted(data)}; expected {sorted(names)}); "
                          "train a new run")
    return RunInfo(**data)


def params_from_dict(model: str, data: dict) -> Any:
    """A run's recorded params, strictly: a key this graphrec does not know means the run was made
    by another version, and its weights would not fit the model built here."""
    from graphrec.config import ConfigError, _build

    try:
        return _build(get_model(model).params, data, f"run.json params of {model}")
    except ConfigError as exc:
        raise RunNotFound(f"{exc.args[0]}; the run was made by another graphrec version: retrain it") from None


def _recorded_train(info: RunInfo) -> TrainConfig:
    from graphrec.config import ConfigError, _build

    try:
        return _build(TrainConfig, info.train, "run.json train")
    except ConfigError as exc:
        raise RunNotFound(f"{exc.args[0]}; the run was made by another graphrec version: retrain it") from None


def open_model(run_dir: str | Path, device: torch.device | str = "cpu", snapshot_path: str | Path | None = None,
               weights: str = BEST) -> tuple[RunInfo, Recommender, TrainData, dict[str, SparseAdj]]:
    """Rebuild a trained model from its run directory (for evaluate and recommend)."""
    info = load_run(run_dir)
    path = Path(snapshot_path or info.snapshot)
    if manifest_hash(path) != info.snapshot_manifest_sha256:
        raise TrainError(f"snapshot {path} is not the one run {run_dir} was trained on (manifest hash differs); "
                         "pass the right --snapshot or retrain")
    s = snap.read(path)
    tc = _recorded_train(info)
    params = params_from_dict(info.model, info.params)
    cls = get_model(info.model).cls
    data = TrainData.for_model(s, tc, cls, device)
    model = build_model(info.model, params, data.meta).to(device)
    state = load_weights(Path(run_dir), weights, device)
    model.load_state_dict(state["model"] if "model" in state else state)
    model.eval()
    return info, model, data, data.graphs(cls.relations(data.meta), device)


def _meta(s: snap.Snapshot, behaviors: tuple[str, ...] | None = None) -> GraphMeta:
    """The snapshot as models see it, restricted to ``behaviors`` (a sub-cascade) when given: its
    relations are then the base and derived relations among those behaviors only."""
    order = tuple(behaviors) if behaviors is not None else s.behaviors.order
    keep = set(order) | {derived_name(a, b) for a in order for b in order if a != b}
    return GraphMeta(s.n_users, s.n_items, order, tuple(r for r in s.relations if r in keep))


def train_behaviors(s: snap.Snapshot, tc: TrainConfig) -> tuple[str, ...]:
    """The cascade a run trains on: ``train.behaviors`` checked against the snapshot, or all of it."""
    if tc.behaviors is None:
        return s.behaviors.order
    order = tuple(tc.behaviors)
    full = s.behaviors.order
    if (not order or order[-1] != full[-1] or any(b not in full for b in order)
            or list(order) != [b for b in full if b in order]):
        raise TrainError(f"train.behaviors {list(order)} must be part of the snapshot's cascade {' → '.join(full)} "
                         f"in the same order and end with the target {full[-1]!r}; e.g. --set "
                         f"train.behaviors=[{','.join(full[-2:])}], or remove the key to train on every behavior")
    return order


# ----------------------------------------------------------------------------------------------- fit


@dataclass
class FitResult:
    run_dir: Path
    best: dict
    final: dict
    epochs_run: int
    stopped_early: bool


def evaluate_split(model: Recommender, graphs, data: TrainData, split: str, ks, batch_size: int,
                   device: torch.device, *, per_user: bool = False) -> dict:
    """Full-ranking metrics of one split: averages, or with ``per_user`` per-user tensors plus
    "users" (the node ids they belong to)."""
    model.eval()
    with torch.no_grad():
        score = model.scorer(graphs)
        test, exclude = data.eval_sets[split]
        users = torch.nonzero(test.counts() > 0).flatten()
        return evaluate_full(score, users, test, exclude, data.meta.n_items, ks=tuple(ks), batch_size=batch_size,
                             device=device, per_user=per_user)


def make_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``train.optimizer`` names (EHCF and NMTR train with Adagrad, as published)."""
    if tc.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=tc.lr)
    return torch.optim.Adagrad(model.parameters(), lr=tc.lr, initial_accumulator_value=1e-8)


def optimize_epoch(steps: Iterable[tuple[torch.Tensor, dict[str, float]]], opt: torch.optim.Optimizer
                   ) -> tuple[float, float, dict[str, float]]:
    """One optimizer step per ``(loss, parts)`` that ``steps`` yields (lazily, so each loss is
    built after the previous step); returns the summed loss, its mean and the parts' means."""
    total, parts_sum, n = 0.0, {}, 0
    for loss, parts in steps:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach())
        n += 1
        for k, v in parts.items():
            parts_sum[k] = parts_sum.get(k, 0.0) + v
    n = max(n, 1)
    return total, total / n, {k: v / n for k, v in parts_sum.items()}


def fit(model_name: str, params: Any, tc: TrainConfig, snapshot_path: str | Path, run_dir: str | Path, *,
        device: str = "auto", resume: bool = False, log: TextIO | None = STDERR,
        on_epoch: Callable[[int, dict], None] | None = None) -> FitResult:
    dev = pick_device(device)
    run_dir = Path(run_dir)
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)
    s = snap.read(snapshot_path)
    entry = get_model(model_name)
    data = TrainData.for_model(s, tc, entry.cls, dev)
    graphs = data.graphs(entry.cls.relations(data.meta), dev)
    model = build_model(model_name, params, data.meta).to(dev)
    opt = make_optimizer(model, tc)
    info = RunInfo(model_name, dataclasses.asdict(params), dataclasses.asdict(tc), s.dataset,
                   str(Path(snapshot_path).resolve()), manifest_hash(Path(snapshot_path)), str(dev),
                   time.strftime("%Y-%m-%dT%H:%M:%S"))
    gen = torch.Generator().manual_seed(tc.seed)
    state = {"epoch": 0, "best": None, "best_epoch": None, "bad": 0}
    if resume:
        ckpt_path = run_dir / CHECKPOINT
        if not ckpt_path.is_file():
            raise TrainError(f"--resume: no {CHECKPOINT} in {run_dir}")
        prev = load_run(run_dir)
        same_params = json.loads(json.dumps(info.params)) == prev.params
        if ((prev.model, prev.snapshot_manifest_sha256) != (info.model, info.snapshot_manifest_sha256)
                or not same_params):
            raise TrainError(f"--resume: {run_dir} was trained with a different model, params or snapshot; "
                             "start a new run directory instead")
        ckpt = load_weights(run_dir, CHECKPOINT, dev)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        if dev.type == "cuda" and ckpt.get("cuda_rng"):
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        state = json.loads(ckpt["state"])
        # metrics written after the checkpoint (a run stopped between evaluations) are redone
        rows = (run_dir / METRICS_FILE).read_text().splitlines()
        (run_dir / METRICS_FILE).write_text("".join(r + "\n" for r in rows[:state["epoch"]]))
        info = dataclasses.replace(info, files=prev.files)  # the hashes of the files written so far
        write_atomic(run_dir / RUN_FILE, info.to_json().encode())  # epochs and patience may change on resume
        _say(log, f"resuming {run_dir} after epoch {state['epoch']}")
    else:
        if (run_dir / METRICS_FILE).exists():
            raise TrainError(f"run directory {run_dir} already holds a run; pass --resume to continue it or "
                             "choose another --run")
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / RUN_FILE, info.to_json().encode())
    how = (f"early stop on {data.selection} by {tc.metric}" if data.selection else
           f"{tc.epochs} epochs, test evaluated once at the end")
    _say(log, f"{model_name} on {s.dataset} ({data.meta.n_users:,} users, {data.meta.n_items:,} items, behaviors "
              f"{' → '.join(data.meta.behaviors)}) | device {dev} | protocol {tc.protocol}: {how} | run {run_dir}")
    metrics_f = open(run_dir / METRICS_FILE, "a")
    stopped_early = False
    try:
        for epoch in range(state["epoch"], tc.epochs):
            model.train()
            t0 = time.perf_counter()
            total, mean_loss, mean_parts = optimize_epoch(
                (model.loss(batch, graphs) for batch in _batches(model, data, tc, gen, dev)), opt)
            if not math.isfinite(total):
                raise TrainError(f"epoch {epoch + 1}: the loss is {total}; lower train.lr or check the params")
            epoch_s = time.perf_counter() - t0
            row = {"epoch": epoch + 1, "loss": mean_loss, "epoch_seconds": round(epoch_s, 3), **mean_parts}
            line = f"epoch {epoch + 1:4d}  loss {row['loss']:.4f}  {epoch_s:6.1f} s"
            last = epoch + 1 == tc.epochs
            checkpoint = (epoch + 1) % tc.eval_every == 0 or last
            if data.selection is not None and checkpoint:
                t1 = time.perf_counter()
                m = evaluate_split(model, graphs, data, data.selection, tc.ks, tc.eval_batch_size, dev)
                row.update({"split": data.selection, **m, "eval_seconds": round(time.perf_counter() - t1, 3)})
                line += "  " + "  ".join(f"{data.selection} {k} {m[k]:.4f}" for k in m if "@" in k)
                value = m[tc.metric]
                if state["best"] is None or value >= state["best"]:
                    state.update(best=value, best_epoch=epoch + 1, bad=0)
                    save_weights({"model": model.state_dict()}, run_dir, BEST)
                    line += "  *"
                else:
                    state["bad"] += 1
            state["epoch"] = epoch + 1
            metrics_f.write(json.dumps(row) + "\n")
            metrics_f.flush()
            _say(log, line)
            if data.selection is None and last:
                save_weights({"model": model.state_dict()}, run_dir, BEST)  # fixed: the final weights
            if checkpoint:
                cuda_rng = torch.cuda.get_rng_state_all() if dev.type == "cuda" else []  # dropout on the GPU
                save_weights({"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                              "torch_rng": torch.get_rng_state(), "cuda_rng": cuda_rng, "state": json.dumps(state)},
                             run_dir, CHECKPOINT)
            if on_epoch is not None:
                on_epoch(epoch + 1, row)
            if state["bad"] >= tc.patience:
                stopped_early = True
                _say(log, f"no improvement of {data.selection} {tc.metric} for {tc.patience} evaluations: stopping")
                break
    finally:
        metrics_f.close()
    final = finish(run_dir, log=log, device=str(dev))
    return FitResult(run_dir, {"epoch": state["best_epoch"], tc.metric: state["best"]}, final, state["epoch"],
                     stopped_early)


def _batches(model: Recommender, data: TrainData, tc: TrainConfig, gen: torch.Generator, dev: torch.device):
    if model.batching == "users":
        for users in user_batches(data.meta.n_users, tc.batch_size, tc.drop_last, gen):
            users = users.to(dev)
            yield Batch(users=users, positives={k: v.rows(users) for k, v in data.positives.items()})
    elif model.batching == "pairs":
        t = data.meta.target
        u, i = data.edges[t]
        for bu, bp, bn in pair_batches(u, i, data.meta.n_items, tc.batch_size, tc.drop_last, gen):
            yield Batch(users=bu.to(dev), pos={t: bp.to(dev)}, neg={t: bn.to(dev)})
    elif model.batching == "behavior_pairs":
        t = data.meta.target
        edges = {r: data.edges[r] for r in type(model).label_relations(data.meta)}
        ratio = int(getattr(model, "negatives_per_positive", 1))
        for step in behavior_pair_batches(edges, t, data.meta.n_items, tc.batch_size, ratio, gen):
            pairs = {r: tuple(x.to(dev) for x in v) for r, v in step.items()}
            yield Batch(users=pairs[t][0], pairs=pairs)
    else:
        raise TrainError(f"unknown batching {model.batching!r} of {type(model).__name__}")


def finish(run_dir: str | Path, *, log: TextIO | None = STDERR, device: str = "cpu") -> dict:
    """Evaluate the best weights on the test split, write results.md/json and the curve."""
    run_dir = Path(run_dir)
    info, model, data, graphs = open_model(run_dir, device)
    tc = _recorded_train(info)
    ks = sorted(set(tc.ks) | {10})
    dev = torch.device(device)
    results = {}
    for split in data.eval_sets:
        t0 = time.perf_counter()
        results[split] = evaluate_split(model, graphs, data, split, ks, tc.eval_batch_size, dev)
        results[split]["seconds"] = round(time.perf_counter() - t0, 3)
    rows = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines() if line.strip()]
    evals = [r for r in rows if "split" in r]
    best = max(evals, key=lambda r: (r[tc.metric], r["epoch"])) if evals else None
    epoch_times = [r["epoch_seconds"] for r in rows]
    # under `fixed` the weights are those of the last epoch, reported as its "best" epoch
    best_epoch = best["epoch"] if best else (len(rows) if data.selection is None and rows else None)
    summary = {"model": info.model, "dataset": info.dataset, "protocol": tc.protocol, "selection": data.selection,
               "best_epoch": best_epoch, "epochs_run": len(rows),
               "median_epoch_seconds": float(np.median(epoch_times)) if epoch_times else None,
               "results": results, "device": device}
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    metric_names = [k for k in results["test"] if "@" in k]
    table = format_table(["split", *metric_names, "users"],
                         [[split, *[f"{r[k]:.4f}" for k in metric_names], r.get("users", "")]
                          for split, r in results.items()])
    note = PROTOCOL_NOTES[tc.protocol]
    text = (f"# {info.model} on {info.dataset}\n\nbest epoch {summary['best_epoch']} of {summary['epochs_run']}; "
            f"median epoch {summary['median_epoch_seconds']:.2f} s on {info.device}\n\n{table}\n\n{note}\n")
    (run_dir / "results.md").write_text(text)
    plot_curve(run_dir, rows, tc.metric)
    _say(log, text)
    return summary


def plot_curve(run_dir: Path, rows: list[dict], metric: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot([r["epoch"] for r in rows], [r["loss"] for r in rows], color="tab:blue", label="loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss", color="tab:blue")
    evals = [r for r in rows if "split" in r]
    if evals:
        ax2 = ax1.twinx()
        ax2.plot([r["epoch"] for r in evals], [r[metric] for r in evals], "o-", color="tab:red")
        ax2.set_ylabel(f"{evals[0]['split']} {metric}", color="tab:red")
    fig.tight_layout()
    out = run_dir / "curve.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _say(stream: TextIO | None, text: str) -> None:
    if stream is not None:
        print(text, file=stream, flush=True)
