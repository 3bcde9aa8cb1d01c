"""Files of a run directory that must never be half-written or silently damaged: weights and
checkpoints are written to a temporary file beside their target and renamed over it, and their
SHA-256 is recorded in the run's ``run.json`` (``files``) and checked before they are loaded."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch

from graphrec import snapshot as snap
from graphrec.config import TrainConfig
from graphrec.errors import UserError, WorkFailed
from graphrec.models import Recommender, build_model, get_model

if TYPE_CHECKING:
    from graphrec.adjacency import SparseAdj
    from graphrec.sampling import TrainData

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


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


# ------------------------------------------------------------------------------------ run records


class TrainError(WorkFailed, RuntimeError):
    pass


class RunBusy(UserError):
    """Another process is training in this run directory."""


LOCK_FILE = ".lock"
_held: set[Path] = set()  # run dirs this process holds: the lock is re-entrant within one process


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Exclusive use of a run directory (created if missing) for as long as the block runs. Two
    trainers in one directory would interleave checkpoints and metrics; the second is refused.
    Held locks die with their process, so a killed run never leaves the directory locked."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fh = open(run_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise RunBusy(f"run directory {run_dir} is in use by another graphrec process; wait for it to finish "
                      "or choose another --run") from None
    _held.add(run_dir)
    try:
        yield
    finally:
        _held.discard(run_dir)
        fh.close()  # closing releases the lock


def clear_run(run_dir: Path) -> None:
    """Remove everything a run directory holds except its lock (call it holding ``run_lock``)."""
    for entry in Path(run_dir).iterdir():
        if entry.name != LOCK_FILE:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


class RunNotFound(UserError, FileNotFoundError):
    """A --run that is not a run directory."""


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


@dataclass
class RunInfo:
    model: str
    params: dict
    train: dict
    dataset: str
    snapshot: str
    snapshot_manifest_sha256: str
    device: str
    created: str
    files: dict = dataclasses.field(default_factory=dict)  # SHA-256 of the weights files (graphrec.runs)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"


def manifest_hash(path: Path) -> str:
    return hashlib.sha256((Path(path) / snap.MANIFEST).read_bytes()).hexdigest()


def load_run(run_dir: str | Path) -> RunInfo:
    f = Path(run_dir) / RUN_FILE
    if not f.is_file():
        raise RunNotFound(f"{run_dir} is not a run directory (no {RUN_FILE}); train one with `graphrec train`")
    try:
        data = json.loads(f.read_text())
    except ValueError as exc:
        raise RunNotFound(f"{f} is not valid JSON ({exc}); the run directory is damaged: train a new run") from None
    if not isinstance(data, dict):
        raise RunNotFound(f"{f} holds {type(data).__name__}, not a run's record; train a new run")
    if data.get("stage") == "ranking":
        raise TrainError(f"{run_dir} is a ranking run; this needs a recall run (a graph model such as hpmr), e.g. "
                         f"its --recall-run {data.get('recall_run')}")
    names = {fl.name for fl in dataclasses.fields(RunInfo)}
    required = {fl.name for fl in dataclasses.fields(RunInfo) if fl.default is dataclasses.MISSING
                and fl.default_factory is dataclasses.MISSING}
    if set(data) - names or required - set(data):
        raise RunNotFound(f"{f} is not a recall run's record (keys {sorted(data)}; expected {sorted(names)}); "
                          "train a new run")
    return RunInfo(**data)


def params_from_dict(model: str, data: dict) -> Any:
    """A run's recorded params, strictly: a key this graphrec does not know means the run was made
    by another version, and its weights would not fit the model built here."""
    from graphrec.config import ConfigError, from_dict

    try:
        return from_dict(get_model(model).params, data, f"run.json params of {model}")
    except ConfigError as exc:
        raise RunNotFound(f"{exc.args[0]}; the run was made by another graphrec version: retrain it") from None


def recorded_train(info: RunInfo) -> TrainConfig:
    from graphrec.config import ConfigError, from_dict

    try:
        return from_dict(TrainConfig, info.train, "run.json train")
    except ConfigError as exc:
        raise RunNotFound(f"{exc.args[0]}; the run was made by another graphrec version: retrain it") from None


def open_model(run_dir: str | Path, device: torch.device | str = "cpu", snapshot_path: str | Path | None = None,
               weights: str = BEST) -> tuple[RunInfo, Recommender, TrainData, dict[str, SparseAdj]]:
    """Rebuild a trained model from its run directory (for evaluate and recommend)."""
    from graphrec.sampling import TrainData  # sampling imports this module's errors

    info = load_run(run_dir)
    path = Path(snapshot_path or info.snapshot)
    if manifest_hash(path) != info.snapshot_manifest_sha256:
        raise TrainError(f"snapshot {path} is not the one run {run_dir} was trained on (manifest hash differs); "
                         "pass the right --snapshot or retrain")
    s = snap.read(path)
    tc = recorded_train(info)
    params = params_from_dict(info.model, info.params)
    cls = get_model(info.model).cls
    data = TrainData.for_model(s, tc, cls, device)
    model = build_model(info.model, params, data.meta).to(device)
    state = load_weights(Path(run_dir), weights, device)
    model.load_state_dict(state["model"] if "model" in state else state)
    model.eval()
    return info, model, data, data.graphs(cls.relations(data.meta), device)
