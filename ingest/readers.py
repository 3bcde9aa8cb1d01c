"""Readers: source files → one normalized interaction frame.

Every reader validates the whole input before anything is written anywhere. A bad row raises
:class:`InputError` naming the file, line, value and the fix; with ``skip_bad_rows`` it is
collected in ``Interactions.rejected`` instead.

Normalized frame columns: ``user`` (str), ``item`` (str), ``behavior`` (str, a known behavior),
``ts`` (Int64, nullable; only when the source has timestamps), ``split`` (None, or "test" when the
source itself holds the test purchases), ``count`` (occurrences after de-duplication).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from graphrec.errors import UserError
from graphrec.schema import KNOWN_BEHAVIORS, Behaviors, normalize_behavior, suggest_behavior_name

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
MAX_TS_LEN = 40  # longer than any date/time or Unix time; a longer value is refused before parsing
MAX_SHOWN = 120  # characters of an offending value that an error message repeats
SKIP_HINT = "or pass --skip-bad-rows to set such rows aside in a file and load the rest"
#: A Parquet log is read and validated this many rows at a time: validating a whole 10M-row log at
#: once peaked at 4.3 GiB for a 0.74 GiB result (the string copies of every check).
PARQUET_CHUNK_ROWS = 1 << 21


class InputError(UserError, ValueError):
    """Bad input: names the file, the line (or row), the offending value and how to fix it."""

    def __init__(self, path: Path | str, line: int | None, value: object, problem: str, fix: str):
        self.path, self.line, self.value, self.problem, self.fix = Path(path), line, value, problem, fix
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        shown = repr(value)
        if len(shown) > MAX_SHOWN:  # a 20 MB field is not echoed back
            shown = f"{shown[:MAX_SHOWN]}... ({len(str(value)):,} characters)"
        super().__init__(f"{where}: {problem}: {shown}\n  fix: {fix}")


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
        keys = ["behavior", "user", "item"]
        f = self.frame if _is_sorted(self.frame, keys) else self.frame.sort_values(keys, kind="stable")
        for col in ("behavior", "user", "item", "split", "ts", "count"):
            if col in f:
                h.update(col.encode())
                h.update(pd.util.hash_pandas_object(f[col].astype("string"), index=False).to_numpy().tobytes())
        return h.hexdigest()


def _is_sorted(frame: pd.DataFrame, keys: list[str]) -> bool:
    """Whether rows are in lexicographic order of ``keys`` (Arrow comparisons, so a deduplicated log,
    already sorted, is not sorted again: 1.6 s per million rows)."""
    if len(frame) < 2:
        return True
    ahead = tied = None  # row i strictly before row i + 1 on the keys so far / equal on them
    for k in keys:
        col = pa.array(frame[k])
        a, b = col.slice(0, len(col) - 1), col.slice(1)
        if col.null_count:
            return False
        less, equal = pc.less(a, b), pc.equal(a, b)
        if tied is None:
            ahead, tied = less, equal
        else:
            ahead, tied = pc.or_(ahead, pc.and_(tied, less)), pc.and_(tied, equal)
    return pc.all(pc.or_(ahead, tied)).as_py()


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
    *,
    behavior_values: dict[str, str] | None = None,
    time_format: str | None = None,
    test_file: str | Path | None = None,
) -> Interactions:
    """Read a source into one normalized frame. ``behavior_values`` maps raw behavior values (e.g.
    the codes ``1``..``4``) onto behavior names; ``time_format`` is a strftime format for the
    timestamp column (default: Unix seconds or any common date/time); ``test_file`` holds held-out
    target-behavior rows (user, item[, timestamp]) of a long-format log."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, str(path), "source does not exist",
                         "check the path; a registered data set needs no --source (graphrec datasets list)")
    fmt = (fmt or detect_format(path)).lower()
    if fmt in PER_USER_FORMATS:
        if test_file is not None:
            raise InputError(Path(test_file), None, str(test_file), "a separate test file is for long-format logs",
                             f"a per-user folder keeps its test purchases in {PER_USER_TARGET_TEST}; drop --test")
        return read_per_user(path, behaviors, skip_bad_rows)
    if fmt in LONG_FORMATS:
        return read_long(path, fmt, behaviors, columns or {}, skip_bad_rows, behavior_values=behavior_values or {},
                         time_format=time_format, test_file=Path(test_file) if test_file is not None else None)
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
            raise InputError(folder / (f or f"{b}.txt"), None, b,
                             f"behavior {b!r} is configured but its file is missing",
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
                raise InputError(f, lineno, u, reason,
                                 "each line must be 'user_id item_id item_id ...' with integer ids, "
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


def _read_table(path: Path, fmt: str, skip_bad_rows: bool = False) -> tuple[pd.DataFrame, int, str]:
    """The raw table as strings, the number of its first data line and the word for a line."""
    if not path.is_file():
        raise InputError(path, None, str(path), f"a {fmt} source must be a file", "point --source at the log file")
    if fmt == "csv":
        sep = "\t" if ".tsv" in "".join(path.suffixes).lower() else ","
        return _read_csv(path, sep, skip_bad_rows), 2, "line"
    return _as_strings(_open_parquet(path).read().to_pandas()), 1, "row"


def _open_parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises many types for unreadable files
        raise InputError(path, None, type(exc).__name__, f"not a readable Parquet file ({exc})",
                         "write the log with pandas.DataFrame.to_parquet or pass --format csv") from None


def _as_strings(raw: pd.DataFrame) -> pd.DataFrame:
    return raw.astype({c: "string" for c in raw.columns}).fillna("")


def _behavior_order(path: Path, beh_raw: pd.Series, behaviors: list[str] | None,
                    behavior_values: dict[str, str]) -> tuple[Behaviors, dict[str, str | None]]:
    """The cascade and the map raw value -> behavior name (None: not in the cascade)."""
    named = {v: behavior_values.get(v, v) for v in beh_raw.unique()}
    if behaviors is not None:
        order = Behaviors.parse(behaviors)
    else:
        # without an order only the known behaviors are placed; other values are bad rows
        present = {normalize_behavior(n) for n in named.values()}
        order = Behaviors(tuple(b for b in KNOWN_BEHAVIORS if b in present) or ("buy",))
    mapping = {}
    for raw_value, name in named.items():
        key = str(name).strip().lower()
        b = normalize_behavior(key) or key
        mapping[raw_value] = b if b in order.order else None
    return order, mapping


def read_long(path: Path, fmt: str, behaviors: list[str] | None, columns: dict[str, str],
              skip_bad_rows: bool, *, behavior_values: dict[str, str] | None = None, time_format: str | None = None,
              test_file: Path | None = None, chunk_rows: int = PARQUET_CHUNK_ROWS) -> Interactions:
    names = {k: columns.get(k, k) for k in ("user", "item", "behavior", "timestamp")}
    if fmt == "parquet":
        frame, rejected, has_ts, order, raw_rows = _read_parquet_long(path, names, behaviors, behavior_values or {},
                                                                      skip_bad_rows, time_format, chunk_rows)
    else:
        raw, first_line, unit = _read_table(path, fmt, skip_bad_rows)
        malformed = raw.attrs.get("malformed")
        _check_columns(path, fmt, list(raw.columns), names, len(raw))
        beh_raw = raw[names["behavior"]].astype(str).str.strip()
        order, mapping = _behavior_order(path, beh_raw, behaviors, behavior_values or {})
        frame, rejected, has_ts = _long_rows(path, raw, names, beh_raw.map(mapping), beh_raw, order, first_line,
                                             unit, skip_bad_rows, time_format)
        if malformed is not None and len(malformed):
            rejected = pd.concat([malformed, rejected], ignore_index=True)
        raw_rows = len(raw) + (0 if malformed is None else len(malformed))
    files = [path]
    if test_file is not None:
        test, test_rejected, test_ts = _read_test_file(test_file, names, order, skip_bad_rows, time_format)
        frame = pd.concat([frame, test], ignore_index=True)
        rejected = pd.concat([rejected, test_rejected], ignore_index=True)
        files.append(test_file)
        raw_rows += len(test)
        has_ts = has_ts or test_ts
    if len(frame) == 0:
        raise InputError(path, None, path.name, "no valid rows remain after setting bad rows aside",
                         "see the rejected-rows file for why each row was refused")
    return Interactions(_dedupe(frame), order, files, has_test_file=test_file is not None, has_timestamps=has_ts,
                        rejected=rejected.reset_index(drop=True), raw_rows=raw_rows)


def _check_columns(path: Path, fmt: str, columns: list[str], names: dict[str, str], rows: int) -> None:
    missing = [k for k in ("user", "item", "behavior") if names[k] not in columns]
    if missing:
        raise InputError(path, 1 if fmt == "csv" else None, list(map(str, columns)),
                         f"missing column(s) {', '.join(repr(names[m]) for m in missing)}",
                         "the log needs columns user, item, behavior and optionally timestamp; rename them, or map "
                         "yours with --set ingest.columns.user=YOUR_NAME (likewise item, behavior, timestamp)")
    if rows == 0:
        raise InputError(path, None, path.name, "file has a header but no rows", "add interaction rows")


def _read_parquet_long(path: Path, names: dict[str, str], behaviors: list[str] | None,
                       behavior_values: dict[str, str], skip_bad_rows: bool, time_format: str | None,
                       chunk_rows: int) -> tuple[pd.DataFrame, pd.DataFrame, bool, Behaviors, int]:
    """A Parquet log validated ``chunk_rows`` rows at a time, exactly as if in one piece: the
    behavior order and the timestamp column's unit are taken from the whole file first, rows keep
    their numbers, and the first bad row of the file is the one reported."""
    if not path.is_file():
        raise InputError(path, None, str(path), "a parquet source must be a file", "point --source at the log file")
    pf = _open_parquet(path)
    n = pf.metadata.num_rows
    _check_columns(path, "parquet", pf.schema_arrow.names, names, n)
    distinct = pa.table({"b": pc.unique(pf.read(columns=[names["behavior"]]).column(0))}).to_pandas()
    beh_values = _as_strings(distinct)["b"].astype(str).str.strip()
    order, mapping = _behavior_order(path, beh_values, behaviors, behavior_values)
    ts_unit = None
    if names["timestamp"] in pf.schema_arrow.names and time_format is None:
        counts = np.zeros(len(TS_UNITS) + 1, dtype=np.int64)
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=[names["timestamp"]]):
            ts = _as_strings(batch.to_pandas())[names["timestamp"]].astype(str).str.strip()
            counts += _timestamp_bands(ts)[3]
        ts_unit = int(np.argmax(counts)) if counts.any() else None
    frames, rejected, has_ts, start = [], [], False, 1
    for batch in pf.iter_batches(batch_size=chunk_rows):
        raw = _as_strings(batch.to_pandas()).reset_index(drop=True)
        raw.attrs["lines"] = np.arange(start, start + len(raw))
        start += len(raw)
        beh_raw = raw[names["behavior"]].astype(str).str.strip()
        f, r, has_ts = _long_rows(path, raw, names, beh_raw.map(mapping), beh_raw, order, 1, "row", skip_bad_rows,
                                  time_format, ts_unit=ts_unit)
        frames.append(f)
        rejected.append(r)
    return (pd.concat(frames, ignore_index=True), pd.concat(rejected, ignore_index=True), has_ts, order, n)


def _read_test_file(path: Path, names: dict[str, str], order: Behaviors, skip_bad_rows: bool,
                    time_format: str | None) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """Held-out target rows: columns user, item[, timestamp] (the log's column names); every row is
    a target-behavior row, and any other column is ignored."""
    if not path.exists():
        raise InputError(path, None, str(path), "test file does not exist",
                         "check the path given with --test (or ingest.test_file)")
    raw, first_line, unit = _read_table(path, detect_format(path))  # its own format, by its suffix (strict)
    missing = [k for k in ("user", "item") if names[k] not in raw.columns]
    if missing:
        raise InputError(path, 1, list(map(str, raw.columns)), f"missing column(s) "
                         f"{', '.join(repr(names[m]) for m in missing)} in the test file",
                         "the test file needs the log's user and item columns (a timestamp column is optional)")
    if len(raw) == 0:
        raise InputError(path, None, Path(path).name, "test file has a header but no rows",
                         "add one held-out purchase per line, or drop --test")
    target = order.target
    beh_raw = pd.Series(target, index=raw.index, dtype=object)
    frame, rejected, has_ts = _long_rows(path, raw, names, beh_raw, beh_raw, order, first_line, unit,
                                         skip_bad_rows, time_format)
    frame["split"] = "test"
    return frame, rejected, has_ts


def _long_rows(path: Path, raw: pd.DataFrame, names: dict[str, str], behavior: pd.Series, beh_raw: pd.Series,
               order: Behaviors, first_line: int, unit: str, skip_bad_rows: bool, time_format: str | None,
               *, ts_unit: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """Validated rows (user, item, behavior, split[, ts]), the rejected ones, whether there are
    timestamps. ``ts_unit``: the timestamp column's unit (an index into TS_UNITS) when the rows are
    part of a larger column; by default the one most of these rows are in."""
    n = len(raw)
    line_no = raw.attrs.get("lines", np.arange(first_line, first_line + n))
    user = raw[names["user"]].astype(str).str.strip()
    item = raw[names["item"]].astype(str).str.strip()

    reasons = pd.Series(None, index=raw.index, dtype=object)
    values = pd.Series(None, index=raw.index, dtype=object)

    def flag(mask: pd.Series, value: pd.Series, reason: str) -> None:
        new = mask & reasons.isna()
        reasons[new] = reason
        values[new] = value[new]

    flag(user == "", user, "empty user id")
    flag(item == "", item, "empty item id")
    for ids, what in ((user, "user"), (item, "item")):
        # a newline in an id breaks every later line-based file (the snapshot's id lists); NUL never loads
        flag(ids.str.contains(r"[\x00-\x1f\x7f]", regex=True), ids,
             f"{what} id contains a control character (newline, tab, NUL)")
    flag(user.str.len() > MAX_ID_LEN, user, f"user id longer than {MAX_ID_LEN} characters")
    flag(item.str.len() > MAX_ID_LEN, item, f"item id longer than {MAX_ID_LEN} characters")
    flag(behavior.isna(), beh_raw, f"unknown behavior (this dataset's behaviors: {', '.join(order.order)})")
    ts = None
    has_ts = names["timestamp"] in raw.columns
    if has_ts:
        ts, ts_reason = _parse_timestamps(raw[names["timestamp"]].astype(str).str.strip(), time_format, ts_unit)
        for why in ts_reason.dropna().unique():
            flag(ts_reason == why, raw[names["timestamp"]].astype(str), why)

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
            name = suggest_behavior_name(str(values.iloc[first]))
            fix = (f"use one of {', '.join(order.order)} (aliases such as pv=view are accepted); to keep it as a "
                   f"behavior of its own, give the whole cascade in order, e.g. --behaviors "
                   f"{','.join((*order.order[:-1], name, order.target))}; or map raw values (e.g. codes) onto "
                   "names with --set 'ingest.behavior_values={1: view, 2: cart, 3: buy}'")
        elif reason.startswith("timestamp") and "unit" in reason:
            fix = "write every timestamp of the column in one unit (e.g. all Unix seconds)"
        elif reason.startswith("timestamp"):
            fix = ("use Unix seconds (or ms, µs, ns) or a date/time such as 2024-05-01T12:00:00 "
                   "or 2014-12-06 02 (hour), or give "
                   "the log's format with --set 'ingest.time_format=%d/%m/%Y %H:%M'")
        elif "longer than" in reason:
            fix = f"shorten ids to at most {MAX_ID_LEN} characters"
        elif "control character" in reason:
            fix = "remove newlines, tabs and NUL bytes from ids (a quoted CSV field can hold them)"
        raise InputError(path, int(line_no[first]), values.iloc[first], f"{unit} {int(line_no[first])}: {reason}",
                         fix + ", " + SKIP_HINT)
    keep = ~bad
    frame = pd.DataFrame({"user": user[keep].to_numpy(), "item": item[keep].to_numpy(),
                          "behavior": behavior[keep].to_numpy(), "split": None})
    if has_ts:
        frame["ts"] = ts[keep.to_numpy()]
    return frame, rejected, has_ts


def _open_text(path: Path):
    """The file's lines as bytes (gunzipped for .gz)."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _header(path: Path, sep: str) -> list[str]:
    try:
        with _open_text(path) as fh:
            first = fh.readline(1 << 20)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise InputError(path, None, path.name, f"cannot be read ({exc})",
                         "a .gz source must be gzip-compressed text; otherwise name it without .gz") from None
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(path, 1, first[:MAX_SHOWN], "the header line is not UTF-8 text",
                         "re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
    if not text.strip():
        raise InputError(path, 1, "", "file is empty",
                         "a long-format log needs a header line 'user,item,behavior[,timestamp]' and rows")
    return next(csv.reader([text], delimiter=sep))


def _read_csv(path: Path, sep: str, skip_bad_rows: bool = False) -> pd.DataFrame:
    """Every field as a string; a row with more or fewer fields than the header, or text that is
    not UTF-8, is refused with its line (pyarrow is strict where pandas pads or shifts columns).
    With ``skip_bad_rows`` such rows are set aside instead (``attrs["malformed"]``; the other
    rows keep their line numbers in ``attrs["lines"]``)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    header = _header(path, sep)
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise InputError(path, 1, dup, "the header names a column twice", "give every column its own name")
    try:
        table = pacsv.read_csv(
            path, parse_options=pacsv.ParseOptions(delimiter=sep, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        err = _diagnose(path, sep, header, exc)
        if not skip_bad_rows or err.line is None:
            raise err from None
        return _read_csv_slowly(path, sep, header)
    return table.to_pandas()


def _scan_lines(path: Path, sep: str, header: list[str]):
    """Each data line of a CSV as ``(line, fields, None, n)``, or ``(line, value, reason, n)`` for one
    that is not UTF-8 or has ``n`` fields where the header has another number (blank lines skipped)."""
    with _open_text(path) as fh:
        for no, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8-sig" if no == 1 else "utf-8")
            except UnicodeDecodeError:
                yield no, raw[:MAX_SHOWN], "not UTF-8 text", 0
                continue
            fields = next(csv.reader([text], delimiter=sep), [])
            if no == 1 or not fields:
                continue
            if len(fields) != len(header):
                yield no, text.rstrip("\r\n"), f"{len(fields)} fields, the header has {len(header)}", len(fields)
            else:
                yield no, fields, None, len(fields)


def _read_csv_slowly(path: Path, sep: str, header: list[str]) -> pd.DataFrame:
    """Row by row, setting aside rows with the wrong number of fields or bytes that are not UTF-8."""
    rows, lines, bad = [], [], []
    for no, value, reason, _ in _scan_lines(path, sep, header):
        if reason is None:
            rows.append(value)
            lines.append(no)
        else:
            bad.append((str(path), no, repr(value) if isinstance(value, bytes) else value[:MAX_SHOWN], reason))
    out = pd.DataFrame(rows, columns=header, dtype=object)
    out.attrs["lines"] = np.asarray(lines, dtype=np.int64)
    out.attrs["malformed"] = pd.DataFrame(bad, columns=["file", "line", "value", "reason"])
    return out


def _diagnose(path: Path, sep: str, header: list[str], exc: Exception) -> InputError:
    """The line and value behind a failed fast read (the slow pass runs only after a failure)."""
    try:
        for no, value, reason, n in _scan_lines(path, sep, header):
            if reason is None:
                continue
            if isinstance(value, bytes):
                return InputError(path, no, value, reason, "re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8")
            return InputError(path, no, value, reason,
                              f"every row needs the header's fields ({sep.join(header)}); "
                              + ("quote a value that holds the separator, " if n > len(header) else
                                 "an empty trailing field still needs its separator, ") + SKIP_HINT)
    except (OSError, EOFError) as err:
        return InputError(path, None, path.name, f"cannot be read ({err})",
                          "a .gz source must be gzip-compressed text; otherwise name it without .gz")
    return InputError(path, None, str(exc).splitlines()[0][:MAX_SHOWN], "malformed CSV",
                      "check quoting (a quoted field must close its quote) and the separator, " + SKIP_HINT)


#: Unix time units told apart by magnitude: seconds reach 1e11 only in the year 5138, so larger
#: values are milliseconds (to 1e14), microseconds (to 1e17) or nanoseconds (to 1e20).
TS_UNITS = ((1e11, 1, "seconds"), (1e14, 1e3, "milliseconds"), (1e17, 1e6, "microseconds"), (1e20, 1e9, "nanoseconds"))


def _usable_timestamps(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Per row, why a stripped timestamp string is refused before parsing (too long; None: fine),
    and the strings worth parsing (empty and refused ones missing)."""
    reason = pd.Series(None, index=s.index, dtype=object)
    too_long = s.str.len() > MAX_TS_LEN
    reason[too_long] = f"timestamp longer than {MAX_TS_LEN} characters"
    return reason, s.where((s != "") & ~too_long)


def _timestamp_bands(s: pd.Series) -> tuple[pd.Series, pd.Series, np.ndarray, np.ndarray]:
    """For stripped timestamp strings: the reasons found so far (too long, not finite, out of range),
    the values usable as Unix times (else NaN), each value's unit band (index into TS_UNITS) and
    how many usable values fall in each band."""
    reason, usable = _usable_timestamps(s)
    num = pd.to_numeric(usable, errors="coerce")
    numeric = num.notna()
    infinite = numeric & ~np.isfinite(num.where(numeric, 0.0))
    reason[infinite] = "timestamp is not a finite number"
    num = num.where(~infinite)
    magnitude = num.abs()
    reason[magnitude >= TS_UNITS[-1][0]] = "timestamp out of range (beyond nanoseconds since 1970)"
    num = num.where(magnitude < TS_UNITS[-1][0])
    band = np.searchsorted([u[0] for u in TS_UNITS], magnitude.where(num.notna(), 0.0), side="right")
    return reason, num, band, np.bincount(band[num.notna().to_numpy()], minlength=len(TS_UNITS) + 1)


def _parse_timestamps(s: pd.Series, time_format: str | None = None, unit: int | None = None
                      ) -> tuple[pd.arrays.IntegerArray, pd.Series]:
    """Unix time (seconds, or milliseconds, microseconds or nanoseconds, told apart by magnitude,
    one unit per column: ``unit``, else the one most values are in) or date/time strings → Int64
    seconds (UTC); empty → missing. With ``time_format`` (strftime codes, e.g. ``%Y-%m-%d %H``)
    every value must match it exactly. Returns the seconds and, per row, why its value was refused
    (None: fine)."""
    empty = s == ""
    if time_format is not None:
        reason, usable = _usable_timestamps(s)
        parsed = pd.to_datetime(usable, errors="coerce", utc=True, format=time_format, exact=True)
        out = _unix_seconds(parsed).astype("Int64")
        reason[out.isna() & ~empty & reason.isna()] = f"timestamp does not match the format {time_format!r}"
        return out.array, reason
    reason, num, band, counts = _timestamp_bands(s)
    if unit is None and counts.any():
        unit = int(np.argmax(counts))  # the mode; ties go to the smaller unit
    if unit is not None and num.notna().any():
        other = num.notna() & (band != unit)
        reason[other] = (f"timestamp in another unit than the column's {TS_UNITS[unit][2]} "
                         f"(a Unix time is in seconds, ms, µs or ns, one unit for the whole column)")
        num = num.where(~other) / TS_UNITS[unit][1]
    out = num.round().astype("Int64")
    need = num.isna() & ~empty & reason.isna()
    if need.any():
        # 'now' or 'today 12' would parse, as a different time on every run: refused
        relative = need & (~s.str.contains(r"\d", regex=True)
                           | s.str.contains(r"(?i)\b(?:now|today|yesterday|tomorrow)\b", regex=True))
        reason[relative] = "timestamp is relative (words such as 'now' or 'today' are not reproducible)"
        dated = need & ~relative
        if dated.any():
            parsed = pd.to_datetime(s[dated], errors="coerce", utc=True, format="mixed")
            out[dated] = _unix_seconds(parsed).astype("Int64").to_numpy()
    reason[out.isna() & ~empty & reason.isna()] = "timestamp is neither a number nor a date/time"
    return out.array, reason


def _unix_seconds(parsed: pd.Series) -> pd.Series:
    """UTC date/times (NaT stays missing) as whole seconds since the epoch."""
    return (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)


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
