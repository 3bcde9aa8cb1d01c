"""graphrec.ranking.jd on DMT's published JD demo impressions (shared/data/jd_dmt_demo): the TFRecord
framing and its CRCs, the tf.train.Example decoder, the mapping onto the ranking data structures,
and DMT plus the ranking metrics on the result."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import graphrec.models  # noqa: F401  (first: importing graphrec.ranking.dmt alone hits a circular import)
from graphrec import datasets
from graphrec.ranking.dmt import DMT, DMTParams
from graphrec.ranking.jd import (
    HEADER_FIELDS,
    LABEL_CLASSES,
    MISSING,
    JDListSet,
    dmt_eval_labels,
    load_jd_demo,
)
from graphrec.ranking.metrics import grouped_auc, list_metrics
from graphrec.ranking.tfrecord import crc32c, masked_crc32c, parse_example, read_tfrecord
from graphrec.ranking.train import evaluate_lists, predict

FOUND = datasets.locate("jd_dmt_demo")
DEMO = FOUND[0] if FOUND else Path("jd_dmt_demo")
FILES = ("part-r-00000.tfrecord", "part-r-00001.tfrecord")

needs_demo = pytest.mark.skipif(FOUND is None, reason="DMT's JD demo data is not on this machine "
                                "(graphrec datasets fetch jd_dmt_demo; $GRAPHREC_DATA or the cache)")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def raw():
    """Every example of the demo, parsed, in reading order, with its split header."""
    per_file = [[parse_example(p) for p in read_tfrecord(DEMO / f)] for f in FILES]
    exs = [ex for part in per_file for ex in part]
    headers = [dict(zip(HEADER_FIELDS, ex["header"][0].decode().split("\t"))) for ex in exs]
    return exs, headers, [len(part) for part in per_file]


@pytest.fixture(scope="module")
def demo():
    return load_jd_demo(DEMO)


def _record_offsets(data: bytes) -> list[int]:
    """Start of every record, walking the framing independently of the reader."""
    out, off = [], 0
    while off < len(data):
        out.append(off)
        (n,) = struct.unpack_from("<Q", data, off)
        off += 16 + n
    assert off == len(data)
    return out


# ------------------------------------------------------------------------------------------ CRC, framing

def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    # continuing a CRC over a split input gives the CRC of the whole
    assert crc32c(b"56789", crc32c(b"1234")) == 0xE3069283
    c = 0xE3069283
    assert masked_crc32c(b"123456789") == ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


@needs_demo
def test_demo_examples(raw):
    exs, headers, per_file = raw
    assert per_file == [240, 234]
    assert len(exs) == 474
    for ex, h in zip(exs, headers):
        assert len(ex["features"]) == 615 and all(math.isfinite(x) for x in ex["features"])
        assert len(ex["header"]) == 1 and len(h) == 13
        assert h["sku"] == ex["item_fea_sku"][0].decode() and h["pos"] == ex["pos"][0].decode()
        cls = int(h["label"])
        assert cls in LABEL_CLASSES
        # the header's label field is the class, the mask its one-hot; the `label` feature is not
        # the class but the binary click label (it equals the header field for classes 0 and 1 only)
        assert ex["mask"] == [float(c == cls) for c in LABEL_CLASSES]
        assert ex["label"] == [float(cls in (1, 2, 4, 5))]


@needs_demo
def test_corrupted_payload_names_the_record(tmp_path):
    data = bytearray((DEMO / FILES[0]).read_bytes())
    offs = _record_offsets(bytes(data))
    bad = tmp_path / "payload.tfrecord"
    data[offs[3] + 12 + 100] ^= 0x01  # one bit of record 3's payload
    bad.write_bytes(bytes(data))
    msg = rf"payload\.tfrecord: record 3 at byte offset {offs[3]}: bad CRC of the payload"
    with pytest.raises(ValueError, match=msg):
        list(read_tfrecord(bad))
    # the records before it came through
    it = read_tfrecord(bad)
    assert len([next(it) for _ in range(3)]) == 3


@needs_demo
def test_corrupted_length_names_the_record(tmp_path):
    data = bytearray((DEMO / FILES[0]).read_bytes())
    offs = _record_offsets(bytes(data))
    data[offs[1]] ^= 0x04
    bad = tmp_path / "length.tfrecord"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"record 1 at byte offset {offs[1]}: bad CRC of the length"):
        list(read_tfrecord(bad))


@needs_demo
def test_truncated_copy(tmp_path):
    data = (DEMO / FILES[0]).read_bytes()
    offs = _record_offsets(data)
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(data[:offs[2] + 12 + 50])  # inside record 2's payload
    msg = rf"cut\.tfrecord: record 2 at byte offset {offs[2]}: truncated record payload"
    with pytest.raises(ValueError, match=msg):
        list(read_tfrecord(cut))
    cut.write_bytes(data[:offs[2] + 5])  # inside record 2's header
    with pytest.raises(ValueError, match=rf"record 2 at byte offset {offs[2]}: truncated record header"):
        list(read_tfrecord(cut))
    cut.write_bytes(data[:offs[3] - 2])  # record 2's payload CRC cut short
    with pytest.raises(ValueError, match=rf"record 2 at byte offset {offs[2]}: truncated record: payload CRC"):
        list(read_tfrecord(cut))
    cut.write_bytes(data[:offs[2]])  # ends on a record boundary: fine
    assert len(list(read_tfrecord(cut))) == 2


# ------------------------------------------------------------------------------------------ protobuf

def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64: ten bytes of two's complement
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _ld(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _entry(name: str, feature: bytes) -> bytes:
    return _ld(1, _ld(1, name.encode()) + _ld(2, feature))


def test_parse_example_hand_encoded():
    features = (
        _entry("ids", _ld(1, _ld(1, b"ab") + _ld(1, b"") + _ld(1, b"\x00\xff")))                  # BytesList
        + _entry("w", _ld(2, _ld(1, struct.pack("<3f", 1.5, -2.25, 0.0))))                         # packed floats
        + _entry("n", _ld(3, _ld(1, _varint(3) + _varint(-1) + _varint(300) + _varint(-2**63))))  # packed int64
        + _entry("wu", _ld(2, _key(1, 5) + struct.pack("<f", 0.5) + _key(1, 5) + struct.pack("<f", -4.0)))
        + _entry("nu", _ld(3, _key(1, 0) + _varint(-7) + _key(1, 0) + _varint(2**40)))
        + _entry("empty", b"")
    )
    payload = _ld(1, features)
    assert _varint(-1) == b"\xff" * 9 + b"\x01"
    assert parse_example(payload) == {
        "ids": [b"ab", b"", b"\x00\xff"], "w": [1.5, -2.25, 0.0], "n": [3, -1, 300, -2**63],
        "wu": [0.5, -4.0], "nu": [-7, 2**40], "empty": []}
    # an unknown field (here field 5, a varint) is skipped
    assert parse_example(_key(5, 0) + _varint(9) + payload)["n"] == [3, -1, 300, -2**63]


def test_parse_example_rejects_bad_input():
    with pytest.raises(ValueError, match="wire type 3"):
        parse_example(_key(2, 3) + b"\x00")
    with pytest.raises(ValueError, match="wire type 7"):
        parse_example(_ld(1, _ld(1, _key(1, 7))))
    with pytest.raises(ValueError, match="truncated"):
        parse_example(_ld(1, _entry("x", _ld(1, _ld(1, b"abc"))))[:-2])
    with pytest.raises(ValueError, match="multiple of 4"):
        parse_example(_ld(1, _entry("x", _ld(2, _ld(1, b"\x00" * 5)))))


# ------------------------------------------------------------------------------------------ load_jd_demo

@needs_demo
def test_load_counts_and_ids(demo, raw):
    data, info = demo
    exs, headers, _ = raw
    ls = data.lists["test"]
    assert isinstance(ls, JDListSet) and list(data.lists) == ["test"]
    assert len(ls) == info["examples"] == 474 and ls.offsets[-1] == 474
    assert sorted(ls.example.tolist()) == list(range(474))  # every example exactly once
    pins = {h["pin"] for h in headers}
    assert data.meta.n_users == info["users"] == len(pins) == len(data.pins)
    assert ls.n_groups == info["groups"] and info["sids"] == len({h["sid"] for h in headers})
    sid_off = ls.sid_offsets()
    assert len(sid_off) - 1 == info["sids"] == 241
    # each request's rows are one sid group; a split request has one ListSet group per sequence set
    for a, b in zip(sid_off[:-1], sid_off[1:]):
        assert len({headers[e]["sid"] for e in ls.example[a:b]}) == 1
    assert ls.n_groups == info["sids"] + info["split_rows"]
    sizes = np.diff(ls.offsets)
    for g in range(ls.n_groups):
        rows = ls.example[ls.offsets[g]:ls.offsets[g + 1]]
        assert sizes[g] >= 1
        assert {headers[e]["pin"] for e in rows} == {data.pins[ls.users[g]]}
        assert data.sids[ls.group_sid[g]] == headers[rows[0]]["sid"]
        assert list(rows) == sorted(rows)  # file order within a group
    # targets map back to the header's sku; items cover targets and sequences, the pad is n_items
    assert [data.skus[i] for i in ls.items] == [headers[e]["sku"] for e in ls.example]
    assert data.meta.n_items == info["items"] == len(data.skus) == len(set(data.skus))
    assert data.meta.pad == data.meta.n_items
    assert data.meta.n_item_dense == 615 and data.meta.n_user_dense == 0
    assert data.meta.seq_lengths == (50, 10, 10)


@needs_demo
def test_load_labels_and_dense(demo, raw):
    data, info = demo
    exs, headers, _ = raw
    ls = data.lists["test"]
    y = ls.labels
    assert set(np.unique(y)) <= {0.0, 1.0}
    assert (y[:, 1] <= y[:, 0]).all()  # order ⊆ click
    cls = np.array([int(headers[e]["label"]) for e in ls.example])
    assert (ls.label_class == cls).all()
    assert (y[:, 0] == np.isin(cls, [1, 2, 4, 5])).all() and (y[:, 1] == np.isin(cls, [4, 5])).all()
    assert info["positives"] == {"click": int(y[:, 0].sum()), "order": int(y[:, 1].sum())}
    ev = dmt_eval_labels(ls.label_class)  # DMT's evaluation thresholds are stricter
    assert (ev <= y).all() and (ev[:, 0] == (cls >= 2)).all() and (ev[:, 1] == (cls >= 5)).all()
    # dense: z-normalized with the published stats, a zero std only centres
    mean = np.array(DEMO.joinpath("dense_mean.txt").read_text().split(), dtype=np.float64)
    std = np.array(DEMO.joinpath("dense_std.txt").read_text().split(), dtype=np.float64)
    raw_x = np.array([exs[e]["features"] for e in ls.example], dtype=np.float64)
    expect = (raw_x - mean) / np.where(std > 0, std, 1.0)
    assert ls.dense.shape == (474, 615) and np.isfinite(ls.dense).all()
    np.testing.assert_allclose(ls.dense, expect, rtol=1e-5, atol=1e-5)
    assert (std == 0).any() and info["dense_zero_std"] == int((std == 0).sum())
    # positions, recall scores, pseudo-labels
    assert ls.position.min() >= 0 and ls.position.max() < data.meta.n_positions - 1
    assert (ls.recall_score == 0).all() and ls.retrieved.all()
    first = ls.sid_offsets()[:-1]
    np.testing.assert_allclose(ls.pseudo[first], np.broadcast_to(y.mean(0), ls.pseudo[first].shape))


@needs_demo
def test_load_sequences(demo, raw):
    data, info = demo
    exs, headers, _ = raw
    ls = data.lists["test"]
    pad = data.meta.pad
    assert info["timestamps_ordered_all"]
    for b, (seq, lens) in enumerate(zip(ls.seqs, ls.seq_lens)):
        feat = info["sequence_features"][data.meta.seq_behaviors[b]]
        assert seq.shape == (ls.n_groups, data.meta.seq_lengths[b]) == (ls.n_groups, feat["max_len"])
        col = np.arange(seq.shape[1])[None, :]
        valid = col < lens[:, None]
        assert (seq[valid] < pad).all() and (seq[~valid] == pad).all()  # padding only after the valid entries
        for g in range(ls.n_groups):
            ids = [data.skus[i] for i in seq[g, :lens[g]]]
            for e in ls.example[ls.offsets[g]:ls.offsets[g + 1]]:  # every row of the group has these sequences
                skus = [s.decode() for s in exs[e][feat["sku"]] if s != MISSING]
                ages = dict(zip(skus, (int(t) for t in exs[e][feat["ts"]] if t != MISSING)))
                if len(skus) <= feat["max_len"]:
                    assert sorted(ids) == sorted(skus)
                else:  # cut to the most recent max_len entries
                    assert len(ids) == feat["max_len"] and set(ids) <= set(skus)
                    assert min(ages[s] for s in ids) <= max(ages[s] for s in set(skus) - set(ids))
                # the ts values are ages (seconds before the impression): the timestamp is
                # expo_time - age, and the sequence runs from the most recent entry down
                stamps = [int(headers[e]["expo_time"]) - ages[s] for s in ids]
                assert all(x >= y for x, y in zip(stamps, stamps[1:]))


@needs_demo
def test_batch_and_subset(demo):
    data, _ = demo
    ls = data.lists["test"]
    groups = np.array([3, 0, 7])
    batch = data.batch(ls, groups)
    rows = np.concatenate([np.arange(ls.offsets[g], ls.offsets[g + 1]) for g in groups])
    assert batch.n_rows == len(rows) and batch.item_dense.shape == (len(rows), 615)
    np.testing.assert_array_equal(batch.item_dense.numpy(), ls.dense[rows])
    np.testing.assert_array_equal(batch.items.numpy(), ls.items[rows])
    assert batch.user_dense.shape == (3, 0) and batch.seqs[0].shape == (3, 50)
    sub = ls.subset(groups)
    assert isinstance(sub, JDListSet)
    np.testing.assert_array_equal(sub.dense, ls.dense[rows])
    np.testing.assert_array_equal(sub.example, ls.example[rows])
    np.testing.assert_array_equal(sub.group_sid, ls.group_sid[groups])
    assert isinstance(ls.retrieved_only(), JDListSet) and len(ls.retrieved_only()) == len(ls)


# ------------------------------------------------------------------------------------------ DMT

@needs_demo
def test_dmt_trains_and_scores_on_the_demo(demo):
    data, _ = demo
    ls = data.lists["test"]
    torch.manual_seed(0)
    model = DMT(DMTParams(dim=16, heads=2, dropout=0.0, expert=(32,), tower=(16,), bias_dim=4,
                          bias_hidden=(8,), bias_dropout=0.0), data.meta)
    batch = data.batch(ls, np.arange(ls.n_groups))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss, parts = model.loss(batch)
        assert torch.isfinite(loss) and all(math.isfinite(v) for v in parts.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses

    probs = predict(model, data, ls, torch.device("cpu"), users_per_batch=100)
    assert probs.shape == (474, 2) and np.isfinite(probs).all()
    sid_off = ls.sid_offsets()
    ev = dmt_eval_labels(ls.label_class)
    for k in range(2):
        for labels in (ls.labels[:, k], ev[:, k]):
            res = grouped_auc(probs[:, k], labels, sid_off, undefined="one")  # DMT's convention
            assert res.groups == int((np.diff(sid_off) >= 2).sum()) and 0.0 <= res.auc <= 1.0
    skip = grouped_auc(probs[:, 0], ls.labels[:, 0], sid_off)
    assert skip.groups > 0 and 0.0 <= skip.auc <= 1.0
    score = probs.sum(1)  # DMT's serving score p_ctr + p_ctcvr
    m = list_metrics(score, ev[:, 0], sid_off, [1, 2])
    assert set(m) == {f"{n}@{k}" for k in (1, 2) for n in ("ndcg", "mrr", "precision", "hr")}
    assert all(0.0 <= v <= 1.0 for v in m.values())
    out = evaluate_lists(probs, ls, data.meta.tasks, np.ones(2, np.float32), [2])
    assert math.isfinite(out["auc_click"]) and out["users"] == ls.n_groups
