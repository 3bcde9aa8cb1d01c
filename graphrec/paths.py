"""Where graphrec keeps its local state (standard library only: the CLI imports it at start)."""

from __future__ import annotations

import os
from pathlib import Path


def state_home(explicit: str | Path | None = None) -> Path:
    """``explicit`` (the CLI's ``--home``), else ``$GRAPHREC_HOME``, else ``./.graphrec``: the managed
    Neo4j, snapshots, runs and rejected rows live under it."""
    return Path(explicit or os.environ.get("GRAPHREC_HOME") or ".graphrec")
