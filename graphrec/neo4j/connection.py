"""Which Neo4j to talk to, and a driver for it.

Precedence: an explicit ``--uri`` flag, then ``NEO4J_URI``; otherwise the managed local server,
started on demand. Credentials come from flags or ``NEO4J_USERNAME`` / ``NEO4J_PASSWORD`` and are
never printed: :func:`describe` and :func:`redact` are what logs show.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import neo4j
from neo4j import GraphDatabase

from graphrec.errors import BadValue
from graphrec.neo4j import server

_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")


@dataclass(frozen=True)
class Target:
    uri: str | None  # None: the managed server (its port is known once it runs)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    home: Path | None = None

    @property
    def managed(self) -> bool:
        return self.uri is None


_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(:\d{1,5})?")


def redact(uri: str) -> str:
    """A URI fit to show: scheme, host and port (and a plain path) only; credentials, query and
    fragment become ``<redacted>``. A password may hold ``/ @ : ? #``, which end a URL parser's
    authority early; so an ``@`` anywhere past the authority makes the host the part after the
    last ``@``, and when no clean host:port can be told, nothing but the scheme is shown."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "", uri
    authority, tail = re.match(r"([^/?#]*)(.*)", rest, re.S).groups()
    if "@" in tail:
        authority, tail = re.match(r"([^/?#]*)(.*)", rest.rpartition("@")[2], re.S).groups()
        credentials = True
    else:
        credentials, _, authority = authority.rpartition("@")
    path, query = re.match(r"([^?#]*)(.*)", tail, re.S).groups()
    if _HOST_PORT.fullmatch(authority) and re.fullmatch(r"[A-Za-z0-9._/\-]*", path):
        shown = ("<redacted>@" if credentials else "") + authority + path + ("?<redacted>" if query else "")
    else:
        shown = "<redacted>"
    return f"{scheme}://{shown}" if sep else shown


def scrub(text: str, secrets: tuple[str | None, ...]) -> str:
    """``text`` with every secret replaced, for messages built from a driver's exception."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def resolve(
    uri: str | None = None,
    username: str | None = None,
    password: str | None = None,
    database: str | None = None,
    home: str | Path | None = None,
) -> Target:
    uri = uri or os.environ.get("NEO4J_URI") or None
    if uri is not None:
        scheme = uri.split("://", 1)[0] if "://" in uri else ""
        if scheme not in _SCHEMES:
            raise BadValue(
                f"Neo4j URI {redact(uri)!r} has no supported scheme; use one of "
                f"{', '.join(s + '://' for s in _SCHEMES)} (e.g. bolt://localhost:7687)"
            )
        if redact(uri) != uri:
            raise BadValue(
                f"Neo4j URI {redact(uri)!r} must not contain credentials; pass them in NEO4J_USERNAME / "
                "NEO4J_PASSWORD (or --username / --password) instead"
            )
    return Target(
        uri=uri,
        username=username or os.environ.get("NEO4J_USERNAME") or None,
        password=password or os.environ.get("NEO4J_PASSWORD") or None,
        database=database or os.environ.get("NEO4J_DATABASE") or None,
        home=Path(home).resolve() if home else server.default_home(),
    )


def describe(target: Target) -> str:
    if target.managed:
        return f"managed Neo4j in {target.home}"
    return redact(target.uri or "")


def connect(target: Target, log: Callable[[str], None] = print) -> neo4j.Driver:
    """A verified driver; starts the managed server first when no URI was given."""
    if target.managed:
        info = server.start(target.home, log=log)
        uri, auth = info.uri, None
    else:
        uri = target.uri or ""
        auth = (target.username or "neo4j", target.password or "") if (target.username or target.password) else None
    driver = GraphDatabase.driver(
        uri, auth=auth, notifications_min_severity="OFF", user_agent="graphrec", max_connection_lifetime=3600
    )
    try:
        driver.verify_connectivity()
    except Exception as exc:
        driver.close()
        raise ConnectionError(
            f"cannot reach Neo4j at {redact(uri)}: {type(exc).__name__}: "
            f"{scrub(str(exc), (target.password, target.uri, uri))}. "
            "Check the URI and credentials (NEO4J_URI, NEO4J_USERNAME, NEO4J_PASSWORD), "
            "or omit --uri to use the managed local server."
        ) from None
    if target.managed:
        _tune_managed(driver)
    return driver


def _tune_managed(driver: neo4j.Driver) -> None:
    # Neo4j 5 keeps a relationship-type lookup index updated on every relationship write; graphrec's
    # queries always start from (:User {dataset}), so on the server it owns it drops that index
    # (~30% faster relationship creation, measured). A user's own server is never altered.
    with driver.session() as s:
        names = [
            r["name"]
            for r in s.run(
                "SHOW INDEXES YIELD name, type, entityType WHERE type = 'LOOKUP' AND entityType = 'RELATIONSHIP'"
            )
        ]
        for name in names:
            s.run("DROP INDEX $name IF EXISTS", name=name).consume()
