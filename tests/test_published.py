"""graphrec.published: the ablation-ordering check that bench/reproduce.py reports."""

from graphrec.published import ABLATIONS, ablation_order_violations


def test_published_table4_satisfies_its_own_ordering():
    for dataset, full in (("beibei", 0.2375), ("taobao", 0.0948)):
        hr = {"full": full} | {v: x for (d, v), x in ABLATIONS.items() if d == dataset}
        assert ablation_order_violations(hr) == []


def test_violations_name_the_broken_pairs_and_skip_missing_variants():
    hr = {"full": 0.20, "w/o URR": 0.21, "w/o URS": 0.19, "w/o SIT": 0.18, "w/o PTN": 0.185}
    assert ablation_order_violations(hr) == ["full 0.2000 <= w/o URR 0.2100", "w/o SIT 0.1800 <= w/o PTN 0.1850"]
    assert ablation_order_violations({"full": 0.2, "w/o PTN": 0.3}) == []  # no pair has both ends
    assert ablation_order_violations({"w/o URS": 0.2, "w/o PTN": 0.2}) == ["w/o URS 0.2000 <= w/o PTN 0.2000"]
