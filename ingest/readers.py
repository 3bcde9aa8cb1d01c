"""Readers: source files → one normalized interaction frame.

Every reader validates the whole input before anything is written anywhere. A bad row raises
:class:`InputError` naming the file, line, value and the fix; with ``skip_bad_rows`` it is
collected in ``Interactions.rejected`` instead.

Normalized frame columns: ``user`` (str), ``item`` (str), ``behavior`` (str, a known behavior),
``ts`` (Int64, nullable; only when the source has timestamps), ``split`` (None, or "test" when the
source itself holds the test purchases), ``count`` (occurrences after de-duplication).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from graphrec.schema import KNOWN_BEHAVIORS, Behaviors, normalize_behavior

#: Per-user text format of the GHCF / HPMR data sets (Beibei, Taobao, Tmall): one line per user,
#: ``user item item ...``. Behavior → file name(s) in the folder; the target's train/test files.
PER_USER_FILES: dict[str, str] = {
    "view": "pv.txt",
    "click": "click.txt",
    "collect": "collect.txt",
    "cart": "cart.txt",
}
PER_USER_TARGET_TRAIN = "train.txt"
PER_USER_TARGET_TEST = "test.txt"
PER_USER_FORMATS = ("ghcf", "beibei", "taobao", "tmall")
LONG_FORMATS = ("csv", "parquet")
FORMATS = PER_USER_FORMATS + LONG_FORMATS
MAX_ID_LEN = 256
SKIP_HINT = "or pass --skip-bad-rows to set such rows aside in a file and load the rest"


class InputError(ValueError):
    """Bad input: names the file, the line (or row), the offending value and how to fix it."""

    def __init__(self, path: Path | str, line: int | None, value: object, problem: str, fix: str):
        self.path, self.line, self.value, self.problem, self.fix = Path(path), line, value, problem, fix
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {problem}: {value!r}\n  fix: {fix}")


@dataclass
class Interactions:
    frame: pd.DataFrame
    behaviors: Behaviors
    files: list[Path]
    has_test_file: bool
    has_timestamps: bool
    rejected: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["file", "line", "value", "reason"]))
    raw_rows: int = 0

    def fingerprint(self) -> str:
        """sha256 over the normalized content (order-independent), so equal data → equal print."""
        h = hashlib.sha256()
        h.update(",".join(self.behaviors.order).encode())
        f = self.frame.sort_values(["behavior", "user", "item"], kind="stable")
        for col in ("behavior", "user", "item", "split", "ts", "count"):
            if col in f:
                h.update(col.encode())
                h.update(pd.util.hash_pandas_object(f[col].astype("string"), index=False).to_numpy().tobytes())
        return h.hexdigest()


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "ghcf"
    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix.endswith(".parquet") or suffix.endswith(".pq"):
        return "parquet"
    if any(suffix.endswith(s) for s in (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt")):
        return "csv"
    raise InputError(path, None, path.name, "cannot tell the format of this source",
                     f"pass --format with one of {', '.join(FORMATS)}")


def read_source(
    path: str | Path,
    fmt: str | None = None,
    behaviors: list[str] | None = None,
    columns: dict[str, str] | None = None,
    skip_bad_rows: bool = False,
) -> Interactions:
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, str(path), "source does not exist",
                         "check the path; for the bundled data use e.g. ../shared/data/beibei")
    fmt = (fmt or detect_format(path)).lower()
    if fmt in PER_USER_FORMATS:
        return read_per_user(path, behaviors, skip_bad_rows)
    if fmt in LONG_FORMATS:
        return read_long(path, fmt, behaviors, columns or {}, skip_bad_rows)
    raise InputError(path, None, fmt, "unknown format", f"use one of {', '.join(FORMATS)}")


# ---------------------------------------------------------------------------------------------
# Per-user text folders (GHCF / HPMR layout)


def _per_user_behaviors(folder: Path, behaviors: list[str] | None) -> Behaviors:
    if behaviors is None:
        present = [b for b in KNOWN_BEHAVIORS if b in PER_USER_FILES and (folder / PER_USER_FILES[b]).is_file()]
        return Behaviors(tuple(present) + ("buy",))
    order = Behaviors.parse(behaviors)
    if order.target != "buy":
        raise InputError(folder, None, list(order.order), "in a per-user text folder the target behavior is buy "
                         f"({PER_USER_TARGET_TRAIN}/{PER_USER_TARGET_TEST})", "end the behavior order with buy")
    for b in order.order[:-1]:
        f = PER_USER_FILES.get(b)
        if f is None or not (folder / f).is_file():
            raise InputError(folder / (f or f"{b}.txt"), None, b, f"behavior {b!r} is configured but its file is missing",
                             f"add {f or b + '.txt'} to {folder}, or drop {b!r} from the behavior order")
    return order


def read_per_user(folder: Path, behaviors: list[str] | None = None, skip_bad_rows: bool = False) -> Interactions:
    if not folder.is_dir():
        raise InputError(folder, None, str(folder), "a per-user text source must be a folder",
                         f"point --source at the folder holding {PER_USER_TARGET_TRAIN}")
    order = _per_user_behaviors(folder, behaviors)
    train = folder / PER_USER_TARGET_TRAIN
    if not train.is_file():
        raise InputError(train, None, train.name, "the target behavior's train file is missing",
                         f"a per-user folder needs {PER_USER_TARGET_TRAIN} (and optionally {PER_USER_TARGET_TEST})")
    test = folder / PER_USER_TARGET_TEST
    plan = [(PER_USER_FILES[b], b, None) for b in order.order[:-1]]
    plan += [(PER_USER_TARGET_TRAIN, "buy", None)]
    if test.is_file():
        plan += [(PER_USER_TARGET_TEST, "buy", "test")]
    frames, rejected, files, raw = [], [], [], 0
    for fname, behavior, split in plan:
        f = folder / fname
        users, items, bad = _parse_per_user_file(f, skip_bad_rows)
        rejected.extend(bad)
        raw += len(items)
        frames.append(pd.DataFrame({"user": users, "item": items, "behavior": behavior, "split": split}))
        files.append(f)
    frame = pd.concat(frames, ignore_index=True)
    rej = pd.DataFrame(rejected, columns=["file", "line", "value", "reason"])
    return Interactions(_dedupe(frame), order, files, has_test_file=test.is_file(), has_timestamps=False,
                        rejected=rej, raw_rows=raw)


def _parse_per_user_file(f: Path, skip_bad_rows: bool) -> tuple[list[str], list[str], list[tuple]]:
    users: list[str] = []
    items: list[str] = []
    bad: list[tuple] = []
    n_lines = 0
    with open(f, "r", encoding="utf-8", errors="strict") as fh:
        try:
            lines = fh.read().splitlines()
        except UnicodeDecodeError as exc:
            raise InputError(f, None, repr(exc.object[max(0, exc.start - 10):exc.end + 10]), "not UTF-8 text",
                             "save the file as UTF-8 text: one line per user, 'user item item ...'") from None
    for lineno, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        n_lines += 1
        u = tokens[0]
        if not (u.isascii() and u.isdigit()):
            reason = "user id is not a non-negative integer"
            if not skip_bad_rows:
                raise InputError(f, lineno, u, reason, "each line must be 'user_id item_id item_id ...' with integer ids, "
                                 + SKIP_HINT)
            bad.append((str(f), lineno, u, reason))
            continue
        u = str(int(u))
        for tok in tokens[1:]:
            if tok.isascii() and tok.isdigit():
                users.append(u)
                items.append(str(int(tok)))
            else:
                reason = "item id is not a non-negative integer"
                if not skip_bad_rows:
                    raise InputError(f, lineno, tok, reason,
                                     "item ids in this format are integers separated by single spaces, " + SKIP_HINT)
                bad.append((str(f), lineno, tok, reason))
    if n_lines == 0:
        raise InputError(f, None, f.name, "file is empty",
                         "each line must be 'user_id item_id item_id ...'; remove the file if the behavior is absent")
    return users, items, bad


# ---------------------------------------------------------------------------------------------
# Long-format logs: one row per interaction, columns user, item, behavior[, timestamp]


def read_long(path: Path, fmt: str, behaviors: list[str] | None, columns: dict[str, str],
              skip_bad_rows: bool) -> Interactions:
    if not path.is_file():
        raise InputError(path, None, str(path), f"a {fmt} source must be a file", "point --source at the log file")
    names = {k: columns.get(k, k) for k in ("user", "item", "behavior", "timestamp")}
    if fmt == "csv":
        sep = "\t" if ".tsv" in "".join(path.suffixes).lower() else ","
        try:
            raw = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False)
        except pd.errors.EmptyDataError:
            raise InputError(path, 1, "", "file is empty",
                             "a long-format log needs a header line 'user,item,behavior[,timestamp]' and rows") from None
        except pd.errors.ParserError as exc:
            line = _parser_error_line(str(exc))
            raise InputError(path, line, str(exc).strip().splitlines()[-1], "malformed CSV row",
                             "every row needs the same number of fields as the header, " + SKIP_HINT) from None
        first_line, unit = 2, "line"
    else:
        try:
            raw = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for unreadable files
            raise InputError(path, None, type(exc).__name__, f"not a readable Parquet file ({exc})",
                             "write the log with pandas.DataFrame.to_parquet or pass --format csv") from None
        raw = raw.astype({c: "string" for c in raw.columns}).fillna("")
        first_line, unit = 1, "row"
    missing = [k for k in ("user", "item", "behavior") if names[k] not in raw.columns]
    if missing:
        raise InputError(path, 1 if fmt == "csv" else None, list(map(str, raw.columns)),
                         f"missing column(s) {', '.join(repr(names[m]) for m in missing)}",
                         "the log needs columns user, item, behavior and optionally timestamp; rename them, or map "
                         "yours with --set ingest.columns.user=YOUR_NAME (likewise item, behavior, timestamp)")
    if len(raw) == 0:
        raise InputError(path, None, path.name, "file has a header but no rows", "add interaction rows")
    n = len(raw)
    line_no = np.arange(first_line, first_line + n)
    user = raw[names["user"]].astype(str).str.strip()
    item = raw[names["item"]].astype(str).str.strip()
    beh_raw = raw[names["behavior"]].astype(str).str.strip()
    if behaviors is not None:
        order = Behaviors.parse(behaviors)
    else:
        present = {normalize_behavior(v) for v in beh_raw.unique()} - {None}
        order = Behaviors(tuple(b for b in KNOWN_BEHAVIORS if b in present) or ("buy",))
    mapping = {v: normalize_behavior(v) for v in beh_raw.unique()}
    mapping = {k: (v if v in order.order else None) for k, v in mapping.items()}
    behavior = beh_raw.map(mapping)

    reasons = pd.Series(None, index=raw.index, dtype=object)
    values = pd.Series(None, index=raw.index, dtype=object)

    def flag(mask: pd.Series, value: pd.Series, reason: str) -> None:
        new = mask & reasons.isna()
        reasons[new] = reason
        values[new] = value[new]

    flag(user == "", user, "empty user id")
    flag(item == "", item, "empty item id")
    flag(user.str.len() > MAX_ID_LEN, user, f"user id longer than {MAX_ID_LEN} characters")
    flag(item.str.len() > MAX_ID_LEN, item, f"item id longer than {MAX_ID_LEN} characters")
    flag(behavior.isna(), beh_raw, f"unknown behavior (this dataset's behaviors: {', '.join(order.order)})")
    ts = None
    has_ts = names["timestamp"] in raw.columns
    if has_ts:
        ts, bad_ts = _parse_timestamps(raw[names["timestamp"]].astype(str).str.strip())
        flag(bad_ts, raw[names["timestamp"]].astype(str), "timestamp is neither a number nor a date/time")

    bad = reasons.notna()
    rejected = pd.DataFrame({"file": str(path), "line": line_no[bad.to_numpy()], "value": values[bad].astype(str),
                             "reason": reasons[bad]})
    if bad.any() and not skip_bad_rows:
        first = int(np.flatnonzero(bad.to_numpy())[0])
        reason = reasons.iloc[first]
        fix = {
            "empty user id": "every row needs a user id",
            "empty item id": "every row needs an item id",
        }.get(reason, "")
        if reason.startswith("unknown behavior"):
            fix = (f"use one of {', '.join(order.order)} (aliases such as pv=view are accepted), or add the behavior "
                   "to the order with --behaviors view,cart,buy")
        elif reason.startswith("timestamp"):
            fix = "use Unix seconds or an ISO date/time such as 2024-05-01T12:00:00"
        elif "longer than" in reason:
            fix = f"shorten ids to at most {MAX_ID_LEN} characters"
        raise InputError(path, int(line_no[first]), values.iloc[first], f"{unit} {int(line_no[first])}: {reason}",
                         fix + ", " + SKIP_HINT)
    keep = ~bad
    frame = pd.DataFrame({"user": user[keep].to_numpy(), "item": item[keep].to_numpy(),
                          "behavior": behavior[keep].to_numpy(), "split": None})
    if has_ts:
        frame["ts"] = ts[keep.to_numpy()]
    if len(frame) == 0:
        raise InputError(path, None, path.name, "no valid rows remain after setting bad rows aside",
                         "see the rejected-rows file for why each row was refused")
    return Interactions(_dedupe(frame), order, [path], has_test_file=False, has_timestamps=has_ts,
                        rejected=rejected.reset_index(drop=True), raw_rows=n)


def _parser_error_line(msg: str) -> int | None:
    m = re.search(r"line (\d+)", msg)
    return int(m.group(1)) if m else None


def _parse_timestamps(s: pd.Series) -> tuple[pd.arrays.IntegerArray, pd.Series]:
    """Unix seconds (int/float strings) or date/time strings → Int64 seconds; empty → missing."""
    empty = s == ""
    num = pd.to_numeric(s.where(~empty), errors="coerce")
    out = num.round().astype("Int64")
    need = num.isna() & ~empty
    if need.any():
        parsed = pd.to_datetime(s[need], errors="coerce", utc=True, format="mixed")
        secs = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        out[need] = secs.astype("Int64")
    bad = out.isna() & ~empty
    return out.array, bad


def _dedupe(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (behavior, user, item): ``count`` occurrences, earliest ``ts``, test wins over train."""
    keys = ["behavior", "user", "item"]
    agg: dict[str, tuple[str, str]] = {"count": ("user", "size")}
    if "ts" in frame:
        agg["ts"] = ("ts", "min")
    frame = frame.assign(_test=frame["split"].eq("test"))
    agg["_test"] = ("_test", "max")
    out = frame.groupby(keys, sort=True, observed=True).agg(**agg).reset_index()
    out["split"] = np.where(out.pop("_test"), "test", None)
    out["count"] = out["count"].astype("int32")
    return out
