"""Strict configuration: frozen dataclasses filled from YAML files and ``--set a.b=value``.

Unknown keys are errors that list the valid ones, so a typo never silently becomes a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from graphrec.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration file or override that does not match the schema."""

    def __str__(self) -> str:
        text = super().__str__()
        if "fix:" in text or "; use " in text or "pass " in text:
            return text
        return (text + "\n  fix: correct that key or value in the YAML file or the --set override "
                "(the presets in configs/ show every key with a valid value)")


@dataclass(frozen=True)
class SplitConfig:
    """How the target behavior is split into train / valid / test."""

    #: "file": the source's own test file (per-user text formats); "last": each user's latest
    #: purchase by timestamp; "random": one seeded random purchase per user; "auto": file if the
    #: source has one, else last if it has timestamps, else random.
    test: str = "auto"
    #: Hold one seeded purchase per user out of train as validation (users with ≥ 2 train purchases).
    valid: bool = True
    seed: int = 2024
    #: The split of purchases added by ``graphrec ingest --append``: "train", or "test" for a new test
    #: window (train on the log so far, evaluate on what came after). Stored splits never change.
    append: str = "train"

    def __post_init__(self) -> None:
        if self.test not in ("auto", "file", "last", "random"):
            raise ConfigError(f"split.test must be one of auto, file, last, random; got {self.test!r}")
        if self.append not in ("train", "test"):
            raise ConfigError(f"split.append must be train or test; got {self.append!r}")


@dataclass(frozen=True)
class IngestConfig:
    #: Source format; None detects it from the path (a folder of per-user text files, .csv, .parquet).
    format: str | None = None
    #: Behavior cascade, upstream first, target last, e.g. [view, cart, buy]. None: the format's default
    #: for per-user text folders (the behaviors whose files are present); required for csv/parquet.
    behaviors: list[str] | None = None
    #: Column names in a long-format log, if they differ from user, item, behavior, timestamp.
    columns: dict[str, str] = field(default_factory=dict)
    #: Raw behavior values of a long-format log mapped onto behavior names, e.g. the Tianchi codes
    #: ``{1: click, 2: collect, 3: cart, 4: buy}``; values not listed are read as names themselves.
    behavior_values: dict[str, str] = field(default_factory=dict)
    #: strftime format of the timestamp column, e.g. ``"%Y-%m-%d %H"``; None accepts Unix seconds and
    #: common date/time forms (ISO 8601, ``2014-12-06 02`` at hour resolution, ...).
    time_format: str | None = None
    #: A separate file of held-out target-behavior rows (user, item[, timestamp]; the log's column
    #: names) for a long-format log: those become the test split (``graphrec ingest --test FILE``).
    test_file: str | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    #: Relationships per write transaction (rows are grouped per user inside a batch).
    batch_rows: int = 20000

    def __post_init__(self) -> None:
        # YAML reads the codes 1, 2, ... as ints; a log's values are strings
        values = {str(k).strip(): v for k, v in self.behavior_values.items()}
        for k, v in values.items():
            if not isinstance(v, str) or not v.strip():
                raise ConfigError(f"ingest.behavior_values[{k!r}] must be a behavior name; got {v!r}")
        object.__setattr__(self, "behavior_values", values)
        if self.batch_rows < 1:
            raise ConfigError(f"ingest.batch_rows must be ≥ 1; got {self.batch_rows}")
        unknown = set(self.columns) - {"user", "item", "behavior", "timestamp"}
        if unknown:
            raise ConfigError(
                f"ingest.columns has unknown keys {sorted(unknown)}; valid: user, item, behavior, timestamp"
            )


#: Model-selection protocols (TrainConfig.protocol), each labelled on every results row.
PROTOCOLS = ("paper", "honest", "fixed")


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained and selected (the model's own hyperparameters live under ``models``)."""

    #: "paper": train on every non-test purchase and early-stop on the test split, as the reference
    #: code does (results are for comparison with published numbers only); "honest": train without
    #: the validation purchases, early-stop on them, report test once; "fixed": train on every
    #: non-test purchase for exactly ``epochs`` epochs and evaluate the test split once at the end,
    #: with no selection at all (the protocol of MuLe's taobao_mbcgcn table).
    protocol: str = "honest"
    epochs: int = 500
    batch_size: int = 256           # users per batch (whole-data models) or pairs (BPR models)
    optimizer: str = "adam"
    lr: float = 1e-3
    eval_every: int = 10
    patience: int = 5               # evaluations without improvement before stopping
    metric: str = "hr@10"           # model-selection metric; `>=` counts as improvement (reference)
    ks: list[int] = field(default_factory=lambda: [10])
    seed: int = 42
    pad_percentile: float = 99.99   # positive lists longer than this percentile are truncated
    eval_batch_size: int = 1024
    drop_last: bool = True          # the reference drops the last partial batch of each epoch
    #: Train on this part of the snapshot's cascade (same order, the target last), e.g. [cart, buy] to
    #: measure what the views add without a second ingest; None: every behavior of the snapshot.
    behaviors: list[str] | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"train.protocol must be one of {', '.join(PROTOCOLS)}; got {self.protocol!r}")
        if self.optimizer not in ("adam", "adagrad"):
            raise ConfigError(f"train.optimizer must be adam or adagrad; got {self.optimizer!r}")
        for name in ("epochs", "batch_size", "eval_every", "patience", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1; got {getattr(self, name)}")
        if not self.ks or any(k < 1 for k in self.ks):
            raise ConfigError(f"train.ks must be a list of positive cut-offs; got {self.ks}")
        kind, _, k = self.metric.partition("@")
        if kind not in ("hr", "ndcg", "recall", "precision") or not k.isdigit() or int(k) not in self.ks:
            raise ConfigError(f"train.metric must be hr@K, ndcg@K, recall@K or precision@K with K in train.ks "
                              f"{self.ks}; got {self.metric!r}")


@dataclass(frozen=True)
class RankingConfig:
    """The ranking stage (``graphrec train --model dmt|stan|... --recall-run DIR``): how candidate
    lists are built from a recall run and how a ranking model is trained on them."""

    candidates: int = 50            # top-N of the recall run per user (held-out positives appended)
    seq_len: int = 50               # items per behavior sequence (most recent first where timestamps exist)
    valid_fraction: float = 0.1     # users of the training lists held out for early stopping
    users_per_batch: int = 64       # a batch is these users' whole candidate lists
    epochs: int = 20
    lr: float = 1e-3
    patience: int = 3               # epochs without improvement of the validation target AUC (retrieved rows)
    #: Serving score = Σ_k w_k · p_k over the tasks (behavior order); None = 1 for every task.
    score_weights: list[float] | None = None
    ks: list[int] = field(default_factory=lambda: [5, 10])
    seed: int = 42
    #: Give the ranking models the recall score (standardized within each list) as a feature.
    recall_score_feature: bool = True
    #: Order of the behavior sequences: "time" (most recent first, where every training edge has a
    #: timestamp; item order otherwise) or "item" (ascending item id, ignoring timestamps).
    sequence_order: str = "time"

    def __post_init__(self) -> None:
        for name in ("candidates", "seq_len", "users_per_batch", "epochs", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ranking.{name} must be >= 1; got {getattr(self, name)}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError(f"ranking.valid_fraction must be in (0, 1); got {self.valid_fraction}")
        if self.lr <= 0:
            raise ConfigError(f"ranking.lr must be > 0; got {self.lr}")
        if not self.ks or any(k < 1 for k in self.ks):
            raise ConfigError(f"ranking.ks must be a list of positive cut-offs; got {self.ks}")
        if self.sequence_order not in ("time", "item"):
            raise ConfigError(f"ranking.sequence_order must be time or item; got {self.sequence_order!r}")
        if self.score_weights is not None and any(w < 0 for w in self.score_weights):
            raise ConfigError(f"ranking.score_weights must be >= 0; got {self.score_weights}")


@dataclass(frozen=True)
class Config:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: Per-model hyperparameters, e.g. ``models: {hpmr: {layers: 3}}``; checked against the model's
    #: params dataclass when that model is built (unknown model names and keys are errors).
    models: dict[str, dict] = field(default_factory=dict)
    #: Per-model overrides of ``train`` (e.g. a larger batch for pairwise BPR models).
    model_train: dict[str, dict] = field(default_factory=dict)
    ranking: RankingConfig = field(default_factory=RankingConfig)


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def from_dict(cls: type, data: dict, where: str):
    """A config section (or params dataclass) ``cls`` from a plain mapping such as a run record's,
    with the same strict checks as a YAML file; ``where`` names the source in errors."""
    return _build(cls, data, where)


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where or 'config'}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = _strip_optional(hints[name])
        path = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, path)
        else:
            kwargs[name] = _check_type(tp, value, path)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from exc


def _check_type(tp: Any, value: Any, path: str) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp) or tp
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        list: lambda v: isinstance(v, list),
        tuple: lambda v: isinstance(v, (list, tuple)),
        dict: lambda v: isinstance(v, dict),
    }.get(origin)
    if ok is not None and not ok(value):
        raise ConfigError(f"{path}: expected {getattr(origin, '__name__', origin)}, got {value!r}")
    if origin is float:
        return float(value)
    args = [a for a in typing.get_args(tp) if a is not Ellipsis]
    if origin in (list, tuple) and len(args) == 1 and args[0] in (int, float, str, bool):
        value = [_check_type(args[0], v, f"{path}[{k}]") for k, v in enumerate(value)]
        return tuple(value) if origin is tuple else value
    if origin is tuple:
        return tuple(value)
    if origin is dict and len(args) == 2 and all(a in (int, float, str, bool) for a in args):
        # keys are as YAML reads them; the values of a mapping such as ingest.columns are checked
        return {k: _check_type(args[1], v, f"{path}.{k}") for k, v in value.items()}
    return value


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> dict:
    """``a.b=value`` → ``{"a": {"b": value}}`` with the value parsed as YAML (numbers, lists, bools)."""
    import yaml  # here, not at import: the GPU machine runs graphrec on torch and numpy alone

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value (e.g. ingest.split.seed=7); got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"--set {key.strip()}: the value {raw[:80]!r} is not valid YAML ({first}); "
                          f"quote a string (e.g. {key.strip()}='\"{raw[:20]}\"') or write a list as [a, b]") from None
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def model_params(config: Config, name: str) -> Any:
    """The params dataclass of model ``name`` filled from ``config.models[name]``, strictly."""
    from graphrec.models import all_models, get_model

    known = all_models()
    unknown = sorted(set(config.models) - set(known))
    if unknown:
        raise ConfigError(f"models: unknown model {unknown[0]!r}; among choices: {', '.join(sorted(known))}")
    for other, section in config.models.items():  # a typo in any model's section is an error, not just this one's
        if other != name:
            _build(get_model(other).params, section or {}, f"models.{other}")
    entry = get_model(name)
    return _build(entry.params, config.models.get(name) or {}, f"models.{name}")


def train_config(config: Config, name: str) -> TrainConfig:
    """``config.train`` with ``config.model_train[name]`` applied on top, strictly (every entry of
    ``model_train`` must name a model and hold train keys, whichever model is trained)."""
    from graphrec.models import all_models

    known = all_models()
    unknown = sorted(set(config.model_train) - set(known))
    if unknown:
        raise ConfigError(f"model_train: unknown model {unknown[0]!r}; among choices: {', '.join(sorted(known))}")
    for other, section in config.model_train.items():
        if other != name and section:
            _build(TrainConfig, _merge(dataclasses.asdict(config.train), section), f"model_train.{other}")
    over = config.model_train.get(name) or {}
    if not over:
        return config.train
    return _build(TrainConfig, _merge(dataclasses.asdict(config.train), over), f"model_train.{name}")


#: The presets shipped beside the package (configs/DATASET.yaml in the repository).
PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs"


def preset_for(dataset: str | None) -> Path | None:
    """``configs/DATASET.yaml`` when graphrec ships a preset for that data set name, else None."""
    if not dataset:
        return None
    path = PRESETS_DIR / f"{dataset}.yaml"
    return path if path.is_file() else None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults ← YAML file ← ``--set`` overrides, validated strictly."""
    import yaml

    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping")
        data = loaded
    for o in overrides:
        data = _merge(data, parse_override(o))
    return _build(Config, data, "")
