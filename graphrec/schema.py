"""The one definition of graphrec's graph schema.

Node labels, behaviors, relationship types and derived "unique" relation names are defined here
and nowhere else. Cypher never receives a label or type from user input: names that reach a query
string go through :func:`cypher`, which accepts only the whitelisted names below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations

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

#: Values of the `split` property on target-behavior relationships.
SPLITS: tuple[str, ...] = ("train", "valid", "test")

DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def rel_type(behavior: str) -> str:
    """Relationship type of a behavior, e.g. ``cart`` -> ``CART``."""
    if behavior not in KNOWN_BEHAVIORS:
        raise ValueError(
            f"unknown behavior {behavior!r}; known behaviors: {', '.join(KNOWN_BEHAVIORS)}"
        )
    return behavior.upper()


def derived_name(upstream: str, downstream: str) -> str:
    """Name of the unique relation M_up ⊙ (J − M_down), e.g. ``view_not_cart``."""
    rel_type(upstream), rel_type(downstream)
    return f"{upstream}_not_{downstream}"


BEHAVIOR_TYPES: frozenset[str] = frozenset(rel_type(b) for b in KNOWN_BEHAVIORS)
DERIVED_TYPES: frozenset[str] = frozenset(
    derived_name(a, b).upper() for a in KNOWN_BEHAVIORS for b in KNOWN_BEHAVIORS if a != b
)
#: Recommendations written back by `graphrec recommend --write-back`.
RECOMMENDED_TYPE = "RECOMMENDED"
#: Every relationship type a graphrec query may name.
REL_TYPES: frozenset[str] = BEHAVIOR_TYPES | DERIVED_TYPES | {RECOMMENDED_TYPE}
LABELS: frozenset[str] = frozenset({USER_LABEL, ITEM_LABEL, DATASET_LABEL})


def normalize_behavior(name: str) -> str | None:
    """Map a raw behavior value to a known behavior name, or None if it is not one."""
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
            raise ValueError("a dataset needs at least one behavior (the target)")
        for b in self.order:
            rel_type(b)
        if len(set(self.order)) != len(self.order):
            raise ValueError(f"behavior order {list(self.order)} repeats a behavior")

    @classmethod
    def parse(cls, text: str | list[str] | tuple[str, ...]) -> "Behaviors":
        """From ``"view,cart,buy"`` or a list; aliases such as ``pv`` are accepted."""
        raw = text.split(",") if isinstance(text, str) else list(text)
        order = []
        for r in raw:
            b = normalize_behavior(r)
            if b is None:
                raise ValueError(
                    f"unknown behavior {r.strip()!r} in the behavior order; "
                    f"known behaviors: {', '.join(KNOWN_BEHAVIORS)} "
                    f"(aliases: {', '.join(f'{k}={v}' for k, v in BEHAVIOR_ALIASES.items())})"
                )
            order.append(b)
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
        if value not in REL_TYPES and value not in LABELS:
            raise ValueError(f"{key}={value!r} is not a graphrec label or relationship type")

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in names:
            raise KeyError(f"Cypher template placeholder ${{{key}}} was not given")
        return names[key]

    return _TOKEN_RE.sub(sub, template)
