"""The data set registry and its verified downloads, against a real HTTP server on 127.0.0.1
(started by the test, serving copies of small files): a fetch that verifies, a corrupt file
refused and removed, a transfer cut short that leaves nothing passing as complete and succeeds on
retry, a missing file named by its URL, no network, the order in which a data set is looked for,
and a fresh clone that ingests Beibei from a loopback mirror with no --source."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import pytest

from graphrec import datasets as ds
from graphrec.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

A = b"0 1 2\n1 0\n"
B = b"0 3\n1 2\n"
C = b"views\n"


def _pin(name: str, data: bytes, optional: bool = False) -> ds.DataFile:
    return ds.DataFile(name, len(data), hashlib.sha256(data).hexdigest(),
                       hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(), optional=optional)


TINY = ds.Dataset("tinyset", "two small files", ("cart", "buy"), "ghcf", 2, 4,
                  (_pin("train.txt", A), _pin("test.txt", B), _pin("pv.txt", C, optional=True)),
                  license="test data", citation="-")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; files named in ``server.cut`` are sent half, then the connection closes."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.requests.append(self.path)
        name = self.path.rsplit("/", 1)[-1]
        if name in self.server.cut:
            body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.server.cut[name] -= 1
            if self.server.cut[name] == 0:
                del self.server.cut[name]
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _serve(folder: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(folder)))
    server.requests, server.cut = [], {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """The registry with TINY in it, a mirror folder holding its files, and empty local/cache roots."""
    monkeypatch.setattr(ds, "DATASETS", ds.DATASETS + (TINY,))
    mirror = tmp_path / "mirror"
    (mirror / "tinyset").mkdir(parents=True)
    for name, data in (("train.txt", A), ("test.txt", B), ("pv.txt", C)):
        (mirror / "tinyset" / name).write_bytes(data)
    monkeypatch.setenv("GRAPHREC_DATA", str(tmp_path / "local"))
    monkeypatch.setenv("GRAPHREC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GRAPHREC_DATASETS_MIRROR", raising=False)
    return mirror


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetch_verifies_and_second_fetch_downloads_nothing(tiny, tmp_path):
    with _serve(tiny) as (server, url):
        dest = ds.fetch("tinyset", mirror=url, progressbar=False)
        assert dest == tmp_path / "home" / "datasets" / "tinyset"
        assert (dest / "train.txt").read_bytes() == A and (dest / "test.txt").read_bytes() == B
        assert (dest / "pv.txt").read_bytes() == C
        assert _leftovers(dest) == ["pv.txt", "test.txt", "train.txt"]  # no temporary files
        n = len(server.requests)
        assert ds.fetch("tinyset", mirror=url, progressbar=False) == dest
        assert len(server.requests) == n == 3


def test_corrupt_file_is_refused_and_removed(tiny, monkeypatch):
    monkeypatch.setattr(ds, "RETRIES", 0)
    (tiny / "tinyset" / "test.txt").write_bytes(b"0 3\n1 9\n")  # same size, other bytes
    dest = ds.cache_root() / "tinyset"
    with _serve(tiny) as (_, url):
        with pytest.raises(ds.DatasetError) as e:
            ds.fetch("tinyset", mirror=url, progressbar=False)
    msg = str(e.value)
    want = hashlib.sha256(B).hexdigest()
    got = hashlib.sha256(b"0 3\n1 9\n").hexdigest()
    assert f"{url}/tinyset/test.txt" in msg and want in msg and got in msg and "fix:" in msg
    assert _leftovers(dest) == ["train.txt"]  # the verified one stays; nothing passes for test.txt


def test_cut_transfer_leaves_nothing_complete_and_a_retry_succeeds(tiny, monkeypatch):
    monkeypatch.setattr(ds, "RETRIES", 0)
    dest = ds.cache_root() / "tinyset"
    with _serve(tiny) as (server, url):
        server.cut["train.txt"] = 1
        with pytest.raises(ds.DatasetError):
            ds.fetch("tinyset", mirror=url, progressbar=False)
        assert _leftovers(dest) == []
        assert ds.fetch("tinyset", mirror=url, progressbar=False) == dest  # the next try starts again
        assert (dest / "train.txt").read_bytes() == A
        # with pooch's retries (the default) one cut transfer never reaches the caller
        monkeypatch.setattr(ds, "RETRIES", 1)
        (dest / "test.txt").unlink()
        server.cut["test.txt"] = 1
        ds.fetch("tinyset", mirror=url, progressbar=False)
        assert (dest / "test.txt").read_bytes() == B


def test_missing_file_names_its_url_and_optional_files_may_be_missing(tiny, monkeypatch):
    monkeypatch.setattr(ds, "RETRIES", 0)
    (tiny / "tinyset" / "pv.txt").unlink()
    with _serve(tiny) as (_, url):
        dest = ds.fetch("tinyset", mirror=url, progressbar=False)  # pv.txt is optional
        assert _leftovers(dest) == ["test.txt", "train.txt"]
        (tiny / "tinyset" / "test.txt").unlink()
        (dest / "test.txt").unlink()
        with pytest.raises(ds.DatasetError, match=rf"{url}/tinyset/test.txt: HTTP 404"):
            ds.fetch("tinyset", mirror=url, progressbar=False)


def test_no_network_is_one_clear_error_with_the_way_by_hand(tiny, monkeypatch):
    monkeypatch.setattr(ds, "RETRIES", 0)
    with _serve(tiny) as (_, url):
        pass  # the port is closed again: nothing answers there
    with pytest.raises(ds.DatasetError) as e:
        ds.fetch("tinyset", mirror=url, progressbar=False)
    msg = str(e.value)
    assert "cannot download" in msg and f"{url}/tinyset/train.txt" in msg
    assert "fix: put train.txt, test.txt in" in msg and "GRAPHREC_DATASETS_MIRROR" in msg
    with pytest.raises(ds.DatasetError, match="does not answer"):
        ds.probe("tinyset", mirror=url, timeout=2)


def test_resolution_order(tiny, tmp_path, monkeypatch):
    local, cache = tmp_path / "local" / "tinyset", tmp_path / "home" / "datasets" / "tinyset"
    with _serve(tiny) as (server, url):
        # 4. nothing here: downloaded into the cache
        assert ds.resolve("tinyset", mirror=url) == cache and len(server.requests) == 3
        # 3. the cache, verified, without a request
        assert ds.resolve("tinyset", mirror=url) == cache and len(server.requests) == 3
        # 2. a complete local folder wins over the cache
        local.mkdir(parents=True)
        (local / "train.txt").write_bytes(A)
        (local / "test.txt").write_bytes(B)
        assert ds.resolve("tinyset", mirror=url) == local
        # ... but not one whose file differs from the registry's
        (local / "test.txt").write_bytes(b"0 3\n1 1\n")
        warnings = []
        assert ds.resolve("tinyset", mirror=url, log=warnings.append) == cache
        assert any("is not the registered file" in w for w in warnings)
        # 1. an explicit source, as given
        assert ds.resolve("tinyset", source=tmp_path / "mine", mirror=url) == tmp_path / "mine"
        # the default local root is ../shared/data beside the repository
        monkeypatch.delenv("GRAPHREC_DATA")
        assert ds.data_root() == (SHARED if SHARED.is_dir() else None)
        # an optional file present locally must verify too
        monkeypatch.setenv("GRAPHREC_DATA", str(tmp_path / "local"))
        (local / "test.txt").write_bytes(B)
        (local / "pv.txt").write_bytes(b"other\n")
        assert ds.locate("tinyset") == (cache, "cache")
        assert len(server.requests) == 3


def test_mbcgcn_prepare_rebuilds_graphrec_layout():
    """MB-CGCN's tab-separated per-behavior files plus MuLe's 1-based view pairs → per-user text."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = {"Data/buy/train.txt": "0\t2\t0\n1\t1", "Data/buy/test.txt": "0\t1\n1\t0",
                 "Data/cart/train.txt": "0\t2\n1\t1\t2", "Data/cart/test.txt": "0\t1\n1\t0",
                 "data/taobao/view.txt": "1 1\n1 3\n2 2\n"}
        inputs = {}
        for key, text in files.items():
            inputs[key] = tmp / key.replace("/", "__")
            inputs[key].write_text(text)
        out = tmp / "out"
        out.mkdir()
        ds.prepare_mbcgcn(inputs, out)
        assert (out / "train.txt").read_text() == "0 2 0\n1 1\n"
        assert (out / "test.txt").read_text() == "0 1\n1 0\n"
        assert (out / "cart.txt").read_text() == "0 2 1\n1 1 2 0\n"
        assert (out / "pv.txt").read_text() == "0 0 2\n1 1\n"


@pytest.mark.skipif(not (SHARED / "taobao_mbcgcn").is_dir(), reason="../shared/data/taobao_mbcgcn is not here")
def test_mbcgcn_prepare_reproduces_the_registered_files_from_their_upstream_form(tmp_path):
    """Write the shared copy back into the published form (tabs, no final newline; the cart test item
    last; 1-based sorted view pairs): sizes equal the published files', and prepare gives back
    exactly the registered bytes."""
    src, entry = SHARED / "taobao_mbcgcn", ds.get("taobao_mbcgcn")
    lines = {n: (src / n).read_text().splitlines() for n in ("train.txt", "test.txt", "cart.txt", "pv.txt")}

    def tabs(rows):
        return "\n".join("\t".join(r.split()) for r in rows)

    upstream = {"Data/buy/train.txt": tabs(lines["train.txt"]), "Data/buy/test.txt": tabs(lines["test.txt"]),
                "Data/cart/train.txt": tabs(" ".join(r.split()[:-1]) for r in lines["cart.txt"]),
                "Data/cart/test.txt": tabs(" ".join(r.split()[::len(r.split()) - 1]) for r in lines["cart.txt"]),
                "data/taobao/view.txt": "".join(f"{int(r.split()[0]) + 1} {int(i) + 1}\n"
                                                for r in lines["pv.txt"] for i in r.split()[1:])}
    inputs = {}
    for up in entry.inputs:
        inputs[up.path] = tmp_path / up.path.replace("/", "__")
        inputs[up.path].write_text(upstream[up.path])
        assert ds.mismatch(inputs[up.path], up) is None, up.path
    out = tmp_path / "out"
    out.mkdir()
    ds.prepare_mbcgcn(inputs, out)
    assert all(ds.mismatch(out / f.name, f) is None for f in entry.files)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data (the team's local copy) is not here")
def test_registry_pins_the_local_copies():
    """Every registered file present in ../shared/data verifies, every data file there is registered."""
    for entry in ds.DATASETS:
        folder = SHARED / entry.name
        assert folder.is_dir(), entry.name
        here = {p.name for p in folder.iterdir()} - {"SOURCE.md"}
        assert here == {f.name for f in entry.files if (folder / f.name).exists()}, entry.name
        assert here >= {f.name for f in entry.required}, entry.name
        for f in entry.files:
            if (folder / f.name).exists():
                assert ds.mismatch(folder / f.name, f) is None, (entry.name, f.name)
            if f.upstream and f.upstream.size is not None and f.size is not None:
                assert f.upstream.size == f.size and f.upstream.git_blob == f.git_blob  # byte-identical


def test_every_entry_can_be_fetched_from_somewhere():
    for entry in ds.DATASETS:
        assert all(f.sha256 or f.git_blob for f in entry.files), entry.name
        direct = all(f.upstream for f in entry.files)
        assert direct or entry.prepare or entry.no_url, entry.name
        if entry.prepare:
            assert entry.prepare in ds.PREPARE and entry.inputs and all(f.sha256 for f in entry.files)


def test_readme_data_set_table_is_the_registry():
    from graphrec.progress import format_table

    table = format_table(ds.LIST_HEADERS, ds.listing())
    assert table in (ROOT / "README.md").read_text(), "regenerate README's table: graphrec datasets list"


def test_cli_list_info_path_and_unknown_names(tiny, capsys):
    assert main(["datasets", "list"]) == 0
    assert "tinyset" in capsys.readouterr().out
    assert main(["datasets", "info", "tinyset"]) == 0
    assert hashlib.sha256(A).hexdigest() in capsys.readouterr().out
    assert main(["datasets", "path", "tinyset"]) == 3
    assert "graphrec datasets fetch tinyset" in capsys.readouterr().err
    assert main(["datasets", "info", "nosuch"]) == 2
    assert "is not a data set graphrec knows" in capsys.readouterr().err
    assert main(["ingest", "--dataset", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "--source PATH" in err and "Traceback" not in err


def test_make_data_check_fails_fast_without_network_or_data(tmp_path):
    """The standard-library probe `make demo` runs before setup: no data here and nothing that
    answers gives one error, at once, saying how to put the files in place."""
    env = {**os.environ, "GRAPHREC_DATA": str(tmp_path / "none"), "GRAPHREC_HOME": str(tmp_path / "home"),
           "GRAPHREC_DATASETS_MIRROR": "http://127.0.0.1:9/"}  # port 9 (discard): closed here
    r = subprocess.run([sys.executable, "-S", "-m", "graphrec.datasets", "check", "beibei"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "does not answer" in r.stderr and "fix: put train.txt" in r.stderr


@pytest.mark.neo4j
@pytest.mark.skipif(not (SHARED / "beibei").is_dir(), reason="../shared/data/beibei is not here to mirror")
def test_fresh_clone_ingests_beibei_from_a_loopback_mirror(neo4j_server, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    env = {**os.environ, "GRAPHREC_DATA": str(tmp_path / "empty"), "GRAPHREC_HOME": str(tmp_path / "home")}
    try:
        with _serve(SHARED) as (server, url):
            env["GRAPHREC_DATASETS_MIRROR"] = url
            r = subprocess.run([sys.executable, "-m", "graphrec.cli", *neo4j_server.cli_args(), "ingest",
                                "--dataset", "beibei", *neo4j_server.conn_args()],
                               cwd=clone, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"{url}/beibei/train.txt" in r.stderr and "downloaded; verified" in r.stderr
        assert "BUY:test" in r.stdout and "21,716" in r.stdout  # one test purchase per user
        cached = tmp_path / "home" / "datasets" / "beibei"
        assert all(ds.mismatch(cached / f.name, f) is None for f in ds.get("beibei").required)
    finally:
        from graphrec.ingest.load import delete_dataset

        delete_dataset(neo4j_server.driver, "beibei")
