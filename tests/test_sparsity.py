"""Sparsity groups: the split-file format, quantile groups, and per-group means by hand."""

import numpy as np
import pytest

from graphrec import sparsity
from graphrec.snapshot import IdMap

USERS = IdMap("user", np.array([str(k) for k in range(6)], dtype=object))


def test_split_file_groups_and_labels(tmp_path):
    f = tmp_path / "sparsity.split"
    f.write_text("#users=[2]\n0 3\n#users=[3]\n1 2 5\n")
    groups = sparsity.read_split_file(f, USERS)
    assert [g[1].tolist() for g in groups] == [[0, 3], [1, 2, 5]]
    counts = np.array([1, 4, 6, 2, 9, 5])
    labelled = sparsity.label_groups(groups, counts)
    assert [g.label for g in labelled] == ["1–2", "4–6"]


@pytest.mark.parametrize("text, message", [
    ("#users=[2]\n0 3\n#users=[3]\n", "expected pairs"),
    ("#users=[3]\n0 3\n", "2 user ids but the header says 3"),
    ("users 2\n0 3\n", "expected a header"),
    ("#users=[1]\n99\n", "unknown user '99'"),
])
def test_split_file_errors_name_the_line(tmp_path, text, message):
    f = tmp_path / "sparsity.split"
    f.write_text(text)
    with pytest.raises(sparsity.SparsityError, match=message):
        sparsity.read_split_file(f, USERS)


def test_quantile_groups_keep_ties_together_and_cover_everyone():
    counts = np.array([1, 1, 1, 2, 3, 4, 5, 5, 8, 20])
    groups = sparsity.quantile_groups(counts, 4)
    members = np.concatenate([g[1] for g in groups])
    assert sorted(members.tolist()) == list(range(10))
    for _, users in groups:  # a count never spans two groups
        for other_name, other in groups:
            if other is not users:
                assert not set(counts[users]) & set(counts[other])


def test_table_means_per_group():
    groups = [sparsity.Group("a", np.array([0, 2])), sparsity.Group("b", np.array([1, 5]))]
    evaluated = np.array([2, 0, 1])  # user 5 has no test item: not evaluated
    per_model = {"m": {"hr@10": np.array([1.0, 0.0, 1.0]), "ndcg@10": np.array([0.5, 0.0, 0.25])}}
    headers, rows = sparsity.table(groups, per_model, evaluated, ("hr@10", "ndcg@10"))
    assert headers == ["train purchases", "users", "m hr@10", "m ndcg@10"]
    assert rows == [["a", 2, 0.5, 0.25], ["b", 1, 1.0, 0.25]]
