"""DMT's published JD demo data (TFRecord files of tf.train.Example) read without TensorFlow, as
graphrec ranking data: a real-format check of the ranking stage (MODELS.md §5.1; the data and its
origin: ``shared/data/jd_dmt_demo/SOURCE.md``). 474 impressions are far too few to train on; the
point is that the reader, the batches and DMT run on the real format.

Pieces
    ``load_jd_demo`` (→ ``JDData`` and an info dict), reading the files with
    ``graphrec.ranking.tfrecord`` (record framing and tf.train.Example, no TensorFlow).

What the demo holds (found by listing the features of the parsed examples)
    * ``header``: tab-separated ``expid, pin, expo_time, sid, pos, sku, uuid, click_time,
      order_id, label, reqsig, page, index``. Its ``label`` field is the label *class*
      {0 impression, 1/2 click, 4/5 order}; ``mask`` is the one-hot of that class over
      (0, 1, 2, 4, 5). The ``label`` *feature* is not the class: it is the binary click label
      (1 iff class ∈ {1, 2, 4, 5}). The reader takes the class from the header and checks it
      against ``mask`` and ``label``.
    * ``features``: 615 dense floats; ``dense_mean.txt`` / ``dense_std.txt`` (one tab-separated
      line each) z-normalize them.
    * Sequences: ``clk_seq_sku_7d_50``, ``cart_seq_sku_12m_10``, ``ord_seq_sku_12m_10`` (sku id
      strings) with ``clk_seq_ts_7d_50``, ``cart_seq_ts_12m_10``, ``ord_seq_ts_12m_10``. NB the
      order sequence of the demo holds at most 10 entries (``_12m_10``), while dmt.conf names
      ``ord_seq_*_12m_50``; the maximum lengths are taken from the feature names found. The
      ``*_ts*`` values are *ages*: seconds before the impression (clicks < 7 days = 604,800 s;
      an impression of the same request shown later has the same entries older by the difference
      of the ``expo_time`` s), and the files store every sequence oldest first. "Most recent
      first" is therefore ascending age. An empty sequence is written as the single token
      ``unknow`` (entry 0 of DMT's id tables), with ``unknow`` as its timestamp; such entries are
      dropped. (``*_seq_len_*`` features exist but do not always match the list lengths, e.g.
      ``cart_seq_len_12m_10`` = 6 for 10 entries; they are not used.)
    * Per request (``sid``) the demo has two impressions, one in each file, shown at different
      times; the sequences are per impression, and for most requests (148 of 233) they differ
      between its two impressions because the user acted in between.

Mapping onto graphrec's ranking structures
    * Tasks ``("click", "order")`` with DMT's *training* definitions (§5.1): click = class ∈
      {1, 2, 4, 5}, order = class ∈ {4, 5}. DMT's *evaluation* thresholds differ (§5.3, §5.4
      item 4: click ⇔ class ≥ 2, order ⇔ class ≥ 5): ``JDListSet.label_class`` keeps the class,
      ``dmt_eval_labels`` derives those labels.
    * Sequence behaviors ``("click", "cart", "order")``, most recent first, cut to the lengths in
      the feature names (50, 10, 10), padded with ``meta.pad``.
    * Users: distinct header ``pin`` values → 0..U-1 in order of first appearance (the anonymous
      pin ``-1`` is one user). Items: distinct sku ids, the target items first, then the sequence
      items, in file order → 0..I-1; ``I`` is the padding id.
    * Lists: a ``ListSet`` group holds rows of one user *with one set of sequences* (the model
      computes the sequences once per group). A request's rows, in file order, form one group when
      they share pin and sequences; otherwise they are split into groups of identical (pin,
      sequences), in order of first appearance (``info["split_sids"]``, ``info["split_rows"]``).
      The groups of one request are adjacent, so ``JDListSet.sid_offsets()`` gives the
      request-level groups that DMT's list metrics use (§5.3: grouped by ``sid``).
    * Position bucket from the header's ``pos`` (1-based in the demo: minimum 1): recall rank
      ``pos - 1`` through ``graphrec.ranking.data.position_bucket`` with DMT's cap of 400
      positions (``em_position = min(pos, 400)``), so ``n_positions = 10`` (the last bucket,
      "not retrieved", is unused here).
    * ``recall_score`` zeros, ``retrieved`` all True, pseudo-labels (STAN) from
      ``_pseudo_labels`` over each request's rows in row order, prior = the demo's positive rates.
    * One split, ``lists["test"]``: the demo is DMT's ``test_ord`` folder.

Per-impression dense features (the design choice)
    ``RankingData.row_dense`` gathers ``item_dense`` by item id, but the 615 JD features belong to the
    impression, not to the sku. ``JDListSet`` (a ``ListSet`` with per-row ``dense``, ``example``,
    ``label_class`` and per-group ``group_sid``; ``subset``/``retrieved_only`` carry them along) and
    ``JDData`` (a ``RankingData`` whose ``row_dense`` reads ``ls.dense[rows]``) keep everything else of
    the base classes: ``batches``, ``graphrec.ranking.train.predict`` and ``evaluate_lists`` work
    unchanged. ``RankMeta.n_item_dense = 615`` (no recall-score column), ``n_user_dense = 0``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from graphrec.errors import UserError
from graphrec.ranking.base import RankMeta
from graphrec.ranking.data import ListSet, RankingData, _group_rows, _pseudo_labels, n_positions, position_bucket
from graphrec.ranking.tfrecord import parse_example, read_tfrecord


class JDFormatError(UserError, ValueError):
    """Demo files that do not hold what DMT's JD demo holds; the message names the file."""


# ------------------------------------------------------------------------------------------ the demo

HEADER_FIELDS = ("expid", "pin", "expo_time", "sid", "pos", "sku", "uuid", "click_time", "order_id", "label",
                 "reqsig", "page", "index")
#: ``mask``'s one-hot order over the label classes.
LABEL_CLASSES = (0, 1, 2, 4, 5)
TASKS = ("click", "order")
#: DMT's training labels (MODELS.md §5.1): click = any click or order, order = class 4 or 5.
TRAIN_POSITIVE = {"click": (1, 2, 4, 5), "order": (4, 5)}
#: DMT's evaluation relevance (§5.3): click ⇔ class ≥ 2, order ⇔ class ≥ 5.
EVAL_THRESHOLD = {"click": 2, "order": 5}
SEQ_BEHAVIORS = ("click", "cart", "order")
_SEQ_PREFIX = {"click": "clk", "cart": "cart", "order": "ord"}
#: What DMT writes for an empty id list (entry 0 of its id tables).
MISSING = b"unknow"
#: DMT caps the impression position at 400 (data_feed/tfrecord_mask.py).
MAX_POSITION = 400
N_DENSE = 615


@dataclass
class JDListSet(ListSet):
    """A ListSet with what the JD impressions carry per row: the z-normalized dense features
    (``dense`` [n, 615]), the index of the source example in reading order (``example`` [n]), the
    label class (``label_class`` [n]), and per group the request (``group_sid`` [G], an index
    into ``JDData.sids``)."""

    dense: np.ndarray          # float32 [n, F]
    example: np.ndarray        # int64 [n]
    label_class: np.ndarray    # int64 [n]
    group_sid: np.ndarray      # int64 [G]

    def _extend(self, base: ListSet, rows: np.ndarray, groups: np.ndarray) -> "JDListSet":
        return JDListSet(**{f.name: getattr(base, f.name) for f in fields(ListSet)}, dense=self.dense[rows],
                         example=self.example[rows], label_class=self.label_class[rows],
                         group_sid=self.group_sid[groups])

    def subset(self, groups: np.ndarray) -> "JDListSet":
        groups = np.asarray(groups, dtype=np.int64)
        return self._extend(super().subset(groups), _group_rows(self.offsets, groups), groups)

    def retrieved_only(self) -> "JDListSet":
        return self._extend(super().retrieved_only(), np.flatnonzero(self.retrieved), np.arange(self.n_groups))

    def sid_offsets(self) -> np.ndarray:
        """Offsets of the request-level groups (one per ``sid``) over the rows, for DMT's metrics.
        Raises ValueError when a request's groups are not adjacent (e.g. after a shuffled subset)."""
        row_sid = np.repeat(self.group_sid, np.diff(self.offsets))
        if len(row_sid) == 0:
            return np.zeros(1, dtype=np.int64)
        starts = np.flatnonzero(np.concatenate([[True], row_sid[1:] != row_sid[:-1]]))
        if len(starts) != len(np.unique(row_sid)):
            raise JDFormatError("the groups of a request are not adjacent; sid_offsets needs them together")
        return np.append(starts, len(row_sid)).astype(np.int64)


def dmt_eval_labels(label_class: np.ndarray) -> np.ndarray:
    """DMT's evaluation relevance per task (§5.3; not its training labels): [n, 2] float32."""
    c = np.asarray(label_class)
    return np.stack([c >= EVAL_THRESHOLD[t] for t in TASKS], 1).astype(np.float32)


@dataclass
class JDData(RankingData):
    """RankingData over JD impressions: ``row_dense`` takes the dense features per row from the
    ``JDListSet`` instead of per item. ``pins``, ``skus``, ``sids``: the raw ids of users, items
    and requests by index."""

    pins: list[str] = None  # type: ignore[assignment]
    skus: list[str] = None  # type: ignore[assignment]
    sids: list[str] = None  # type: ignore[assignment]

    def row_dense(self, ls: ListSet, rows: np.ndarray) -> np.ndarray:
        if not isinstance(ls, JDListSet):
            raise TypeError(f"JDData needs a JDListSet (per-row dense features), got {type(ls).__name__}")
        return ls.dense[rows]


def _read_stat(path: Path) -> np.ndarray:
    try:
        return np.array([float(x) for x in path.read_text().split()], dtype=np.float64)
    except ValueError as e:
        raise JDFormatError(f"{path}: not a list of numbers ({e})") from None


def _seq_features(keys: list[str]) -> dict[str, tuple[str, str | None, int]]:
    """Per sequence behavior: (sku feature, ts feature or None, maximum length from the name)."""
    out = {}
    for b in SEQ_BEHAVIORS:
        pat = re.compile(rf"^{_SEQ_PREFIX[b]}_seq_sku_(\w+?)_(\d+)$")
        found = [k for k in keys if pat.match(k)]
        if len(found) != 1:
            raise JDFormatError(f"expected one {_SEQ_PREFIX[b]}_seq_sku_<window>_<length> feature for {b!r}, "
                             f"found {found or 'none'}")
        name = found[0]
        ts = name.replace("_seq_sku_", "_seq_ts_", 1)
        out[b] = (name, ts if ts in keys else None, int(pat.match(name).group(2)))
    return out


def _order_sequence(skus: list[bytes], ts: list[bytes] | None) -> tuple[list[bytes], bool]:
    """Most recent first: ascending age when every entry has a numeric age (ties: later in the file
    first), else the file order reversed (DMT's files store sequences oldest first). Returns the
    ordered skus and whether the ages ordered them."""
    if ts is not None and len(ts) == len(skus):
        pairs = [(s, t) for s, t in zip(skus, ts) if s != MISSING]
        try:
            ages = [float(t) for _, t in pairs]
        except ValueError:
            ages = None
        if ages is not None and all(math.isfinite(a) for a in ages):
            idx = sorted(range(len(pairs) - 1, -1, -1), key=lambda j: ages[j])
            return [pairs[j][0] for j in idx], True
    return [s for s in reversed(skus) if s != MISSING], False


def load_jd_demo(folder: str | Path, *, max_position: int = MAX_POSITION) -> tuple[JDData, dict]:
    """Every ``*.tfrecord`` of ``folder`` (sorted by name) with ``dense_mean.txt`` /
    ``dense_std.txt`` → (``JDData`` with ``lists["test"]`` a ``JDListSet``, info dict). Labels use
    DMT's training definitions (click = class ∈ {1,2,4,5}, order = class ∈ {4,5}); its evaluation
    thresholds differ (MODELS.md §5.4 item 4; ``dmt_eval_labels``). See the module docstring for
    the mapping."""
    folder = Path(folder)
    files = sorted(folder.glob("*.tfrecord"))
    if not files:
        raise JDFormatError(f"{folder}: no *.tfrecord files")
    mean, std = _read_stat(folder / "dense_mean.txt"), _read_stat(folder / "dense_std.txt")
    if len(mean) != len(std):
        raise JDFormatError(f"{folder}: dense_mean.txt has {len(mean)} values, dense_std.txt {len(std)}")

    examples: list[dict[str, list]] = []
    per_file = {}
    for f in files:
        before = len(examples)
        examples.extend(parse_example(p) for p in read_tfrecord(f))
        per_file[f.name] = len(examples) - before
    if not examples:
        raise JDFormatError(f"{folder}: the tfrecord files hold no examples")
    seq_feat = _seq_features(sorted(examples[0]))

    headers, classes, dense_raw = [], [], []
    for e, ex in enumerate(examples):
        where = f"{folder}: example {e}"
        hdr = ex.get("header")
        if not hdr or len(hdr) != 1:
            raise JDFormatError(f"{where}: expected one header string, got {hdr!r}")
        h = bytes(hdr[0]).decode("utf-8").split("\t")
        if len(h) != len(HEADER_FIELDS):
            raise JDFormatError(f"{where}: header has {len(h)} fields, expected {len(HEADER_FIELDS)} ({HEADER_FIELDS})")
        h = dict(zip(HEADER_FIELDS, h))
        cls = int(float(h["label"]))
        if cls not in LABEL_CLASSES:
            raise JDFormatError(f"{where}: header label {h['label']!r} is not one of the classes {LABEL_CLASSES}")
        onehot = [float(c == cls) for c in LABEL_CLASSES]
        if "mask" in ex and list(ex["mask"]) != onehot:
            raise JDFormatError(f"{where}: mask {ex['mask']} is not the one-hot of the header's label class {cls}")
        if "label" in ex and list(ex["label"]) != [float(cls in TRAIN_POSITIVE["click"])]:
            raise JDFormatError(f"{where}: label feature {ex['label']} is not the click label of class {cls}")
        x = ex.get("features")
        if x is None or len(x) != len(mean):
            raise JDFormatError(f"{where}: {0 if x is None else len(x)} dense features, the stats have {len(mean)}")
        headers.append(h)
        classes.append(cls)
        dense_raw.append(x)

    # z-normalized dense features; a zero std leaves the value centred
    raw = np.asarray(dense_raw, dtype=np.float64)
    dense = ((raw - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)

    # ids: users by pin, items (targets first, then sequence items), requests by sid
    pins: dict[str, int] = {}
    items: dict[bytes, int] = {}
    sids: dict[str, int] = {}
    for h in headers:
        pins.setdefault(h["pin"], len(pins))
        items.setdefault(h["sku"].encode(), len(items))
        sids.setdefault(h["sid"], len(sids))
    ordered, timed = [], {b: 0 for b in SEQ_BEHAVIORS}
    for ex in examples:
        row = []
        for b in SEQ_BEHAVIORS:
            name, ts_name, limit = seq_feat[b]
            seq, by_ts = _order_sequence(list(ex.get(name, [])), ex.get(ts_name) if ts_name else None)
            timed[b] += by_ts
            seq = seq[:limit]
            for s in seq:
                items.setdefault(s, len(items))
            row.append(tuple(items[s] for s in seq))
        ordered.append(tuple(row))
    n_items = len(items)

    # groups: per request, rows sharing (pin, sequences), in order of first appearance
    by_sid: dict[int, dict[tuple, list[int]]] = {}
    for e, h in enumerate(headers):
        by_sid.setdefault(sids[h["sid"]], {}).setdefault((h["pin"], ordered[e]), []).append(e)
    group_rows = [rows for clusters in by_sid.values() for rows in clusters.values()]
    group_sid = np.array([s for s, clusters in by_sid.items() for _ in clusters], dtype=np.int64)
    split = {s: c for s, c in by_sid.items() if len(c) > 1}
    row_order = np.array([e for rows in group_rows for e in rows], dtype=np.int64)
    sizes = np.array([len(r) for r in group_rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    first = [rows[0] for rows in group_rows]

    G = len(group_rows)
    seqs, seq_lens = [], []
    for k, b in enumerate(SEQ_BEHAVIORS):
        limit = seq_feat[b][2]
        arr = np.full((G, limit), n_items, dtype=np.int64)
        lens = np.zeros(G, dtype=np.int64)
        for g, e in enumerate(first):
            s = ordered[e][k]
            arr[g, :len(s)] = s
            lens[g] = len(s)
        seqs.append(arr)
        seq_lens.append(lens)

    label_class = np.array(classes, dtype=np.int64)[row_order]
    labels = np.stack([np.isin(label_class, TRAIN_POSITIVE[t]) for t in TASKS], 1).astype(np.float32)
    pos = np.array([int(headers[e]["pos"]) for e in row_order], dtype=np.int64)
    position = position_bucket(np.maximum(pos - 1, 0), max_position)
    target = np.array([items[headers[e]["sku"].encode()] for e in row_order], dtype=np.int64)
    n = len(row_order)
    ls = JDListSet(
        users=np.array([pins[headers[e]["pin"]] for e in first], dtype=np.int64), offsets=offsets, items=target,
        labels=labels, position=position, recall_score=np.zeros(n, np.float32), retrieved=np.ones(n, bool),
        pseudo=np.zeros_like(labels), seqs=tuple(seqs), seq_lens=tuple(seq_lens),
        dense=dense[row_order], example=row_order, label_class=label_class, group_sid=group_sid)
    ls.pseudo = _pseudo_labels(labels, ls.sid_offsets(), labels.mean(0))

    meta = RankMeta(n_users=len(pins), n_items=n_items, tasks=TASKS, seq_behaviors=SEQ_BEHAVIORS,
                    seq_lengths=tuple(seq_feat[b][2] for b in SEQ_BEHAVIORS), n_user_dense=0,
                    n_item_dense=dense.shape[1], n_positions=n_positions(max_position))

    def stats(v: np.ndarray) -> dict:
        return {"mean": round(float(v.mean()), 3), "min": int(v.min()), "max": int(v.max()),
                "empty": int((v == 0).sum())}

    row_lens = {b: np.array([len(o[k]) for o in ordered]) for k, b in enumerate(SEQ_BEHAVIORS)}
    info = {
        "source": str(folder.resolve()),
        "files": per_file,
        "examples": len(examples),
        "users": len(pins),
        "anonymous_rows": sum(h["pin"] == "-1" for h in headers),
        "items": n_items,
        "target_items": len({h["sku"] for h in headers}),
        "sids": len(sids),
        "groups": G,
        "split_sids": len(split),
        "split_rows": int(sum(len(r) for c in split.values() for r in list(c.values())[1:])),
        "rows_per_sid": {int(k): int(v) for k, v in zip(*np.unique(np.bincount(group_sid, sizes), return_counts=True))},
        "label_classes": {int(c): int((label_class == c).sum()) for c in LABEL_CLASSES},
        "positives": {t: int(labels[:, j].sum()) for j, t in enumerate(TASKS)},
        "eval_positives": {t: int(v) for t, v in zip(TASKS, dmt_eval_labels(label_class).sum(0))},
        "sequence_features": {b: {"sku": seq_feat[b][0], "ts": seq_feat[b][1], "max_len": seq_feat[b][2]}
                              for b in SEQ_BEHAVIORS},
        "sequence_length_rows": {b: stats(v) for b, v in row_lens.items()},
        "sequence_length_groups": {b: stats(v) for b, v in zip(SEQ_BEHAVIORS, seq_lens)},
        "sequences_ordered_by_timestamp": {b: timed[b] for b in SEQ_BEHAVIORS},
        "timestamps_ordered_all": all(timed[b] == len(examples) for b in SEQ_BEHAVIORS),
        "sequence_order": "most recent first: ascending age (the *_ts* values are seconds before the impression)",
        "dense_features": int(dense.shape[1]),
        "dense_zero_std": int((std == 0).sum()),
        "dense_nonfinite": int((~np.isfinite(dense)).sum()),
        "position_buckets": {int(k): int(v) for k, v in zip(*np.unique(position, return_counts=True))},
        "n_positions": meta.n_positions,
    }
    data = JDData(meta=meta, user_dense=np.zeros((len(pins), 0), np.float32),
                  item_dense=np.zeros((n_items, 0), np.float32), lists={"test": ls}, info=info,
                  pins=list(pins), skus=[s.decode("utf-8") for s in items], sids=list(sids))
    return data, info
