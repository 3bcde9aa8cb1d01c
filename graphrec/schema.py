"""The one definition of graphrec's graph schema.

Node labels, behaviors, relationship types and derived "unique" relation names are defined here
and nowhere else. Cypher never receives a label or type from user input: names that reach a query
string go through :func:`cypher`, which accepts only the whitelisted names below.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import combinations

from graphrec.errors import BadValue, UserError

SCHEMA_VERSION = 1

USER_LABEL = "User"
ITEM_LABEL = "Item"
DATASET_LABEL = "Dataset"

#: Every behavior graphrec knows, in the canonical cascade order (upstream first).
#: A dataset uses an ordered subset; its last behavior is the target.
KNOWN_BEHAVIORS: tuple[str, ...] = ("view", "click", "collect", "cart", "buy")

#: Common spellings in public logs mapped onto known behaviors.
BEHAVIOR_ALIASES: dict[str, str] = {
    "pv": "view",
    "fav": "collect",
    "favorite": "collect",
    "favourite": "collect",
    "addtocart": "cart",
    "add_to_cart": "cart",
    "purchase": "buy",
    "order": "buy",
}

#: Recommendations written back by `graphrec recommend --write-back`.
RECOMMENDED_TYPE = "RECOMMENDED"

#: Values of the `split` property on target-behavior relationships.
SPLITS: tuple[str, ...] = ("train", "valid", "test")

DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


#: The rule for a behavior name (and so for its relationship type, the name upper-cased): lowercase
#: ASCII letters and digits in words joined by single underscores, starting with a letter, at most 32
#: characters. Reserved: the word ``not`` (``a_not_b`` names a derived relation), the prefix ``rev_``
#: (DGL's reverse edge types) and ``recommended`` (the write-back type).
BEHAVIOR_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
BEHAVIOR_NAME_MAX = 32
BEHAVIOR_NAME_RULE = ("a behavior name is lowercase letters and digits in words joined by single underscores, "
                      f"starting with a letter, at most {BEHAVIOR_NAME_MAX} characters, without the word 'not', "
                      "the prefix 'rev_' or the name 'recommended' (e.g. view, add_to_wishlist, transaction)")


class BehaviorNameError(UserError, ValueError):
    """A behavior name that cannot become a relationship type (see :data:`BEHAVIOR_NAME_RULE`)."""


def _follows_rule(name: object) -> bool:
    return (isinstance(name, str) and len(name) <= BEHAVIOR_NAME_MAX and BEHAVIOR_NAME_RE.match(name) is not None
            and "not" not in name.split("_") and not name.startswith("rev_") and name != RECOMMENDED_TYPE.lower())


def check_behavior(name: str) -> str:
    """``name`` if it follows :data:`BEHAVIOR_NAME_RULE`; the one gate every behavior name passes
    before it can reach Cypher as a relationship type."""
    if not _follows_rule(name):
        raise BehaviorNameError(
            f"behavior name {name!r} is not allowed: {BEHAVIOR_NAME_RULE}; rename it in the behavior order, or map "
            f"the log's value onto an allowed name with ingest.behavior_values (e.g. "
            f"--set 'ingest.behavior_values={{{json.dumps(str(name)[:40])}: {suggest_behavior_name(str(name))}}}')")
    return name


def suggest_behavior_name(raw: str) -> str:
    """An allowed name close to ``raw`` (for error messages): lowercased, runs of other characters as ``_``."""
    words = [w for w in re.split(r"[^a-z0-9]+", raw.lower()) if w and w != "not"]
    name = "_".join(words)[:BEHAVIOR_NAME_MAX].strip("_") or "behavior"
    name = name.removeprefix("rev_")
    return name if name[0].isalpha() else f"b_{name}"[:BEHAVIOR_NAME_MAX]


def rel_type(behavior: str) -> str:
    """Relationship type of a behavior, e.g. ``cart`` -> ``CART``, ``add_to_wishlist`` -> ``ADD_TO_WISHLIST``."""
    return check_behavior(behavior).upper()


def derived_name(upstream: str, downstream: str) -> str:
    """Name of the unique relation M_up ⊙ (J − M_down), e.g. ``view_not_cart``."""
    check_behavior(upstream), check_behavior(downstream)
    return f"{upstream}_not_{downstream}"


#: Graphs a model may propagate over that are set operations on the training edges of behaviors
#: (MuLe's unified and target-intersected graphs). They exist only in training, never in Neo4j; the
#: separators cannot occur in a behavior name, so these names never collide with one.
INTERSECTION_SEP = "&"
UNION_SEP = "|"


def intersection_name(*behaviors: str) -> str:
    """The graph of the pairs every one of ``behaviors`` has, e.g. ``view&buy``."""
    return INTERSECTION_SEP.join(check_behavior(b) for b in behaviors)


def union_name(*behaviors: str) -> str:
    """The graph of the pairs any of ``behaviors`` has, e.g. ``view|cart|buy``."""
    return UNION_SEP.join(check_behavior(b) for b in behaviors)


def set_operation(name: str) -> tuple[str, tuple[str, ...]] | None:
    """``("and" | "or", parts)`` for a name made by :func:`intersection_name` or :func:`union_name`
    (each part a relation name), None for any other name."""
    for sep, op in ((INTERSECTION_SEP, "and"), (UNION_SEP, "or")):
        if sep in name:
            return op, tuple(name.split(sep))
    return None


LABELS: frozenset[str] = frozenset({USER_LABEL, ITEM_LABEL, DATASET_LABEL})


def is_rel_type(name: str) -> bool:
    """Whether ``name`` is a relationship type graphrec may put into a query: a behavior's type, a
    derived ``A_NOT_B`` type of two behaviors, or the write-back type."""
    if not isinstance(name, str) or name != name.upper():
        return False
    if name == RECOMMENDED_TYPE:
        return True
    parts = name.lower().split("_not_")
    return len(parts) in (1, 2) and all(_follows_rule(p) for p in parts)


def normalize_behavior(name: str) -> str | None:
    """Map a raw behavior value to a known behavior name (aliases such as ``pv`` included), or None."""
    key = str(name).strip().lower()
    key = BEHAVIOR_ALIASES.get(key, key)
    return key if key in KNOWN_BEHAVIORS else None


@dataclass(frozen=True)
class DerivedRelation:
    """M_upstream ⊙ (J − M_downstream): upstream interactions without the downstream one."""

    upstream: str
    downstream: str

    @property
    def name(self) -> str:
        return derived_name(self.upstream, self.downstream)

    @property
    def rel_type(self) -> str:
        return self.name.upper()


@dataclass(frozen=True)
class Behaviors:
    """A dataset's behavior cascade: ordered upstream → downstream, the last one is the target."""

    order: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.order) < 1:
            raise BadValue("a dataset needs at least one behavior (the target)")
        for b in self.order:
            check_behavior(b)
        if len(set(self.order)) != len(self.order):
            raise BadValue(f"behavior order {list(self.order)} repeats a behavior")

    @classmethod
    def parse(cls, text: str | list[str] | tuple[str, ...]) -> "Behaviors":
        """From ``"view,cart,buy"`` or a list, in the order given. Aliases of the known behaviors
        (``pv`` = view, ``purchase`` = buy, ...) are mapped; any other name must follow
        :data:`BEHAVIOR_NAME_RULE` (e.g. ``like,share,transaction``)."""
        raw = text.split(",") if isinstance(text, str) else list(text)
        order = []
        for r in raw:
            name = str(r).strip().lower()
            order.append(normalize_behavior(name) or check_behavior(name))
        return cls(tuple(order))

    @property
    def target(self) -> str:
        return self.order[-1]

    @property
    def derived(self) -> tuple[DerivedRelation, ...]:
        """Every ordered pair i < j of the cascade, e.g. view_not_cart, view_not_buy, cart_not_buy."""
        return tuple(DerivedRelation(a, b) for a, b in combinations(self.order, 2))

    def __str__(self) -> str:
        return " → ".join(self.order)


_TOKEN_RE = re.compile(r"\$\{([A-Z_]+)\}")


def cypher(template: str, **names: str) -> str:
    """Fill ``${NAME}`` placeholders of a Cypher template with whitelisted labels/types only.

    Parameters (``$dataset``) stay parameters; this only places schema names, which Cypher
    cannot take as parameters in patterns.
    """
    for key, value in names.items():
        if not is_rel_type(value) and value not in LABELS:
            raise ValueError(f"{key}={value!r} is not a graphrec label or relationship type")

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in names:
            raise KeyError(f"Cypher template placeholder ${{{key}}} was not given")
        return names[key]

    return _TOKEN_RE.sub(sub, template)
