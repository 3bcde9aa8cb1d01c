"""One ingest, end to end: find the files, read and validate them, set bad rows aside, split, load
into Neo4j. The library behind ``graphrec ingest``; each step is a function of its own module
(readers, split, load), this one only puts them in order."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from graphrec.config import IngestConfig
from graphrec.errors import BadValue
from graphrec.ingest import load
from graphrec.ingest.readers import read_source
from graphrec.paths import state_home
from graphrec.progress import Progress
from graphrec.schema import rel_type

if TYPE_CHECKING:
    import neo4j


@dataclass
class IngestRun:
    report: load.IngestReport
    behaviors: tuple[str, ...]  # the cascade, upstream first
    rejected: int
    rejects_path: Path | None  # where the rejected rows went, when there were any
    seconds: float

    def count_rows(self) -> list[list]:
        """(count, kind, value) rows: nodes, base and derived relations, split counts."""
        base = {rel_type(b) for b in self.behaviors}
        rows = []
        for key, n in self.report.counts.items():
            kind = "node" if key in ("users", "items") else ("split" if ":" in key else
                                                             ("base" if key in base else "derived"))
            rows.append([key, kind, n])
        return rows


def ingest_dataset(dataset: str, cfg: IngestConfig, connect: Callable[[], tuple[neo4j.Driver, str | None]], *,
                   source: str | Path | None = None, mirror: str | None = None, skip_bad_rows: bool = False,
                   rejects: str | Path | None = None, home: str | Path | None = None, replace: bool = False,
                   bulk_home: Path | None = None, append: bool = False,
                   log: Callable[[str], None] = lambda s: None) -> IngestRun:
    """Ingest ``source`` (or the registered data set ``dataset``, found or fetched) as ``dataset``.
    ``connect`` opens the database only once the input has been read and validated, so bad input is
    reported without starting a server. With ``bulk_home`` the managed server of that home is
    loaded by Neo4j's offline importer (:mod:`graphrec.ingest.bulk`) instead of through Cypher. With
    ``append`` the events are added to the complete dataset of that name (:mod:`graphrec.ingest.append`)."""
    load.validate_dataset_name(dataset)
    if append:
        return _append(dataset, cfg, connect, source, skip_bad_rows, rejects, home, replace, bulk_home, log)
    test_file = cfg.test_file
    if source is None:
        from graphrec import datasets

        folder = datasets.resolve(dataset, mirror=mirror, log=log)
        source, registered_test = datasets.ingest_source(dataset, folder)
        test_file = test_file if test_file is not None else registered_test
    t0 = time.perf_counter()
    log(f"reading {source} ...")
    data = read_source(source, cfg.format, cfg.behaviors, cfg.columns, skip_bad_rows=skip_bad_rows,
                       behavior_values=cfg.behavior_values, time_format=cfg.time_format, test_file=test_file)
    rejects_path = _set_aside(data, rejects, state_home(home) / "rejected" / f"{dataset}.tsv", log)
    prepared = load.prepare(data, dataset, cfg.split)
    read_s = time.perf_counter() - t0
    log(f"read {data.raw_rows:,} interactions in {read_s:.1f} s ({data.raw_rows / max(read_s, 1e-9):,.0f} rows/s); "
        f"behaviors {data.behaviors}; test split: {prepared.split_method}")
    if bulk_home is not None:
        from graphrec.ingest.bulk import bulk_ingest

        report = bulk_ingest(prepared, bulk_home, replace=replace, progress=Progress(), log=log)
        return IngestRun(report, tuple(prepared.behaviors.order), len(data.rejected), rejects_path,
                         time.perf_counter() - t0)
    driver, database = connect()
    try:
        report = load.ingest(driver, prepared, replace=replace, batch_rows=cfg.batch_rows, progress=Progress(),
                             database=database)
    finally:
        driver.close()
    return IngestRun(report, tuple(prepared.behaviors.order), len(data.rejected), rejects_path,
                     time.perf_counter() - t0)


def _append(dataset: str, cfg: IngestConfig, connect, source, skip_bad_rows: bool, rejects, home,
            replace: bool, bulk_home, log: Callable[[str], None]) -> IngestRun:
    from graphrec.ingest.append import append, dataset_for_append

    if source is None:
        raise BadValue("--append needs --source FILE: the new events to add")
    if replace or bulk_home is not None:
        raise BadValue("--append adds to a dataset as it is; it cannot be combined with --replace or --bulk")
    if cfg.test_file is not None:
        raise BadValue("an append adds training events; drop --test (ingest.test_file), or ingest the whole log "
                       "again with --replace")
    t0 = time.perf_counter()
    driver, database = connect()
    try:
        state = dataset_for_append(driver, dataset, database)
        log(f"reading {source} (appending to {dataset!r}: {' → '.join(state['behaviors'])}) ...")
        data = read_source(source, cfg.format, list(state["behaviors"]), cfg.columns, skip_bad_rows=skip_bad_rows,
                           behavior_values=cfg.behavior_values, time_format=cfg.time_format)
        rejects_path = _set_aside(data, rejects, state_home(home) / "rejected" / f"{dataset}-append.tsv", log)
        report = append(driver, dataset, data, split=cfg.split.append, batch_rows=cfg.batch_rows,
                        progress=Progress(), database=database)
    finally:
        driver.close()
    return IngestRun(report, tuple(data.behaviors.order), len(data.rejected), rejects_path, time.perf_counter() - t0)


def _set_aside(data, rejects: str | Path | None, default: Path, log: Callable[[str], None]) -> Path | None:
    """Write the rejected rows (to ``rejects``, else ``default``); where they went, or None if none."""
    if not len(data.rejected):
        return None
    path = Path(rejects) if rejects else default
    _write_rejects(data.rejected, path)
    log(f"set aside {len(data.rejected):,} bad rows → {path}")
    return path


def _write_rejects(rejected, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        rejected.to_csv(tmp, sep="\t", index=False)
        os.replace(tmp, path)
    except OSError as exc:
        raise BadValue(f"cannot write the rejected rows to {path} ({exc.strerror}); pass --rejects FILE in a "
                       "folder you can write") from None
