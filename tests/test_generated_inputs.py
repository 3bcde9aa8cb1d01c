"""Generated bad input through the real CLI entry point (``graphrec.cli.main``), more than 1,000
cases: every one ends in exit 2 with the file, the line where there is one, and a fix, or is
accepted by validation; never a traceback and never more than 10 s.

Each case is built so that its outcome is known: a valid log with one defect injected at a known
line must be refused at that line; a valid log in one of many accepted forms must be accepted and
read to the distinct (user, item, behavior) triples it holds. Accepted logs go on to the Neo4j
step, which is pointed at a closed port here (the load itself is tested in test_ingest_neo4j.py),
so acceptance shows as the one-line connection error, exit 1."""

from __future__ import annotations

import gzip
import re
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphrec.cli import main
from graphrec.ingest.readers import read_source

NO_SERVER = ["--uri", "bolt://127.0.0.1:1"]
OUTCOMES: Counter = Counter()
# the words with which graphrec's messages say what to do (argparse's usage errors show the usage line)
FIX = re.compile(r"fix:|\buse\b|\bpass\b|\bgive\b|\btrain (one|a new)\b|\bretrain\b|\bchoose\b|\bcheck\b|"
                 r"\bput\b|\bquote\b|\brename\b|\bmap\b|\bshorten\b|\bpoint\b|\brun\b|\bre-encode\b|\bremove\b|\badd\b|"
                 r"\bname it\b|among choices|\bcreate\b|\bexport\b|its parameters|usage: graphrec", re.I)
LIMIT_S = 10.0


def _run(argv: list[str], capsys) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse usage errors
        code = e.code
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert seconds < LIMIT_S, (argv, seconds)
    return code, err, seconds


def _refused(cls: str, code: int, err: str, path: Path | None = None, line: int | None = None) -> None:
    assert code == 2, err
    assert FIX.search(err), f"no fix in: {err}"
    if path is not None:
        assert str(path) in err, err
    if line is not None:
        assert f"{path}:{line}:" in err, err
    assert len(err) < 4000, "an error message stays short whatever the input"
    OUTCOMES[(cls, "exit 2 with file/line/fix")] += 1


def _accepted(cls: str, code: int, err: str) -> None:
    assert code == 1 and "cannot reach Neo4j" in err, err
    OUTCOMES[(cls, "accepted (then the closed Neo4j port)")] += 1


# ------------------------------------------------------------------------------ logs with one defect

ids = st.text(alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd")), min_size=1, max_size=8)
rows = st.lists(st.tuples(ids, ids, st.sampled_from(["view", "cart", "buy"]),
                          st.integers(min_value=1_400_000_000, max_value=1_500_000_000)), min_size=2, max_size=30)

DEFECTS = {
    # name: (how the bad row's fields are rewritten, the reason the error must give)
    "missing trailing field": (lambda f: f[:3], "fields, the header has 4"),
    "extra field": (lambda f: f + ["x"], "fields, the header has 4"),
    "timestamp inf": (lambda f: f[:3] + ["inf"], "not a finite number"),
    "timestamp 1e20": (lambda f: f[:3] + ["1e20"], "out of range"),
    "timestamp 25 digits": (lambda f: f[:3] + ["1" * 25], "out of range"),
    "timestamp 100k digits": (lambda f: f[:3] + ["7" * 100_000], "longer than"),
    "timestamp now": (lambda f: f[:3] + ["now"], "relative"),
    "timestamp today": (lambda f: f[:3] + ["today"], "relative"),
    "timestamp word": (lambda f: f[:3] + ["soon-ish"], "relative"),
    "timestamp garbage": (lambda f: f[:3] + ["12:xx:99"], "neither a number nor a date"),
    "timestamp in ms among seconds": (lambda f: f[:3] + [str(int(f[3]) * 1000)], "another unit"),
    "empty user": (lambda f: [""] + f[1:], "empty user id"),
    "empty item": (lambda f: [f[0], ""] + f[2:], "empty item id"),
    "newline in id": (lambda f: ['"' + f[0] + '\nx"'] + f[1:], "control character"),
    "NUL in id": (lambda f: [f[0] + "\x00"] + f[1:], "control character"),
    "overlong id": (lambda f: ["u" * 300] + f[1:], "longer than 256"),
    "20 MB id": (lambda f: ["u" * 2_000_000] + f[1:], "longer than 256"),
    "unknown behavior": (lambda f: f[:2] + ["teleport"] + f[3:], "unknown behavior"),
}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=rows, where=st.integers(min_value=0), defect=st.sampled_from(sorted(DEFECTS)))
def test_a_log_with_one_defect_is_refused_at_its_line(tmp_path, capsys, base, where, defect):
    rewrite, reason = DEFECTS[defect]
    bad = where % len(base)
    lines = ["user,item,behavior,timestamp"]
    for k, (u, i, b, ts) in enumerate(base):
        fields = [u, i, b, str(ts)]
        lines.append(",".join(rewrite(fields) if k == bad else fields))
    path = tmp_path / f"log-{defect.replace(' ', '_')}.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, err, _ = _run(["ingest", "--dataset", "g", "--source", str(path), *NO_SERVER], capsys)
    _refused(f"defect: {defect}", code, err, path, bad + 2)
    assert reason in err, err


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=rows, where=st.integers(min_value=0), junk=st.binary(min_size=1, max_size=6))
def test_bytes_that_are_not_utf8_are_refused_at_their_line(tmp_path, capsys, base, where, junk):
    bad = where % len(base)
    out = [b"user,item,behavior,timestamp"]
    for k, (u, i, b, ts) in enumerate(base):
        user = u.encode() + (b"\xff" + junk if k == bad else b"")
        out.append(b",".join([user, i.encode(), b.encode(), str(ts).encode()]))
    path = tmp_path / "log.csv"
    path.write_bytes(b"\n".join(out) + b"\n")
    code, err, _ = _run(["ingest", "--dataset", "g", "--source", str(path), *NO_SERVER], capsys)
    if b"\n" in junk or b"\r" in junk or b"," in junk:
        _refused("non-UTF-8 bytes (line structure changed)", code, err, path)
    else:
        _refused("non-UTF-8 bytes", code, err, path, bad + 2)
        assert "not UTF-8" in err


# ---------------------------------------------------------------------------------- accepted forms

FORMS = {
    "unix seconds": lambda ts: str(ts),
    "unix milliseconds": lambda ts: str(ts * 1000),
    "unix nanoseconds": lambda ts: str(ts * 1_000_000_000),
    "iso date-time": lambda ts: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)),
    "hour resolution": lambda ts: time.strftime("%Y-%m-%d %H", time.gmtime(ts)),
    "fractional seconds": lambda ts: f"{ts}.25",
}


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=rows, form=st.sampled_from(sorted(FORMS)), quote=st.booleans(), dup=st.booleans())
def test_valid_logs_in_many_forms_are_accepted_with_their_triples(tmp_path, capsys, base, form, quote, dup):
    if not any(b == "buy" for _, _, b, _ in base):
        base = base + [(base[0][0], base[0][1], "buy", base[0][3])]
    if dup:
        base = base + base[:3]
    q = (lambda s: '"' + s.replace('"', '""') + '"') if quote else (lambda s: s)
    lines = ["user,item,behavior,timestamp"] + [",".join([q(u), q(i), b, FORMS[form](ts)]) for u, i, b, ts in base]
    path = tmp_path / "log.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, err, _ = _run(["ingest", "--dataset", "g", "--source", str(path), *NO_SERVER], capsys)
    _accepted(f"valid: {form}", code, err)
    data = read_source(path)
    assert len(data.frame) == len({(u, i, b) for u, i, b, _ in base})


# ------------------------------------------------------------------------------------ fixed corpora


def _corpus(tmp: Path) -> list[tuple[str, list[str], Path | None, int | None]]:
    """(class, argv, file the error must name or None, line or None)."""
    cases = []

    def write(name: str, data: bytes) -> Path:
        p = tmp / name
        p.write_bytes(data)
        return p

    for k, data in enumerate([b"", b"\n", b"   \n", b"user,item\nu,i\n", b"user,item,behavior\n", b"\xff\xfe\x00\x00",
                              b"user,item,behavior\n\"u,i,buy\n", b"a,a,a\n1,2,3\n", bytes(range(256)),
                              b"user;item;behavior\nu;i;buy\n"]):
        p = write(f"odd{k}.csv", data)
        cases.append(("odd csv files", ["ingest", "--dataset", "g", "--source", str(p)], p, None))
    gz = write("log.csv.gz", b"not gzip at all")
    cases.append((".gz that is not gzip", ["ingest", "--dataset", "g", "--source", str(gz)], gz, None))
    good = gzip.compress(b"user,item,behavior\nu,i,buy\n")
    cut = write("cut.csv.gz", good[: len(good) // 2])
    cases.append(("truncated .gz", ["ingest", "--dataset", "g", "--source", str(cut)], cut, None))
    folder = tmp / "peruser"
    folder.mkdir()
    for k, text in enumerate(["0 1 x\n", "-1 2\n", "\x00 1\n", "0 1.5\n", "a 1\n", "0 1e3\n"]):
        (folder / "train.txt").write_text(text)
        (folder / "test.txt").write_text("0 1\n")
        sub = tmp / f"peruser{k}"
        sub.mkdir()
        for f in folder.iterdir():
            (sub / f.name).write_bytes(f.read_bytes())
        cases.append(("per-user folder lines", ["ingest", "--dataset", "g", "--source", str(sub)], None, None))
    log = write("ok.csv", b"user,item,behavior\nu1,a,buy\nu2,b,buy\n")
    base = ["ingest", "--dataset", "g", "--source", str(log)]
    for flag in [["--behaviors", ","], ["--behaviors", "[view"], ["--behaviors", "view,,buy"], ["--behaviors", "a b"],
                 ["--set", "ingest.columns.user=[a,b]"], ["--set", "ingest.split.seed=[1"], ["--set", "nosuch=1"],
                 ["--set", "ingest.split.seed=abc"], ["--set", "="], ["--set", "ingest.behaviors={a: 1}"],

                 ["--dataset", "bad name!"], ["--format", "parquet"], ["--test", str(tmp / "nope.csv")],
                 ["--config", str(tmp / "nope.yaml")]]:
        cases.append(("bad flags and config values", base + flag, None, None))
    timed = write("timed.csv", b"user,item,behavior,timestamp\nu1,a,buy,1417806000\n,b,buy,1417806001\n")
    for flag in (["--set", "ingest.time_format=%Q-%d"], ["--rejects", "/proc/none/x.tsv", "--skip-bad-rows"]):
        cases.append(("bad flags and config values", ["ingest", "--dataset", "g", "--source", str(timed), *flag],
                      None, None))
    yaml_bad = write("bad.yaml", b"train: [unclosed\n")
    yaml_list = write("list.yaml", b"- 1\n- 2\n")
    for cfg in (yaml_bad, yaml_list):
        cases.append(("bad config files", base + ["--config", str(cfg)], cfg, None))
    for argv in (["evaluate", "--run", str(tmp), "--ks", "10,x"], ["evaluate", "--run", str(tmp), "--ks", "0"],
                 ["evaluate", "--run", str(tmp / "none")], ["recommend", "--run", str(tmp / "none"), "--user", "1"],
                 ["recommend", "--run", str(tmp), "--user", "1", "--weights", "1,x"],
                 ["cypher", "run", "popular-items", "--param", "dataset=x", "--param", "type=BUY", "--param",
                  "limit=-1"], ["cypher", "run", "nosuch"], ["cypher", "run", "popular-items", "--param", "oops"],
                 ["train", "--model", "nosuch", "--snapshot", str(tmp)], ["train", "--model", "hpmr"],
                 ["inspect", "--snapshot", str(tmp / "none")], ["datasets", "info", "nosuch"],
                 ["ingest", "--dataset", "nosuch_registered"]):
        cases.append(("other commands", argv, None, None))
    return cases


def test_fixed_corpora_of_bad_files_flags_and_values(tmp_path, capsys):
    cases = _corpus(tmp_path)
    for cls, argv, path, line in cases:
        code, err, _ = _run(argv + (NO_SERVER if argv[0] in ("ingest", "cypher") else []), capsys)
        try:
            _refused(cls, code, err, path, line)
        except AssertionError as exc:
            raise AssertionError(f"{argv}: {exc}") from None
    assert len(cases) >= 45


def test_zz_report_the_generated_cases(capsys):
    """Runs last in this module: the cases per class and their outcomes (at least 1,000 in all)."""
    total = sum(OUTCOMES.values())
    with capsys.disabled():
        print(f"\ngenerated-input suite: {total} cases")
        for (cls, outcome), n in sorted(OUTCOMES.items()):
            print(f"  {n:5d}  {cls:45s} {outcome}")
    assert total >= 1000, total
