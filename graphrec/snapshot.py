"""Snapshots: a dataset's graph as compact arrays on disk, the hand-off from Neo4j to training.

A snapshot directory holds

* ``manifest.json``: format, schema version, dataset, behavior order, node and edge counts per
  relation and split, and the sha256 and size of every other file;
* ``ids-user.txt.gz`` / ``ids-item.txt.gz``: external keys, line k is the key of node k;
* ``rel-<name>.npz`` per relation (``cart``, ``buy``, ``cart_not_buy``, ...): int32 ``user`` and
  ``item`` sorted by (user, item); ``split`` (int8, target behavior), ``holdout`` (int8, derived
  relations whose downstream is the target), ``ts`` (int64) and ``count`` (int32) where present.

Only numpy is needed to read one, so training runs on hosts without Neo4j, Java or DGL. Files are
written byte-for-byte deterministically (fixed zip and gzip timestamps), so the same graph always
gives the same hashes, and a directory is replaced atomically.
"""

from __future__ import annotations

import ctypes
import errno
import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from graphrec.errors import UnknownId, UserError
from graphrec.schema import SCHEMA_VERSION, SPLITS, Behaviors

FORMAT = "graphrec-snapshot"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
NODE_TYPES = ("user", "item")

#: Codes of the int8 ``split`` / ``holdout`` columns; ``NO_HOLDOUT`` marks a derived edge that
#: exists regardless of any held-out purchase.
SPLIT_CODES: dict[str, int] = {s: k for k, s in enumerate(SPLITS)}
NO_HOLDOUT = -1
#: ``ts`` of an edge whose source row had no timestamp.
NO_TS = np.iinfo(np.int64).min
_COLUMNS = {"user": np.int32, "item": np.int32, "split": np.int8, "holdout": np.int8,
            "ts": np.int64, "count": np.int32}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class SnapshotError(UserError, ValueError):
    """A snapshot is missing, corrupt, or inconsistent with its manifest."""


@dataclass(frozen=True)
class IdMap:
    """External keys ↔ contiguous node ids of one node type."""

    node_type: str
    keys: np.ndarray  # dtype object (str); keys[k] is the key of node k
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self._index:
            self._index.update((k, i) for i, k in enumerate(self.keys.tolist()))
        if len(self._index) != len(self.keys):
            raise SnapshotError(f"the {self.node_type} id map repeats a key; re-export the snapshot")

    def __len__(self) -> int:
        return len(self.keys)

    def index(self, key: str) -> int:
        try:
            return self._index[str(key)]
        except KeyError:
            raise UnknownId(f"unknown {self.node_type} {key!r}: not in this dataset "
                           f"({len(self):,} {self.node_type}s; keys look like {self.keys[0]!r})") from None

    def indices(self, keys: Iterable[str]) -> np.ndarray:
        return np.fromiter((self.index(k) for k in keys), dtype=np.int64)

    def key(self, index: int) -> str:
        return str(self.keys[index])


@dataclass(frozen=True)
class Relation:
    """One relation's edges, sorted by (user, item), unique."""

    name: str
    kind: str  # "base" | "derived"
    user: np.ndarray
    item: np.ndarray
    split: np.ndarray | None = None    # target behavior: SPLIT_CODES
    holdout: np.ndarray | None = None  # derived with the target downstream: SPLIT_CODES or NO_HOLDOUT
    ts: np.ndarray | None = None
    count: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.user)

    def columns(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in _COLUMNS if getattr(self, k) is not None}

    def split_counts(self) -> dict[str, int]:
        """Edges per split (target relation) or per holdout split (derived relation)."""
        codes = self.split if self.split is not None else self.holdout
        if codes is None:
            return {}
        return {s: int((codes == c).sum()) for s, c in SPLIT_CODES.items() if (codes == c).any()}

    def select(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(user, item) of the edges in one split of the target relation."""
        if self.split is None:
            raise SnapshotError(f"relation {self.name!r} has no splits; only the target behavior has them")
        mask = self.split == SPLIT_CODES[split]
        return self.user[mask], self.item[mask]


@dataclass(frozen=True)
class Snapshot:
    dataset: str
    behaviors: Behaviors
    users: IdMap
    items: IdMap
    relations: dict[str, Relation]
    source: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def target(self) -> Relation:
        return self.relations[self.behaviors.target]

    def train(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Training edges of a relation: all of a non-target relation, the train split of the target."""
        rel = self.relations[name]
        return rel.select("train") if rel.split is not None else (rel.user, rel.item)

    def counts(self) -> dict[str, int]:
        """The same keys as the ingest's count verification (users, items, TYPE, TARGET:split)."""
        out = {"users": self.n_users, "items": self.n_items}
        for rel in self.relations.values():
            out[rel.name.upper()] = len(rel)
            if rel.split is not None:
                for s, n in rel.split_counts().items():
                    out[f"{rel.name.upper()}:{s}"] = n
        return out


def relation_names(behaviors: Behaviors) -> list[tuple[str, str]]:
    """(name, kind) of every relation of a dataset, base behaviors in cascade order, then derived."""
    return [(b, "base") for b in behaviors.order] + [(d.name, "derived") for d in behaviors.derived]


# ------------------------------------------------------------------------------------------- writing


def write(snapshot: Snapshot, out: str | Path, *, overwrite: bool = True) -> Path:
    """Write ``snapshot`` to directory ``out`` atomically; returns the path."""
    out = Path(out)
    if out.exists() and not (out / MANIFEST).is_file():
        raise SnapshotError(f"{out} exists and is not a snapshot; choose another --out or remove it")
    if out.exists() and not overwrite:
        raise SnapshotError(f"snapshot {out} exists; pass --force to replace it")
    _validate_arrays(snapshot)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.*"):  # left by a write that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a snapshot is meant to be shared and copied
    try:
        files: dict[str, dict] = {}
        for node_type, idmap in (("user", snapshot.users), ("item", snapshot.items)):
            name = f"ids-{node_type}.txt.gz"
            _write_keys(tmp / name, idmap.keys)
            files[name] = _file_entry(tmp / name)
        relations = {}
        for rel in snapshot.relations.values():
            name = f"rel-{rel.name}.npz"
            _write_npz(tmp / name, rel.columns())
            files[name] = _file_entry(tmp / name)
            relations[rel.name] = {"kind": rel.kind, "file": name, "edges": len(rel),
                                   "columns": list(rel.columns()), "splits": rel.split_counts()}
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "schema_version": SCHEMA_VERSION,
            "dataset": snapshot.dataset, "behaviors": list(snapshot.behaviors.order),
            "target": snapshot.behaviors.target,
            "nodes": {"user": snapshot.n_users, "item": snapshot.n_items},
            "relations": relations, "files": files, "source": snapshot.source,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if not out.exists():
            os.replace(tmp, out)
        elif exchange(tmp, out):  # one step: readers see the old snapshot or the new, never neither
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # no renameat2 here: two renames, with a moment in which `out` is missing
            old = out.with_name(f".{out.name}.old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 with RENAME_EXCHANGE); False where the
    system call or the file system does not support it."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _write_keys(path: Path, keys: np.ndarray) -> None:
    text = "".join(f"{k}\n" for k in keys.tolist()).encode("utf-8")
    with open(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
        gz.write(text)


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    # np.savez stamps the current time into the zip; fixed timestamps keep hashes reproducible.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=6)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_entry(path: Path) -> dict:
    return {"sha256": _sha256(path), "bytes": path.stat().st_size}


# ------------------------------------------------------------------------------------------- reading


def read(path: str | Path, *, verify_hashes: bool = True) -> Snapshot:
    """Read and validate a snapshot directory. Raises SnapshotError naming the problem and the fix."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise SnapshotError(f"{path} is not a snapshot (no {MANIFEST}); create one with "
                            f"`graphrec export --dataset NAME --out {path}`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{manifest_path}: not valid JSON ({exc}); re-export the snapshot") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise SnapshotError(f"{manifest_path}: format {manifest.get('format')!r} version "
                            f"{manifest.get('format_version')!r}, expected {FORMAT!r} version {FORMAT_VERSION}; "
                            "re-export it with this graphrec")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise SnapshotError(f"{manifest_path}: schema version {manifest.get('schema_version')} but this graphrec "
                            f"uses {SCHEMA_VERSION}; re-export the snapshot")
    try:
        behaviors = Behaviors(tuple(manifest["behaviors"]))
    except (KeyError, ValueError) as exc:
        raise SnapshotError(f"{manifest_path}: bad behavior list: {exc}") from None

    files = manifest.get("files", {})
    for name, entry in files.items():
        f = path / name
        if not f.is_file():
            raise SnapshotError(f"{f}: listed in the manifest but missing; re-export the snapshot")
        if f.stat().st_size != entry["bytes"]:
            raise SnapshotError(f"{f}: {f.stat().st_size:,} bytes, the manifest says {entry['bytes']:,}; "
                                "the file is truncated or was changed: re-export or re-copy the snapshot")
        if verify_hashes and _sha256(f) != entry["sha256"]:
            raise SnapshotError(f"{f}: sha256 does not match the manifest ({entry['sha256'][:12]}…); the file is "
                                "corrupt or was changed: re-export or re-copy the snapshot")

    users = _read_ids(path, manifest, "user")
    items = _read_ids(path, manifest, "item")
    expected = dict(relation_names(behaviors))
    listed = manifest.get("relations", {})
    unknown = sorted(set(listed) - set(expected))
    if unknown:
        raise SnapshotError(f"{manifest_path}: unknown relation {unknown[0]!r} for behaviors {behaviors}; "
                            f"expected relations: {', '.join(expected)}")
    relations = {}
    for name, kind in expected.items():
        if name not in listed:
            raise SnapshotError(f"{manifest_path}: relation {name!r} is missing; re-export the snapshot")
        entry = listed[name]
        if entry.get("file") not in files:
            raise SnapshotError(f"{manifest_path}: relation {name!r} names file {entry.get('file')!r} which has no "
                                "hash entry; re-export the snapshot")
        with np.load(path / entry["file"], allow_pickle=False) as z:
            cols = {k[:-4] if k.endswith(".npy") else k: z[k] for k in z.files}
        unexpected = set(cols) - set(_COLUMNS)
        if unexpected:
            raise SnapshotError(f"relation {name!r}: unknown column {sorted(unexpected)[0]!r} in {entry['file']}")
        rel = Relation(name=name, kind=kind, **cols)
        if len(rel) != entry.get("edges"):
            raise SnapshotError(f"relation {name!r}: {len(rel):,} edges in {entry['file']} but the manifest says "
                                f"{entry.get('edges'):,}; re-export the snapshot")
        if rel.split_counts() != entry.get("splits", {}):
            raise SnapshotError(f"relation {name!r}: split counts {rel.split_counts()} differ from the manifest's "
                                f"{entry.get('splits')}; re-export the snapshot")
        relations[name] = rel
    snap = Snapshot(manifest["dataset"], behaviors, users, items, relations, manifest.get("source", {}), path)
    _validate_arrays(snap)
    return snap


def _read_ids(path: Path, manifest: dict, node_type: str) -> IdMap:
    f = path / f"ids-{node_type}.txt.gz"
    if f.name not in manifest.get("files", {}):
        raise SnapshotError(f"{path / MANIFEST}: no entry for {f.name}; re-export the snapshot")
    with gzip.open(f, "rt", encoding="utf-8") as fh:
        keys = fh.read().split("\n")[:-1]
    n = manifest.get("nodes", {}).get(node_type)
    if len(keys) != n:
        raise SnapshotError(f"{f}: {len(keys):,} {node_type} keys but the manifest says {n}; re-export the snapshot")
    return IdMap(node_type, np.array(keys, dtype=object))


def _validate_arrays(snap: Snapshot) -> None:
    """Types, bounds, uniqueness, order and emptiness of every relation."""
    bounds = {"user": snap.n_users, "item": snap.n_items}
    for rel in snap.relations.values():
        where = f"relation {rel.name!r}"
        for col, arr in rel.columns().items():
            if arr.dtype != _COLUMNS[col] or arr.ndim != 1 or len(arr) != len(rel):
                raise SnapshotError(f"{where}: column {col!r} is {arr.dtype}[{arr.shape}], expected "
                                    f"{np.dtype(_COLUMNS[col])}[{len(rel)}]; re-export the snapshot")
        if len(rel) == 0:
            raise SnapshotError(f"{where} is empty: no {rel.name} edges were exported. A model cannot learn from "
                                "an empty relation; check the dataset with `graphrec inspect`, or drop this "
                                "behavior from the dataset's behavior list and ingest again")
        for col in ("user", "item"):
            arr = getattr(rel, col)
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi >= bounds[col]:
                bad = lo if lo < 0 else hi
                raise SnapshotError(f"{where}: {col} index {bad} is out of range [0, {bounds[col]}); the id map and "
                                    "the edges disagree: re-export the snapshot")
        key = rel.user.astype(np.int64) * snap.n_items + rel.item
        step = np.diff(key)
        if (step <= 0).any():
            k = int(np.flatnonzero(step <= 0)[0]) + 1
            what = "repeats" if step[k - 1] == 0 else "is out of (user, item) order at"
            raise SnapshotError(f"{where} {what} edge ({snap.users.key(rel.user[k])}, {snap.items.key(rel.item[k])}) "
                                f"at row {k}; re-export the snapshot")
        for col, allowed in (("split", set(SPLIT_CODES.values())),
                             ("holdout", set(SPLIT_CODES.values()) | {NO_HOLDOUT})):
            arr = getattr(rel, col)
            if arr is not None:
                bad = set(np.unique(arr).tolist()) - allowed
                if bad:
                    raise SnapshotError(f"{where}: unknown {col} code {sorted(bad)[0]}; allowed {sorted(allowed)}")
    target = snap.relations.get(snap.behaviors.target)
    if target is None or target.split is None:
        raise SnapshotError(f"the target relation {snap.behaviors.target!r} has no split column; re-export")
    if not (target.split == SPLIT_CODES["train"]).any():
        raise SnapshotError(f"the target relation {snap.behaviors.target!r} has no train edges")


def build(dataset: str, behaviors: Behaviors, user_keys: Iterable[str], item_keys: Iterable[str],
          edges: Mapping[str, Mapping[str, np.ndarray]], source: dict | None = None) -> Snapshot:
    """A validated Snapshot from key lists and per-relation columns (any order; sorted here)."""
    users = IdMap("user", np.array(list(user_keys), dtype=object))
    items = IdMap("item", np.array(list(item_keys), dtype=object))
    relations = {}
    for name, kind in relation_names(behaviors):
        if name not in edges:
            raise SnapshotError(f"relation {name!r} is missing")
        cols = {k: np.asarray(v).astype(_COLUMNS[k], copy=False) for k, v in edges[name].items()}
        order = np.lexsort((cols["item"], cols["user"]))
        relations[name] = Relation(name, kind, **{k: v[order] for k, v in cols.items()})
    snap = Snapshot(dataset, behaviors, users, items, relations, source or {})
    _validate_arrays(snap)
    return snap


def sort_keys(keys: Iterable[str]) -> list[str]:
    """Numeric order when every key is a non-negative decimal integer (so the public data sets keep
    their own ids as node ids), else lexicographic."""
    keys = list(keys)
    if keys and all(k.isdecimal() for k in keys):
        return sorted(keys, key=lambda k: (len(k.lstrip("0")), k.lstrip("0"), k))
    return sorted(keys)


__all__ = ["Snapshot", "Relation", "IdMap", "SnapshotError", "read", "write", "build", "sort_keys",
           "relation_names", "SPLIT_CODES", "NO_HOLDOUT", "NO_TS"]
