"""Accuracy by user sparsity (NMTR Fig. 2, HPMR's sparsity.split): users grouped by their number of
training purchases, HR@K / NDCG@K per group and model, as a table, CSV and a PNG.

Groups come from a ``sparsity.split`` file (pairs of lines: ``#users=[N]`` then the user ids) when
the data set ships one, else from quantiles of the training-purchase counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphrec.errors import UserError
from graphrec.snapshot import IdMap


class SparsityError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class Group:
    label: str
    users: np.ndarray  # node ids


def read_split_file(path: str | Path, users: IdMap) -> list[tuple[str, np.ndarray]]:
    """Groups of a sparsity.split file, in file order, as (name, node ids)."""
    path = Path(path)
    lines = path.read_text().splitlines()
    if len(lines) % 2:
        raise SparsityError(f"{path}: {len(lines)} lines; expected pairs of '#users=[N]' and a line of user ids")
    groups = []
    for k in range(0, len(lines), 2):
        header, ids = lines[k].strip(), lines[k + 1].split()
        if not header.startswith("#users="):
            raise SparsityError(f"{path}:{k + 1}: expected a header '#users=[N]', got {header[:40]!r}")
        try:
            expected = int(header.split("=", 1)[1].strip("[] "))
        except ValueError:
            raise SparsityError(f"{path}:{k + 1}: the header {header!r} does not give a user count") from None
        if len(ids) != expected:
            raise SparsityError(f"{path}:{k + 2}: {len(ids)} user ids but the header says {expected}")
        try:
            groups.append((f"group {k // 2 + 1}", users.indices(ids)))
        except KeyError as exc:
            raise SparsityError(f"{path}:{k + 2}: {exc.args[0]}") from None
    return groups


def label_groups(groups: list[tuple[str, np.ndarray]], train_counts: np.ndarray) -> list[Group]:
    """Name each group by the range of training purchases of its users, e.g. '≤ 8' or '9–12'."""
    out = []
    for name, users in groups:
        c = train_counts[users]
        lo, hi = (int(c.min()), int(c.max())) if len(c) else (0, 0)
        out.append(Group(f"{lo}–{hi}" if lo != hi else f"{lo}", users))
    return out


def quantile_groups(train_counts: np.ndarray, n_groups: int = 5) -> list[tuple[str, np.ndarray]]:
    """About equally large groups of users by training-purchase count (ties stay together)."""
    edges = np.unique(np.quantile(train_counts, np.linspace(0, 1, n_groups + 1), method="inverted_cdf"))
    groups = []
    lo = -np.inf
    for hi in edges[1:] if len(edges) > 1 else edges:
        users = np.flatnonzero((train_counts > lo) & (train_counts <= hi))
        if len(users):
            groups.append((f"≤ {int(hi)}", users))
        lo = hi
    return groups


def table(groups: list[Group], per_model: dict[str, dict[str, np.ndarray]], evaluated: np.ndarray,
          metrics: tuple[str, ...]) -> tuple[list[str], list[list]]:
    """Rows: group, users evaluated, then each model's mean of each metric over the group.
    ``per_model[model][metric]`` is per evaluated user, aligned with ``evaluated`` (node ids)."""
    position = {int(u): k for k, u in enumerate(evaluated.tolist())}
    headers = ["train purchases", "users"] + [f"{m} {metric}" for m in per_model for metric in metrics]
    rows = []
    for g in groups:
        idx = np.array([position[u] for u in g.users.tolist() if u in position], dtype=np.int64)
        row = [g.label, len(idx)]
        for values in per_model.values():
            for metric in metrics:
                row.append(float(values[metric][idx].mean()) if len(idx) else float("nan"))
        rows.append(row)
    return headers, rows


def plot(headers: list[str], rows: list[list], metric: str, path: str | Path, title: str) -> Path | None:
    """Grouped bars of one metric per group and model."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    cols = [k for k, h in enumerate(headers) if h.endswith(" " + metric)]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(cols), 1)
    x = np.arange(len(rows))
    for j, c in enumerate(cols):
        ax.bar(x + j * width - 0.4 + width / 2, [r[c] for r in rows], width, label=headers[c].rsplit(" ", 1)[0])
    ax.set_xticks(x, [f"{r[0]}\n({r[1]:,} users)" for r in rows])
    ax.set_xlabel("training purchases per user")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))   # outside: inside it hid the tallest bars
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
