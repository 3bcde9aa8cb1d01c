"""The managed local Neo4j: build (Maven + javac), start, stop and status.

The server is Neo4j Community 5.26 embedded in our launcher (neo4j-runtime/), listening only for
Bolt on 127.0.0.1 at a free port. Its state (pid, port) is kept in ``HOME/neo4j/server.json``;
``stop`` signals only that recorded pid, and only after checking it is our launcher for this HOME.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from graphrec.errors import WorkFailed
from graphrec.paths import state_home

LAUNCHER_CLASS = "graphrec.Launcher"
# From Neo4j 5.26's default neo4j.conf (server.jvm.additional): the page cache and Netty need these.
JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+DisableExplicitGC",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dlog4j2.disable.jmx=true",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--enable-native-access=ALL-UNNAMED",
)
# Written to HOME/neo4j/neo4j.conf on first start; a user may edit it (the launcher still forces
# loopback-only networking and no usage reports after loading it).
DEFAULT_CONF = """\
# graphrec managed Neo4j: tuning only. Network settings are fixed by the launcher (Bolt on 127.0.0.1).
db.tx_log.rotation.retention_policy=2 files
db.tx_log.rotation.size=256M
"""


class Neo4jRuntimeError(WorkFailed, RuntimeError):
    """The managed Neo4j could not be built, started or stopped."""


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int
    home: str
    started_at: float

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"


def runtime_dir() -> Path:
    """neo4j-runtime/ of this checkout (overridable with GRAPHREC_NEO4J_RUNTIME)."""
    env = os.environ.get("GRAPHREC_NEO4J_RUNTIME")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "neo4j-runtime"


def default_home() -> Path:
    """Where graphrec keeps local state (``graphrec.paths.state_home``), as an absolute path."""
    return state_home().resolve()


def server_dir(home: Path) -> Path:
    return Path(home) / "neo4j"


def is_installed(runtime: Path | None = None) -> bool:
    rt = runtime or runtime_dir()
    return (rt / "target/classes/graphrec/Launcher.class").is_file() and any((rt / "target/lib").glob("neo4j-5.*.jar"))


def install(runtime: Path | None = None, log: Callable[[str], None] = print, force: bool = False) -> Path:
    """Fetch Neo4j's jars from Maven Central (mvn) and compile the launcher (javac). Idempotent."""
    rt = runtime or runtime_dir()
    src = rt / "src/main/java/graphrec/Launcher.java"
    cls = rt / "target/classes/graphrec/Launcher.class"
    for tool in ("java", "javac", "mvn"):
        if shutil.which(tool) is None:
            raise Neo4jRuntimeError(
                f"'{tool}' is not on PATH; the managed Neo4j needs a JDK 17+ and Maven "
                "(e.g. apt-get install openjdk-17-jdk-headless maven), or point graphrec at your own "
                "server with --uri / NEO4J_URI"
            )
    lib = rt / "target/lib"
    if force or not any(lib.glob("neo4j-5.*.jar")):
        log(f"fetching Neo4j jars with Maven into {lib} ...")
        _run(["mvn", "-B", "-q", "-f", str(rt / "pom.xml"), "dependency:copy-dependencies",
              f"-DoutputDirectory={lib}", "-DincludeScope=runtime"], "mvn dependency:copy-dependencies")
    if force or not cls.is_file() or cls.stat().st_mtime < src.stat().st_mtime:
        log("compiling the launcher ...")
        (rt / "target/classes").mkdir(parents=True, exist_ok=True)
        _run(["javac", "--release", "17", "-cp", str(lib / "*"), "-d", str(rt / "target/classes"), str(src)], "javac")
    return rt


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-20:]
        raise Neo4jRuntimeError(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def _state_file(home: Path) -> Path:
    return server_dir(home) / "server.json"


def _is_our_launcher(pid: int, home: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in cmdline]
    return LAUNCHER_CLASS in args and str(server_dir(home) / "data") in args


def status(home: Path | None = None) -> ServerInfo | None:
    """The running managed server for ``home``, or None (stale state files are removed)."""
    home = Path(home or default_home())
    sf = _state_file(home)
    if not sf.is_file():
        return None
    try:
        info = ServerInfo(**json.loads(sf.read_text()))
    except (ValueError, TypeError):
        sf.unlink(missing_ok=True)
        return None
    if not _is_our_launcher(info.pid, home):
        sf.unlink(missing_ok=True)
        return None
    return info


def make_private(home: Path) -> None:
    """``home`` and the server's files readable and writable by this user only: the managed server
    has no authentication, so its files must not be writable by other local users."""
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    d = server_dir(home)
    d.mkdir(mode=0o700, exist_ok=True)
    for root, dirs, files in os.walk(d):  # a server directory made by an older graphrec
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o600)


@contextmanager
def _lock(home: Path, name: str = ".lock") -> Iterator[None]:
    make_private(home)
    d = server_dir(home)
    with open(d / name, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    home: Path | None = None,
    *,
    heap: str = "2g",
    pagecache: str = "512m",
    timeout: float = 180.0,
    log: Callable[[str], None] = print,
) -> ServerInfo:
    """Start the managed server for ``home`` (or return the one already running)."""
    home = Path(home or default_home())
    with _lock(home):
        running = status(home)
        if running is not None:
            return running
        recover_store_swap(home)
        rt = runtime_dir()
        if not is_installed(rt):
            raise Neo4jRuntimeError(
                f"the Neo4j runtime is not built in {rt}; run `graphrec neo4j install` (or `make setup`) first"
            )
        sdir = server_dir(home)
        (sdir / "logs").mkdir(parents=True, exist_ok=True)
        conf = sdir / "neo4j.conf"
        if not conf.exists():
            conf.write_text(DEFAULT_CONF)
        java = os.environ.get("JAVA", "java")
        cp = os.pathsep.join([str(rt / "target/classes"), str(rt / "target/lib/*")])
        logfile = sdir / "logs/launcher.log"
        for attempt in range(3):
            port = _free_port()
            cmd = [java, f"-Xmx{heap}", *JVM_FLAGS, "-cp", cp, LAUNCHER_CLASS,
                   "--home", str(sdir / "data"), "--port", str(port),
                   "--pagecache", pagecache, "--conf-file", str(conf)]
            offset = logfile.stat().st_size if logfile.exists() else 0
            with open(logfile, "ab") as out:
                # A new session: the server outlives this command and is stopped by `graphrec neo4j stop`.
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, umask=0o077)  # its files: 0600, dirs 0700
            log(f"starting Neo4j (pid {proc.pid}) on 127.0.0.1:{port}, data in {sdir / 'data'} ...")
            ready = _wait_ready(proc, logfile, offset, port, timeout)
            if ready:
                info = ServerInfo(pid=proc.pid, port=port, home=str(home), started_at=time.time())
                _state_file(home).write_text(json.dumps(asdict(info)))
                return info
            text = logfile.read_bytes()[offset:].decode(errors="replace")
            if "BindException" in text or "Address already in use" in text:
                continue  # another process took the free port between probe and bind
            tail = "\n".join(text.strip().splitlines()[-25:])
            raise Neo4jRuntimeError(f"Neo4j did not start (see {logfile}):\n{tail}")
        raise Neo4jRuntimeError("Neo4j could not bind a free loopback port after 3 attempts")


def _wait_ready(proc: subprocess.Popen, logfile: Path, offset: int, port: int, timeout: float) -> bool:
    marker = f"READY bolt://127.0.0.1:{port}".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(logfile, "rb") as fh:
            fh.seek(offset)
            if marker in fh.read():
                return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    return False


def stop(home: Path | None = None, timeout: float = 60.0, kill: bool = False) -> ServerInfo | None:
    """Stop the managed server for ``home``; returns what was stopped, or None if none ran.

    ``kill=True`` sends SIGKILL (no clean shutdown), which tests use to simulate a crash.
    """
    home = Path(home or default_home())
    with _lock(home):
        info = status(home)
        if info is None:
            return None
        os.kill(info.pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(info.pid):
            time.sleep(0.2)
        if _alive(info.pid):
            os.kill(info.pid, signal.SIGKILL)
            while _alive(info.pid):
                time.sleep(0.1)
        _state_file(home).unlink(missing_ok=True)
        return info


def _alive(pid: int) -> bool:
    try:
        # The launcher is our child only when started in this process; reap it if so.
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return False


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """TCP sockets in LISTEN state owned by ``pid`` as (address, port), read from /proc (Linux)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table, v6 in (("tcp", False), ("tcp6", True)):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            out.append((_decode_addr(addr_hex, v6), int(port_hex, 16)))
    return out


def _decode_addr(h: str, v6: bool) -> str:
    raw = bytes.fromhex(h)
    if not v6:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc stores IPv6 as four little-endian 32-bit words
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


# --------------------------------------------------------------------------- the store, swapped whole

#: The parts of a database's store (under the DBMS data folder) that a bulk import replaces.
STORE_PARTS = ("databases", "transactions")
DATABASE = "neo4j"


def _store_root(home: Path) -> Path:
    return server_dir(home) / "data" / "data"


def _swap_dir(home: Path) -> Path:
    return server_dir(home) / "store-swap"


def has_store(home: Path) -> bool:
    """Whether the managed server of ``home`` has a ``neo4j`` database on disk (it was ever started)."""
    return (_store_root(Path(home)) / "databases" / DATABASE).exists()


def bulk_stage(home: Path) -> Path:
    """Where a bulk ingest writes its files and its imported store (same filesystem as the store)."""
    return server_dir(home) / "bulk-stage"


@contextmanager
def store_lock(home: Path) -> Iterator[None]:
    """One bulk ingest at a time per HOME (a lock of its own: it stops and starts the server inside)."""
    with _lock(Path(home), ".bulk.lock"):
        yield


def swap_in_store(home: Path, staged_data: Path) -> None:
    """Replace the ``neo4j`` database's store with the one imported into ``staged_data`` (the server
    stopped). A manifest says which parts existed; the old parts move aside, the new ones in, then a
    ``done`` mark; :func:`recover_store_swap` undoes a swap killed before the mark and finishes one
    killed after it, so the store is always either wholly old or wholly new."""
    home = Path(home)
    with _lock(home):
        if status(home) is not None:
            raise Neo4jRuntimeError(f"the managed Neo4j of {home} is running; its store cannot be replaced")
        recover_store_swap(home)
        root, swap = _store_root(home), _swap_dir(home)
        swap.mkdir(parents=True)
        had = {part: (root / part / DATABASE).exists() for part in STORE_PARTS}
        manifest = swap / "manifest.json"
        manifest.with_suffix(".tmp").write_text(json.dumps(had))
        os.replace(manifest.with_suffix(".tmp"), manifest)
        (swap / "old").mkdir()
        for part in STORE_PARTS:
            if had[part]:
                os.rename(root / part / DATABASE, swap / "old" / part)
        for part in STORE_PARTS:
            (root / part).mkdir(parents=True, exist_ok=True)
            os.rename(staged_data / part / DATABASE, root / part / DATABASE)
        (swap / "done").touch()
        shutil.rmtree(swap)


def recover_store_swap(home: Path) -> str | None:
    """Finish or undo a store swap that was killed (see :func:`swap_in_store`); what it did, or None."""
    root, swap = _store_root(Path(home)), _swap_dir(Path(home))
    if not swap.exists():
        return None
    if (swap / "done").exists():
        shutil.rmtree(swap)
        return "finished"
    manifest = swap / "manifest.json"
    had = json.loads(manifest.read_text()) if manifest.exists() else None
    if had is not None:
        for part in STORE_PARTS:
            live, old = root / part / DATABASE, swap / "old" / part
            if had[part] and not old.exists():
                continue  # never moved aside: the live part is the old one
            if live.exists():
                shutil.rmtree(live)  # a part of the new store, moved in before the kill
            if had[part]:
                os.rename(old, live)
    shutil.rmtree(swap)
    return "undone"
