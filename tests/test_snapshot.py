"""Snapshot files: round trip, determinism, and every validation error (no Neo4j needed)."""

import gzip
import json
import shutil

import numpy as np
import pytest
from conftest import tiny_snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from graphrec import snapshot as snap
from graphrec.schema import Behaviors


def test_build_sorts_edges_and_counts_splits():
    s = tiny_snapshot()
    cart = s.relations["cart"]
    assert cart.user.tolist() == [0, 0, 1, 2, 2] and cart.item.tolist() == [0, 1, 2, 0, 3]
    assert cart.ts.tolist() == [4, 5, 3, snap.NO_TS, 2]  # columns follow their edge through the sort
    assert s.counts() == {"users": 3, "items": 4, "CART": 5, "BUY": 4, "BUY:train": 3, "BUY:test": 1,
                          "CART_NOT_BUY": 2}
    u, i = s.train("buy")
    assert list(zip(u.tolist(), i.tolist())) == [(0, 0), (1, 2), (2, 3)]
    assert s.relations["cart_not_buy"].split_counts() == {"test": 1}


def test_write_read_round_trip(tmp_path):
    s = tiny_snapshot()
    path = snap.write(s, tmp_path / "snap")
    back = snap.read(path)
    assert back.dataset == "tiny" and back.behaviors == s.behaviors
    assert back.users.keys.tolist() == ["u0", "u1", "u2"] and back.items.index("i3") == 3
    for name, rel in s.relations.items():
        got = back.relations[name]
        assert got.kind == rel.kind
        for col, arr in rel.columns().items():
            np.testing.assert_array_equal(got.columns()[col], arr)
            assert got.columns()[col].dtype == arr.dtype
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["relations"]["buy"]["splits"] == {"train": 3, "test": 1}
    assert set(manifest["files"]) == {"ids-user.txt.gz", "ids-item.txt.gz", "rel-cart.npz", "rel-buy.npz",
                                      "rel-cart_not_buy.npz"}


def test_files_are_byte_for_byte_reproducible(tmp_path):
    a = snap.write(tiny_snapshot(), tmp_path / "a")
    b = snap.write(tiny_snapshot(), tmp_path / "b")
    ma, mb = (json.loads((p / "manifest.json").read_text())["files"] for p in (a, b))
    assert ma == mb


def test_rewrite_replaces_the_directory(tmp_path):
    path = snap.write(tiny_snapshot(), tmp_path / "snap")
    (path / "stray.txt").write_text("x")
    snap.write(tiny_snapshot(), path)
    assert not (path / "stray.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["snap"]  # no temporary or old directories left


def test_refuses_to_overwrite_a_non_snapshot_directory(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.csv").write_text("keep me")
    with pytest.raises(snap.SnapshotError, match="is not a snapshot"):
        snap.write(tiny_snapshot(), tmp_path / "data")
    assert (tmp_path / "data" / "precious.csv").read_text() == "keep me"


def test_corrupted_file_is_rejected_by_hash(tmp_path):
    path = snap.write(tiny_snapshot(), tmp_path / "snap")
    f = path / "rel-cart.npz"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit, same size
    f.write_bytes(bytes(data))
    with pytest.raises(snap.SnapshotError, match=r"rel-cart\.npz: sha256 does not match"):
        snap.read(path)


def test_truncated_and_missing_files_are_named(tmp_path):
    path = snap.write(tiny_snapshot(), tmp_path / "snap")
    f = path / "rel-buy.npz"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(snap.SnapshotError, match=r"rel-buy\.npz: .* bytes, the manifest says"):
        snap.read(path)
    f.unlink()
    with pytest.raises(snap.SnapshotError, match=r"rel-buy\.npz: listed in the manifest but missing"):
        snap.read(path)


def _edit_manifest(path, edit):
    m = json.loads((path / "manifest.json").read_text())
    edit(m)
    (path / "manifest.json").write_text(json.dumps(m))


def test_count_mismatch_against_manifest_names_relation(tmp_path):
    path = snap.write(tiny_snapshot(), tmp_path / "snap")
    _edit_manifest(path, lambda m: m["relations"]["cart"].update(edges=6))
    with pytest.raises(snap.SnapshotError, match=r"relation 'cart': 5 edges .* manifest says 6"):
        snap.read(path)


def test_unknown_relation_in_manifest(tmp_path):
    path = snap.write(tiny_snapshot(), tmp_path / "snap")
    _edit_manifest(path, lambda m: m["relations"].update(view={"kind": "base"}))
    with pytest.raises(snap.SnapshotError, match=r"unknown relation 'view'.*expected relations: cart, buy"):
        snap.read(path)


def test_not_a_snapshot_says_how_to_make_one(tmp_path):
    with pytest.raises(snap.SnapshotError, match="graphrec export --dataset"):
        snap.read(tmp_path)


def test_id_map_with_missing_key_is_rejected(tmp_path):
    path = snap.write(tiny_snapshot(), tmp_path / "snap")
    with gzip.open(path / "ids-user.txt.gz", "wt") as fh:
        fh.write("u0\nu1\n")
    size = (path / "ids-user.txt.gz").stat().st_size
    _edit_manifest(path, lambda m: m["files"]["ids-user.txt.gz"].update(bytes=size))
    with pytest.raises(snap.SnapshotError, match="2 user keys but the manifest says 3"):
        snap.read(path, verify_hashes=False)


def test_index_out_of_range_names_relation_and_value():
    with pytest.raises(snap.SnapshotError, match=r"relation 'cart': item index 7 is out of range \[0, 4\)"):
        snap.build("x", Behaviors(("cart", "buy")), ["u0"], ["a", "b", "c", "d"],
                   {"cart": {"user": [0], "item": [7]}, "buy": {"user": [0], "item": [0], "split": [0]},
                    "cart_not_buy": {"user": [0], "item": [1], "holdout": [-1]}})


def test_empty_relation_is_rejected_with_the_fix():
    with pytest.raises(snap.SnapshotError, match=r"relation 'cart_not_buy' is empty.*graphrec inspect"):
        snap.build("x", Behaviors(("cart", "buy")), ["u0"], ["a"],
                   {"cart": {"user": [0], "item": [0]}, "buy": {"user": [0], "item": [0], "split": [0]},
                    "cart_not_buy": {"user": [], "item": [], "holdout": []}})


def test_duplicate_edge_is_rejected_with_keys():
    with pytest.raises(snap.SnapshotError, match=r"relation 'cart' repeats edge \(u0, b\)"):
        snap.build("x", Behaviors(("cart", "buy")), ["u0"], ["a", "b"],
                   {"cart": {"user": [0, 0], "item": [1, 1]}, "buy": {"user": [0], "item": [0], "split": [0]},
                    "cart_not_buy": {"user": [0], "item": [1], "holdout": [-1]}})


def test_unknown_id_lookup_names_the_key():
    s = tiny_snapshot()
    with pytest.raises(KeyError, match="unknown user 'nobody'"):
        s.users.index("nobody")


def test_sort_keys_numeric_when_all_digits():
    assert snap.sort_keys(["10", "9", "0", "100"]) == ["0", "9", "10", "100"]
    assert snap.sort_keys(["b", "10", "a"]) == ["10", "a", "b"]


@settings(max_examples=60, deadline=None)
@given(st.sets(st.tuples(st.integers(0, 9), st.integers(0, 6)), min_size=1, max_size=40), st.data())
def test_round_trip_keeps_every_edge(tmp_path_factory, pairs, data):
    pairs = sorted(pairs)
    splits = data.draw(st.lists(st.sampled_from([0, 1, 2]), min_size=len(pairs), max_size=len(pairs)))
    splits[0] = 0  # at least one train edge
    u, i = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    shuffle = np.random.default_rng(len(pairs)).permutation(len(pairs))
    s = snap.build("h", Behaviors(("buy",)), [f"u{k}" for k in range(10)], [f"i{k}" for k in range(7)],
                   {"buy": {"user": u[shuffle], "item": i[shuffle], "split": np.array(splits)[shuffle]}})
    path = snap.write(s, tmp_path_factory.mktemp("h") / "s")
    back = snap.read(path).relations["buy"]
    assert list(zip(back.user.tolist(), back.item.tolist(), back.split.tolist())) == \
        [(a, b, c) for (a, b), c in zip(pairs, splits)]
    shutil.rmtree(path)
