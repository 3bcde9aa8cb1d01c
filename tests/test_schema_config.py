import pytest

from graphrec.config import ConfigError, load_config, parse_override
from graphrec.schema import BehaviorNameError, Behaviors, check_behavior, cypher, derived_name, rel_type


def test_derived_relations_are_every_ordered_pair_of_the_cascade():
    b = Behaviors.parse("pv,cart,buy")
    assert b.order == ("view", "cart", "buy")
    assert b.target == "buy"
    assert [r.rel_type for r in b.derived] == ["VIEW_NOT_CART", "VIEW_NOT_BUY", "CART_NOT_BUY"]
    assert derived_name("cart", "buy") == "cart_not_buy"


def test_named_behaviors_keep_the_given_order_and_become_safe_types():
    b = Behaviors.parse("like, Share,add_to_wishlist,transaction")
    assert b.order == ("like", "share", "add_to_wishlist", "transaction") and b.target == "transaction"
    assert [r.rel_type for r in b.derived][:3] == ["LIKE_NOT_SHARE", "LIKE_NOT_ADD_TO_WISHLIST", "LIKE_NOT_TRANSACTION"]
    assert rel_type("add_to_wishlist") == "ADD_TO_WISHLIST"
    assert cypher("MATCH ()-[:${REL}]->()", REL="ADD_TO_WISHLIST_NOT_TRANSACTION").endswith(
        "[:ADD_TO_WISHLIST_NOT_TRANSACTION]->()")


@pytest.mark.parametrize("bad", ["add-to-cart", "Add To Cart", "2buy", "cart__x", "not_bought", "buy_not",
                                 "rev_view", "recommended", "x" * 33, "view`]->() DELETE n //", ""])
def test_bad_behavior_names_are_refused_with_the_rule(bad):
    with pytest.raises(BehaviorNameError, match="lowercase letters and digits in words joined by single underscores"):
        Behaviors.parse([bad, "buy"])
    if bad != "recommended":  # RECOMMENDED is the write-back type, not a behavior
        with pytest.raises(ValueError, match="not a graphrec label or relationship type"):
            cypher("MATCH ()-[:${REL}]->()", REL=bad.upper())


def test_the_bad_name_error_says_how_to_map_it():
    with pytest.raises(BehaviorNameError, match=r"ingest.behavior_values=\{\"add-to-cart\": add_to_cart\}"):
        check_behavior("add-to-cart")


def test_repeated_behaviors_are_rejected():
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

    from graphrec.config import TrainConfig, model_params, train_config
    from graphrec.models import get_model

    presets = sorted((Path(request.config.rootpath) / "configs").glob("*.yaml"))
    assert len(presets) >= 6
    for p in presets:
        cfg = load_config(p)
        for name in cfg.models:  # every model section of every preset builds its typed params
            assert isinstance(model_params(cfg, name), get_model(name).params), (p.name, name)
            tc = train_config(cfg, name)
            assert isinstance(tc, TrainConfig) and tc.epochs >= 1 and tc.lr > 0, (p.name, name)
        if cfg.ingest.behaviors:
            assert len(set(cfg.ingest.behaviors)) == len(cfg.ingest.behaviors), p.name
