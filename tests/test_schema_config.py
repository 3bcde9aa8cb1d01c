import pytest

from graphrec.config import ConfigError, load_config, parse_override
from graphrec.schema import Behaviors, cypher, derived_name


def test_derived_relations_are_every_ordered_pair_of_the_cascade():
    b = Behaviors.parse("pv,cart,buy")
    assert b.order == ("view", "cart", "buy")
    assert b.target == "buy"
    assert [r.rel_type for r in b.derived] == ["VIEW_NOT_CART", "VIEW_NOT_BUY", "CART_NOT_BUY"]
    assert derived_name("cart", "buy") == "cart_not_buy"


def test_unknown_and_repeated_behaviors_are_rejected():
    with pytest.raises(ValueError, match="unknown behavior 'wishlist'"):
        Behaviors.parse("wishlist,buy")
    with pytest.raises(ValueError, match="repeats"):
        Behaviors.parse("cart,cart,buy")


def test_cypher_templates_accept_only_whitelisted_names():
    assert cypher("MATCH (u)-[:${REL}]->(i)", REL="CART") == "MATCH (u)-[:CART]->(i)"
    with pytest.raises(ValueError, match="not a graphrec label or relationship type"):
        cypher("MATCH (u)-[:${REL}]->(i)", REL="CART]->() DETACH DELETE u //")
    with pytest.raises(KeyError):
        cypher("MATCH (n:${LABEL})")


def test_config_unknown_key_names_the_valid_ones(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("ingest:\n  behaviours: [cart, buy]\n")
    with pytest.raises(ConfigError, match=r"ingest: unknown key\(s\) 'behaviours'; valid keys: format, behaviors"):
        load_config(p)


def test_config_overrides_are_typed_and_checked():
    cfg = load_config(None, ["ingest.split.seed=7", "ingest.behaviors=[view, buy]"])
    assert cfg.ingest.split.seed == 7 and cfg.ingest.behaviors == ["view", "buy"]
    with pytest.raises(ConfigError, match="ingest.split.seed: expected int"):
        load_config(None, ["ingest.split.seed=seven"])
    with pytest.raises(ConfigError, match="split.test must be one of"):
        load_config(None, ["ingest.split.test=first"])
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("novalue")


def test_shipped_configs_load(request):
    from pathlib import Path

    for p in sorted((Path(request.config.rootpath) / "configs").glob("*.yaml")):
        load_config(p)
