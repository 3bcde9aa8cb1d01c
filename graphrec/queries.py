"""Named, parameterized Cypher queries from the ``cypher/`` folder.

Each ``NAME.cypher`` starts with header comments::

    // description: what it returns
    // params: dataset:str, limit:int=10

Parameters are typed (str, int, float, bool) and passed as Cypher parameters, never formatted
into the text.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import neo4j

from graphrec.errors import BadValue, UserError
from graphrec.progress import format_table


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


#: Parameter types of the query files; ``count`` is a whole number >= 0 (e.g. for LIMIT).
_TYPES = {"str": str, "int": int, "count": _count, "float": float, "bool": bool}


class QueryError(UserError, ValueError):
    """A query that does not exist, or parameters that do not fit it."""


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any = None
    required: bool = True


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    params: tuple[Param, ...]
    text: str
    path: Path

    def bind(self, raw: dict[str, str]) -> dict[str, Any]:
        """Typed parameter values from ``--param k=v`` strings (defaults filled in)."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise QueryError(f"query {self.name!r} has no parameter {', '.join(unknown)}; "
                             f"its parameters: {self.signature() or 'none'}")
        out = {}
        for p in self.params:
            if p.name in raw:
                out[p.name] = _convert(p, raw[p.name], self.name)
            elif p.required:
                raise QueryError(f"query {self.name!r} needs --param {p.name}=... ({p.type}); "
                                 f"its parameters: {self.signature()}")
            else:
                out[p.name] = p.default
        return out

    def signature(self) -> str:
        return ", ".join(f"{p.name}:{p.type}" + ("" if p.required else f"={p.default}") for p in self.params)


def _convert(p: Param, value: str, query: str) -> Any:
    try:
        if p.type == "bool":
            if value.lower() not in ("true", "false", "1", "0"):
                raise BadValue(value)
            return value.lower() in ("true", "1")
        return _TYPES[p.type](value)
    except ValueError:
        what = "a whole number >= 0" if p.type == "count" else p.type
        example = {"count": "10", "int": "1", "float": "0.5", "bool": "true"}.get(p.type, "text")
        raise QueryError(f"query {query!r}: parameter {p.name} must be {what}, got {value!r}; "
                         f"fix: e.g. --param {p.name}={example}") from None


def cypher_dir() -> Path:
    env = os.environ.get("GRAPHREC_CYPHER_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "cypher"


def parse_query(path: Path) -> Query:
    description, params, body = "", [], []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("// description:"):
            description = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("// params:"):
            for spec in filter(None, (s.strip() for s in stripped.split(":", 1)[1].split(","))):
                name, _, rest = spec.partition(":")
                typ, eq, default = rest.partition("=")
                typ = typ or "str"
                if typ not in _TYPES:
                    raise QueryError(f"{path}: parameter {name!r} has unknown type {typ!r}; "
                                     f"use one of {', '.join(_TYPES)}")
                p = Param(name.strip(), typ)
                if eq:
                    p = Param(p.name, typ, _convert(p, default, path.stem), required=False)
                params.append(p)
        else:
            body.append(line)
    return Query(path.stem, description, tuple(params), "\n".join(body).strip(), path)


def load_queries(directory: Path | None = None) -> dict[str, Query]:
    d = directory or cypher_dir()
    return {p.stem: parse_query(p) for p in sorted(d.glob("*.cypher"))}


def get_query(name: str, directory: Path | None = None) -> Query:
    queries = load_queries(directory)
    if name not in queries:
        raise QueryError(f"no query named {name!r}; among choices: {', '.join(queries) or '(none)'}")
    return queries[name]


def run_query(driver: neo4j.Driver, query: Query, params: dict[str, Any],
              database: str | None = None) -> tuple[list[str], list[list[Any]]]:
    # The named queries inspect a dataset: a read session, routed to a reader on a cluster.
    with driver.session(database=database, default_access_mode=neo4j.READ_ACCESS) as s:
        result = s.run(query.text, **params)
        rows = [list(r.values()) for r in result]
        return list(result.keys()), rows


def format_result(columns: list[str], rows: list[list[Any]], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps([dict(zip(columns, r)) for r in rows], indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)
        return buf.getvalue().rstrip("\n")
    if fmt == "table":
        return format_table(columns, [[_cell(v) for v in r] for r in rows])
    raise QueryError(f"unknown output format {fmt!r}; among choices: table, csv, json")


def _cell(v: Any) -> Any:
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return v
