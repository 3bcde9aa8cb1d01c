"""graphrec synth: a synthetic log reproduces the profile it was generated from, exactly sized,
byte-for-byte repeatable, readable by ingest; bad sizes are refused without leaving files."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace

import pandas as pd
import pytest

from graphrec import synth
from graphrec.cli import main
from graphrec.errors import BadValue
from graphrec.ingest.readers import read_source

BEHAVIORS = ("view", "cart", "buy")
PROFILE = synth.Profile(
    source="hand-made", behaviors=BEHAVIORS, users=1000, items=2000, events=30_000, rows=33_000,
    pairs_log_mean=2.5, pairs_log_std=1.0, zipf_exponent=0.8,
    patterns={"view": 0.70, "view+cart": 0.12, "view+cart+buy": 0.10, "cart+buy": 0.04, "buy": 0.04},
    repeat_share={"view": 0.20, "cart": 0.05, "buy": 0.10}, repeat_mean={"view": 3.0, "cart": 2.0, "buy": 2.5},
    gaps={"view>cart": (math.log(30.0), 1.0), "cart>buy": (math.log(600.0), 0.8)},
    spread=(math.log(40_000.0), 1.5), time_range=(1_500_000_000, 1_510_000_000), has_timestamps=True)


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "log.parquet"
    return synth.generate(PROFILE, 300_000, out, seed=3)


def test_the_log_reproduces_the_profile_it_was_generated_from(generated):
    assert generated.rows == 300_000 and len(pd.read_parquet(generated.path)) == 300_000
    data = read_source(generated.path)                        # what ingest reads
    got = synth.profile(data.frame, data.behaviors.order, "synthetic")
    assert got.behaviors == BEHAVIORS and got.has_timestamps
    for name, share in PROFILE.patterns.items():
        assert got.patterns.get(name, 0.0) == pytest.approx(share, abs=0.01), name
    assert set(got.patterns) <= set(PROFILE.patterns)        # no pattern the profile does not have
    assert got.pairs_log_mean == pytest.approx(PROFILE.pairs_log_mean, abs=0.1)
    assert got.pairs_log_std == pytest.approx(PROFILE.pairs_log_std, abs=0.1)
    assert got.zipf_exponent == pytest.approx(PROFILE.zipf_exponent, abs=0.1)
    for b in BEHAVIORS:
        assert got.repeat_share[b] == pytest.approx(PROFILE.repeat_share[b], abs=0.02), b
        assert got.repeat_mean[b] == pytest.approx(PROFILE.repeat_mean[b], abs=0.3), b
    for key, (mu, sd) in PROFILE.gaps.items():
        assert got.gaps[key][0] == pytest.approx(mu, abs=0.15), key
        assert got.gaps[key][1] == pytest.approx(sd, abs=0.15), key
    assert got.time_range[0] >= PROFILE.time_range[0]


def test_same_seed_same_bytes_other_seed_other_log(generated, tmp_path):
    again = synth.generate(PROFILE, 300_000, tmp_path / "again.parquet", seed=3)
    other = synth.generate(PROFILE, 300_000, tmp_path / "other.parquet", seed=4)
    assert sha(again.path) == sha(generated.path) != sha(other.path)
    # At one catalogue size a shorter log is the longer one's prefix: chunks depend on (seed, chunk)
    longer = synth.generate(PROFILE, 20_000, tmp_path / "longer.parquet", seed=3, items=5_000)
    short = synth.generate(PROFILE, 1_000, tmp_path / "short.parquet", seed=3, items=5_000)
    assert pd.read_parquet(short.path).equals(pd.read_parquet(longer.path).iloc[:1_000])


def test_too_few_users_is_refused_and_leaves_no_file(tmp_path):
    with pytest.raises(BadValue, match="produced only"):
        synth.generate(PROFILE, 1_000_000, tmp_path / "x.parquet", users=10)
    assert list(tmp_path.iterdir()) == []


def test_csv_output_and_a_deduplicated_profile(tmp_path):
    flat = replace(PROFILE, repeat_share={b: 0.0 for b in BEHAVIORS})
    r = synth.generate(flat, 5_000, tmp_path / "log.csv", seed=0)
    frame = pd.read_csv(r.path)
    assert list(frame.columns) == ["user", "item", "behavior", "timestamp"] and len(frame) == 5_000
    assert not frame.duplicated(["user", "item", "behavior"]).any()


@pytest.mark.parametrize("text,value", [("1000", 1000), ("10M", 10_000_000), ("2.5k", 2_500), ("1_000", 1000)])
def test_counts(text, value):
    assert synth.parse_count(text) == value


def test_cli_writes_a_log_shaped_like_a_file_and_refuses_a_bad_count(tmp_path, capsys):
    source = tmp_path / "real.parquet"
    synth.generate(PROFILE, 20_000, source, seed=1)
    out = tmp_path / "big.parquet"
    assert main(["synth", "--events", "50k", "--like", str(source), "--out", str(out),
                 "--profile-out", str(tmp_path / "p.json")]) == 0
    assert len(pd.read_parquet(out)) == 50_000 and "view+cart+buy" in capsys.readouterr().out
    assert '"zipf_exponent"' in (tmp_path / "p.json").read_text()
    with pytest.raises(SystemExit) as e:
        main(["synth", "--events", "ten", "--like", str(source), "--out", str(out)])
    assert e.value.code == 2 and "not a count" in capsys.readouterr().err
