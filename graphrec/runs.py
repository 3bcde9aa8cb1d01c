"""Files of a run directory that must never be half-written or silently damaged: weights and
checkpoints are written to a temporary file beside their target and renamed over it, and their
SHA-256 is recorded in the run's ``run.json`` (``files``) and checked before they are loaded."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from graphrec.errors import UserError

RUN_FILE = "run.json"


class CheckpointError(UserError):
    """A weights or checkpoint file that is missing, damaged or not loadable."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` into ``path`` by way of a temporary file and a rename (readers see old or new)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def recorded_hashes(run_dir: Path) -> dict[str, str]:
    f = Path(run_dir) / RUN_FILE
    try:
        files = json.loads(f.read_text()).get("files") if f.is_file() else None
    except (ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def save_weights(obj: Any, run_dir: Path, name: str) -> None:
    """torch.save ``obj`` as ``run_dir/name`` atomically and record its hash in run.json."""
    run_dir = Path(run_dir)
    target = run_dir / name
    tmp = target.with_name(f".{name}.tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    digest = sha256(tmp)
    os.replace(tmp, target)
    f = run_dir / RUN_FILE
    info = json.loads(f.read_text())
    info["files"] = {**(info.get("files") or {}), name: digest}
    write_atomic(f, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())


def load_weights(run_dir: Path, name: str, device: torch.device | str = "cpu") -> Any:
    """``run_dir/name`` loaded with ``weights_only=True`` after its hash is checked against run.json
    (runs written before hashes were recorded are loaded as they are)."""
    path = Path(run_dir) / name
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; train the run (or --resume it) to write it")
    expected = recorded_hashes(Path(run_dir)).get(name)
    if expected is not None and (actual := sha256(path)) != expected:
        raise CheckpointError(f"{path} is damaged: SHA-256 {actual}, run.json records {expected}; retrain the run, "
                              f"or restore the file from a copy")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise CheckpointError(f"{path} cannot be read ({type(exc).__name__}: {str(exc)[:200]}); it is truncated or "
                              f"not a graphrec weights file: retrain the run") from None
