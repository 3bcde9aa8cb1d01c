"""CLI: help for every command, exit codes and exact error text, cypher and inspect against Neo4j."""

import json

import pytest
from conftest import cli_commands

from graphrec.cli import build_parser, main


def test_every_command_has_help(capsys):
    paths = cli_commands()
    assert {("ingest",), ("train",), ("datasets", "fetch"), ("cypher", "run")} <= set(paths)
    for path in [(), *paths]:
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args([*path, "--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0 and out.startswith(f"usage: graphrec {' '.join(path)}".rstrip()), path
        assert "--help" in out and len(out.splitlines()) >= 3, path


def test_cypher_list_names_every_query(capsys):
    assert main(["cypher", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("datasets", "rel-counts", "pair-overlap", "degree-quantiles", "popular-items", "user-history"):
        assert f"| {name} " in out


def test_cypher_run_errors_name_the_fix(capsys):
    assert main(["cypher", "run", "nosuch"]) == 2
    assert "no query named 'nosuch'; among choices: datasets," in capsys.readouterr().err
    assert main(["cypher", "run", "popular-items", "--param", "dataset=x"]) == 2
    assert "needs --param type=... (str)" in capsys.readouterr().err
    assert main(["cypher", "run", "popular-items", "--param", "dataset=x", "--param", "type=BUY",
                 "--param", "limit=ten"]) == 2
    assert "parameter limit must be a whole number >= 0, got 'ten'" in capsys.readouterr().err
    assert main(["cypher", "run", "popular-items", "--param", "dataset=x", "--param", "type=BUY",
                 "--param", "limit=-1"]) == 2  # refused before Neo4j sees it
    assert "parameter limit must be a whole number >= 0, got '-1'" in capsys.readouterr().err


def test_list_flags_and_set_values_are_usage_errors_naming_the_flag(capsys, tiny_csv):
    for argv, says in (
        (["evaluate", "--run", "r", "--ks", "10,x"], "argument --ks: 'x' in '10,x' is not a whole number"),
        (["evaluate", "--run", "r", "--ks", "0"], "argument --ks: '0' in '0' must be >= 1"),
        (["ingest", "--dataset", "x", "--source", str(tiny_csv), "--behaviors", ","],
         "argument --behaviors: '' in ',' is not a behavior name"),
        (["recommend", "--run", "r", "--user", "1", "--weights", "1,x"], "argument --weights: 'x' in '1,x'"),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and says in capsys.readouterr().err
    for setting, says in (("ingest.columns.user=[a,b]", "ingest.columns.user: expected str, got ['a', 'b']"),
                          ("ingest.split.seed=[1", "--set ingest.split.seed: the value '[1' is not valid YAML")):
        assert main(["ingest", "--dataset", "x", "--source", str(tiny_csv), "--set", setting]) == 2
        assert says in capsys.readouterr().err
    assert main(["evaluate", "--run", "/nonexistent"]) == 2
    assert "/nonexistent is not a run directory" in capsys.readouterr().err


def test_bad_dataset_name_and_config_key(capsys, tiny_csv):
    assert main(["ingest", "--dataset", "bad name!", "--source", str(tiny_csv)]) == 2
    assert "dataset name 'bad name!' is not allowed" in capsys.readouterr().err
    assert main(["ingest", "--dataset", "x", "--source", str(tiny_csv), "--set", "ingest.sead=1"]) == 2
    assert "unknown key(s) 'sead'" in capsys.readouterr().err


def test_remote_uri_credentials_never_printed(capsys, tiny_csv):
    code = main(["ingest", "--dataset", "x", "--source", str(tiny_csv), "--uri", "bolt://alice:s3cret@127.0.0.1:1"])
    text = "".join(capsys.readouterr())
    assert code == 2
    assert "Neo4j URI 'bolt://<redacted>@127.0.0.1:1' must not contain credentials; pass them in NEO4J_USERNAME" in text
    assert "s3cret" not in text and "alice" not in text
    code = main(["ingest", "--dataset", "x", "--source", str(tiny_csv), "--uri", "bolt://127.0.0.1:1",
                 "--username", "alice", "--password", "hunter2"])
    text = "".join(capsys.readouterr())
    assert code == 1
    assert "cannot reach Neo4j at bolt://127.0.0.1:1" in text
    assert "hunter2" not in text


def _squash(text: str) -> str:
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


@pytest.mark.neo4j
def test_ingest_inspect_and_cypher_run_end_to_end(neo4j_db, tiny_csv, dataset_name, capsys):
    base = neo4j_db.cli_args()
    conn = neo4j_db.conn_args()
    assert main(base + ["ingest", "--dataset", dataset_name, "--source", str(tiny_csv)] + conn) == 0
    out = _squash(capsys.readouterr().out)
    assert f"dataset {dataset_name}: loaded" in out and "| VIEW_NOT_BUY | derived | 4 |" in out

    assert main(base + ["inspect", "--dataset", dataset_name] + conn) == 0
    report = _squash(capsys.readouterr().out)
    # funnel: view→cart 6 view pairs, 5 cart pairs, 4 both (u1a,u1b,u2c,u3b) → 66.67%, 1 cart without view (u3c)
    assert "| view → cart | 6 | 5 | 4 | 66.67% | 1 |" in report
    # buy without view: u1d → 1; cart→buy: both = u1a,u1b,u2c = 3 of 5 carts
    assert "| cart → buy | 5 | 5 | 3 | 60.00% | 2 |" in report
    assert "| view → buy | 6 | 5 | 4 | 66.67% | 1 |" in report
    assert "| 1 | a | 2 |" in report  # most popular purchased item

    assert main(base + ["cypher", "run", "popular-items", "--param", f"dataset={dataset_name}", "--param",
                        "type=BUY", "--param", "limit=1", "--format", "json"] + conn) == 0
    assert json.loads(capsys.readouterr().out) == [{"item": "a", "interactions": 2}]

    assert main(base + ["inspect", "--dataset", "nosuch_ds"] + conn) == 2
    assert "no dataset named 'nosuch_ds'" in capsys.readouterr().err


def test_only_graphrec_errors_become_messages_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    import importlib
    import pkgutil

    import graphrec
    import graphrec.ingest
    from graphrec import cli
    from graphrec.errors import BadValue, UnknownId, UserError, WorkFailed

    classes = set()
    for pkg in (graphrec, graphrec.ingest):  # editable installs map ingest/ outside graphrec/ on disk
        for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if mod.name.endswith(".__main__"):
                continue
            m = importlib.import_module(mod.name)
            classes |= {c for c in vars(m).values() if isinstance(c, type) and issubclass(c, (UserError, WorkFailed))}
    assert len(classes) >= 20  # every module's own error types, found by walking the packages
    for c in classes:
        want = cli.EXIT_INPUT if issubclass(c, UserError) else cli.EXIT_FAILURE
        assert cli.exit_code(c.__new__(c)) == want, c
    assert cli.exit_code(ConnectionError("refused")) == cli.EXIT_FAILURE
    for bug in (ValueError("x"), KeyError("y"), RuntimeError("z"), TypeError("t")):
        assert cli.exit_code(bug) is None
    # through main(): a graphrec error is a message and an exit code, anything else propagates
    monkeypatch.setattr(cli, "cmd_drop", lambda args: (_ for _ in ()).throw(BadValue("bad --dataset")))
    assert cli.main(["drop", "--dataset", "x"]) == cli.EXIT_INPUT
    assert capsys.readouterr().err.strip() == "error: bad --dataset"
    monkeypatch.setattr(cli, "cmd_drop", lambda args: (_ for _ in ()).throw(UnknownId("unknown user '7'")))
    assert cli.main(["drop", "--dataset", "x"]) == cli.EXIT_INPUT
    assert capsys.readouterr().err.strip() == "error: unknown user '7'"
    monkeypatch.setattr(cli, "cmd_drop", lambda args: {}["missing"])
    with pytest.raises(KeyError):
        cli.main(["drop", "--dataset", "x"])


def test_a_shipped_preset_is_the_default_config_of_its_data_set(capsys, tmp_path):
    from graphrec.config import PRESETS_DIR, preset_for

    assert preset_for("taobao_mbcgcn") == PRESETS_DIR / "taobao_mbcgcn.yaml"
    assert preset_for("my_shop") is None and preset_for(None) is None
    code = main(["--home", str(tmp_path), "ingest", "--dataset", "retailrocket",
                 "--source", str(tmp_path / "none.csv")])
    err = capsys.readouterr().err
    assert code == 2 and f"config: the preset {PRESETS_DIR / 'retailrocket.yaml'}" in err
    assert "source does not exist" in err
