"""The one place graphrec imports DGL.

PyPI's newest DGL (2.1.0) ships its graphbolt C++ library only for torch 2.0.0–2.2.1, and
``import dgl`` imports ``dgl.graphbolt`` unconditionally (via ``dgl.distributed``), which raises on
any newer torch.  graphrec uses DGL's core only — the heterograph container, ``save_graphs`` /
``load_graphs`` and ``update_all`` as a reference in tests — none of which touches graphbolt.  So on
a torch without a matching graphbolt library we register a placeholder ``dgl.graphbolt`` module
before importing DGL; any real use of graphbolt then fails with a message saying why.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

from graphrec.errors import WorkFailed

_GRAPHBOLT = "dgl.graphbolt"


class DGLUnavailable(WorkFailed, ImportError):
    """DGL is not installed or cannot be imported in this environment."""


def _graphbolt_library(torch_version: str) -> Path | None:
    spec = importlib.util.find_spec("dgl")
    if spec is None or spec.origin is None:
        return None
    version = torch_version.split("+", maxsplit=1)[0]
    return Path(spec.origin).parent / "graphbolt" / f"libgraphbolt_pytorch_{version}.so"


def _placeholder(torch_version: str) -> types.ModuleType:
    module = types.ModuleType(_GRAPHBOLT)
    reason = (
        f"dgl.graphbolt is unavailable: DGL 2.1.0 ships graphbolt only for torch <= 2.2.1 and this is "
        f"torch {torch_version}. graphrec does not use graphbolt; install torch 2.2.1 if you need it."
    )

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(f"{reason} (asked for dgl.graphbolt.{name})")

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    module.__doc__ = reason
    module.GRAPHREC_PLACEHOLDER = True  # lets tests and `graphrec doctor` tell the two apart
    return module


def import_dgl():
    """Import and return the ``dgl`` module, working around the graphbolt/torch version lock.

    Every DGL import in graphrec goes through here (``dgl = import_dgl()``).  Raises
    DGLUnavailable with the fix when DGL is missing.
    """
    if "dgl" in sys.modules:
        return sys.modules["dgl"]
    # DGL otherwise prints a backend notice and writes ~/.dgl/config.json on first import.
    os.environ.setdefault("DGLBACKEND", "pytorch")
    import torch

    library = _graphbolt_library(torch.__version__)
    if library is None:
        raise DGLUnavailable(
            "DGL is not installed in this environment; run `make setup` "
            "(or `pip install dgl==2.1.0`). Training itself does not need DGL: it reads snapshots."
        )
    if not library.exists() and _GRAPHBOLT not in sys.modules:
        sys.modules[_GRAPHBOLT] = _placeholder(torch.__version__)
    try:
        import dgl
    except Exception as exc:  # surface the real cause with the versions involved
        sys.modules.pop(_GRAPHBOLT, None)
        raise DGLUnavailable(
            f"importing DGL failed on torch {torch.__version__}: {type(exc).__name__}: {exc}"
        ) from exc
    return dgl


def graphbolt_is_placeholder() -> bool:
    module = sys.modules.get(_GRAPHBOLT)
    return bool(module is not None and getattr(module, "__dict__", {}).get("GRAPHREC_PLACEHOLDER"))
