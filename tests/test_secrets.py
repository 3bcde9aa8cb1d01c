"""Credentials never appear in output, logs or files: every CLI command is run with a password
holding ``/ @ : ? #`` in NEO4J_URI, in NEO4J_PASSWORD and in --password, and everything printed and
every file written is searched for it."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest
from conftest import cli_commands

from graphrec.cli import main
from graphrec.neo4j.connection import redact

SECRET = "S3CR/ETPW@X9:Q7?Z5#K3"
PIECES = ("S3CR", "ETPW", "X9:Q7", "Z5#K3")  # what a parser that splits at / @ : ? # would leave behind

URIS = [
    f"bolt://neo4j:{SECRET}@127.0.0.1:1",
    "bolt://neo4j:SEC@RETPW@127.0.0.1:1",
    f"neo4j:{SECRET}@127.0.0.1:1",  # no //
    f"bolt://127.0.0.1:1?password={SECRET}",
    f"bolt://127.0.0.1:1#{SECRET}",
]


@pytest.mark.parametrize("uri, shown", [
    (URIS[0], "bolt://<redacted>@127.0.0.1:1"),
    (URIS[1], "bolt://<redacted>@127.0.0.1:1"),
    (URIS[2], "<redacted>@127.0.0.1:1"),
    (URIS[3], "bolt://<redacted>"),  # an @ in the query: which part is the host cannot be told
    (URIS[4], "bolt://<redacted>"),
    ("bolt://127.0.0.1:7687?password=x", "bolt://127.0.0.1:7687?<redacted>"),
    ("bolt://u:12?x@db.example:7687", "bolt://<redacted>@db.example:7687"),  # not "u:12"
    ("bolt://[::1]:7687", "bolt://[::1]:7687"),
    ("neo4j://db.example:7687", "neo4j://db.example:7687"),
])
def test_redact_keeps_the_host_and_no_piece_of_the_password(uri, shown):
    assert redact(uri) == shown


def _cases(tmp: Path) -> dict[tuple[str, ...], list[str]]:
    csv = tmp / "log.csv"
    csv.write_text("user,item,behavior\nu1,a,view\nu1,a,buy\nu2,b,buy\n")
    run = str(tmp / "no-run")
    return {
        ("neo4j",): ["neo4j", "status"],
        ("ingest",): ["ingest", "--dataset", "shop", "--source", str(csv)],
        ("datasets", "list"): ["datasets", "list"],
        ("datasets", "info"): ["datasets", "info", "beibei"],
        ("datasets", "fetch"): ["datasets", "fetch", "retailrocket", "--to", str(tmp / "ds")],
        ("datasets", "path"): ["datasets", "path", "beibei"],
        ("drop",): ["drop", "--dataset", "shop"],
        ("cypher", "list"): ["cypher", "list"],
        ("cypher", "run"): ["cypher", "run", "popular-items", "--param", "dataset=shop", "--param", "type=BUY",
                            "--param", "limit=5"],
        ("export",): ["export", "--dataset", "shop"],
        ("train",): ["train", "--model", "hpmr", "--dataset", "shop"],
        ("evaluate",): ["evaluate", "--run", run],
        ("recommend",): ["recommend", "--run", run, "--user", "0"],
        ("inspect",): ["inspect", "--dataset", "shop"],
        ("synth",): ["synth", "--events", "20", "--like", str(csv), "--out", str(tmp / "synth.csv")],
    }


NEO4J_PATHS = {("ingest",), ("drop",), ("cypher", "run"), ("export",), ("inspect",)}


def test_no_command_shows_the_password(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRAPHREC_HOME", str(home))
    monkeypatch.setenv("GRAPHREC_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("NEO4J_USERNAME", "neo4j")
    cases = _cases(tmp_path)
    assert set(cli_commands(leaves_only=True)) == set(cases), "every command needs a case here"
    outputs = []
    settings = [{"NEO4J_URI": uri} for uri in URIS]
    settings.append({"NEO4J_URI": "bolt://127.0.0.1:1", "NEO4J_PASSWORD": SECRET})
    for env in settings:
        for key in ("NEO4J_URI", "NEO4J_PASSWORD"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        for path, argv in cases.items():
            extra = ["--password", SECRET] if path in NEO4J_PATHS and "NEO4J_PASSWORD" in env else []
            try:
                main(["--home", str(home), *argv, *extra])
            except SystemExit:
                pass
            except Exception:  # a bug's traceback is output too: it must not carry the password either
                outputs.append(traceback.format_exc())
            out = capsys.readouterr()
            outputs.append(f"{path}\n{out.out}\n{out.err}")
            if path in NEO4J_PATHS:
                assert "Neo4j" in out.err, (path, out.err)  # the command got as far as the server
    text = "\n".join(outputs)
    for piece in PIECES:
        leaks = [line for line in text.splitlines() if piece in line]
        assert not leaks, leaks[:3]
    for f in tmp_path.rglob("*"):
        if f.is_file() and f.stat().st_size < 50_000_000:
            data = f.read_bytes()
            assert not any(p.encode() in data for p in PIECES), f
    assert os.environ["NEO4J_USERNAME"] == "neo4j"
