"""``graphrec``: a thin command-line shell over the library. Every command has --help."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from graphrec.errors import BadValue
from graphrec.malloc import keep_freed_memory
from graphrec.paths import state_home

EXIT_INPUT = 2  # bad input or usage
EXIT_FAILURE = 1  # the work itself failed (server, integrity)


def _comma_list(kind: Callable[[str], object], what: str, minimum: float | None = None):
    """An argparse type for ``a,b,c``: an empty or malformed entry is a usage error naming the flag."""

    def parse(text: str) -> list:
        out = []
        for part in text.split(","):
            part = part.strip()
            try:
                value = kind(part)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{part!r} in {text!r} is not {what}; e.g. "
                    f"{'10,50' if kind is int else '1,0.5' if kind is float else 'view,cart,buy'}")
            if minimum is not None and value < minimum:
                raise argparse.ArgumentTypeError(f"{part!r} in {text!r} must be >= {minimum:g}")
            out.append(value)
        return out

    return parse


def _name(text: str) -> str:
    if not text:
        raise ValueError(text)
    return text


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _connection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Neo4j connection (default: the managed local server, started on demand)")
    g.add_argument("--uri", help="use this server instead, e.g. bolt://host:7687 (env NEO4J_URI)")
    g.add_argument("--username", help="user name for --uri (env NEO4J_USERNAME)")
    g.add_argument("--password", help="password for --uri (env NEO4J_PASSWORD; prefer the env variable)")
    g.add_argument("--database", help="database name on that server (env NEO4J_DATABASE; default: the server's)")


def _driver(args: argparse.Namespace):
    from graphrec.neo4j import connection

    target = connection.resolve(args.uri, args.username, args.password, args.database, args.home)
    _log(f"Neo4j: {connection.describe(target)}")
    return connection.connect(target, log=_log), target.database


def _bulk_home(args: argparse.Namespace) -> Path:
    from graphrec.neo4j import connection

    target = connection.resolve(args.uri, args.username, args.password, args.database, args.home)
    if not target.managed:
        raise BadValue(f"--bulk loads the managed server's store with Neo4j's offline importer; a server given "
                       f"by URI ({connection.describe(target)}) is loaded through Cypher: drop --bulk (or unset "
                       "NEO4J_URI)")
    return target.home


# --------------------------------------------------------------------------------------------- neo4j


def cmd_neo4j(args: argparse.Namespace) -> int:
    from graphrec.neo4j import server

    home = Path(args.home).resolve() if args.home else server.default_home()
    if args.action == "install":
        rt = server.install(log=_log, force=args.force)
        print(f"Neo4j runtime ready in {rt / 'target'}")
    elif args.action == "start":
        info = server.start(home, heap=args.heap, pagecache=args.pagecache, log=_log)
        print(f"running: pid {info.pid}, {info.uri}, data in {home / 'neo4j'}")
    elif args.action == "stop":
        info = server.stop(home)
        print(f"stopped pid {info.pid}" if info else f"no managed Neo4j running for {home}")
    elif args.action == "status":
        info = server.status(home)
        if info is None:
            print(f"not running (home {home}; runtime {'built' if server.is_installed() else 'not built'})")
            return 3
        listening = ", ".join(f"{a}:{p}" for a, p in server.listening_addresses(info.pid))
        print(f"running: pid {info.pid}, {info.uri}, data in {home / 'neo4j'}, listening on {listening}")
    return 0


# --------------------------------------------------------------------------------------------- ingest


def _config_path(args: argparse.Namespace) -> str | Path | None:
    """--config as given, else the shipped preset of --dataset (configs/DATASET.yaml) if there is one."""
    if args.config or getattr(args, "snapshot", None):
        return args.config
    from graphrec import datasets
    from graphrec.config import preset_for

    name = getattr(args, "dataset", None)
    preset = preset_for((datasets.get(name).preset or name) if datasets.is_registered(name) else name)
    if preset is not None:
        _log(f"config: the preset {preset} (pass --config to use another)")
    return preset


def cmd_ingest(args: argparse.Namespace) -> int:
    from graphrec.config import load_config
    from graphrec.ingest.pipeline import ingest_dataset
    from graphrec.progress import format_table

    overrides = list(args.set or [])
    if args.behaviors:
        overrides.append("ingest.behaviors=" + json.dumps(args.behaviors))
    if args.format:
        overrides.append(f"ingest.format={args.format}")
    if args.seed is not None:
        overrides.append(f"ingest.split.seed={args.seed}")
    if args.test:
        overrides.append(f"ingest.test_file={json.dumps(args.test)}")
    cfg = load_config(_config_path(args), overrides).ingest
    run = ingest_dataset(args.dataset, cfg, lambda: _driver(args), source=args.source, mirror=args.mirror,
                         skip_bad_rows=args.skip_bad_rows, rejects=args.rejects, home=args.home,
                         replace=args.replace, bulk_home=_bulk_home(args) if args.bulk else None,
                         append=args.append, log=_log)
    report = run.report
    print(f"dataset {report.dataset}: {report.outcome} in {run.seconds:.1f} s (rejected rows: {run.rejected:,})")
    if report.phases:
        print(format_table(["phase", "rows", "seconds", "rows/s"],
                           [[p.name, p.rows, round(p.seconds, 2), round(p.rate)] for p in report.phases]))
    print(format_table(["count", "kind", "value"], run.count_rows()))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from graphrec import datasets
    from graphrec.progress import format_table

    if args.action == "list":
        print(format_table(datasets.LIST_HEADERS, datasets.listing()))
    elif args.action == "info":
        print(datasets.info(args.name))
    elif args.action == "fetch":
        print(datasets.fetch(args.name, to=args.to, mirror=args.mirror, log=_log))
    elif args.action == "path":
        found = datasets.locate(args.name, log=_log)
        if found is None:
            _log(f"{args.name} is not on this machine; `graphrec datasets fetch {args.name}` downloads it "
                 f"into {datasets.cache_root() / args.name}")
            return 3
        print(found[0])
    return 0


def cmd_drop(args: argparse.Namespace) -> int:
    from graphrec.ingest import load
    from graphrec.progress import Progress

    driver, database = _driver(args)
    try:
        if load.dataset_state(driver, args.dataset, database) is None:
            print(f"no dataset named {args.dataset!r}")
            return EXIT_INPUT
        load.delete_dataset(driver, args.dataset, database, Progress())
    finally:
        driver.close()
    print(f"dropped dataset {args.dataset}")
    return 0


# --------------------------------------------------------------------------------------------- cypher / inspect


def cmd_cypher(args: argparse.Namespace) -> int:
    from graphrec.progress import format_table
    from graphrec.queries import format_result, get_query, load_queries, run_query

    if args.action == "list":
        qs = load_queries()
        print(format_table(["name", "parameters", "description"],
                           [[q.name, q.signature(), q.description] for q in qs.values()]))
        return 0
    query = get_query(args.name)
    raw = {}
    for item in args.param or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise BadValue(f"--param expects key=value, got {item!r}; fix: e.g. --param dataset=beibei")
        raw[k] = v
    params = query.bind(raw)
    driver, database = _driver(args)
    try:
        cols, rows = run_query(driver, query, params, database)
    finally:
        driver.close()
    print(format_result(cols, rows, args.format))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from graphrec.inspection import dataset_report, snapshot_report

    if (args.dataset is None) == (args.snapshot is None):
        raise BadValue("give exactly one of --dataset NAME (the graph in Neo4j) or --snapshot DIR (an export)")
    if args.snapshot is not None:
        from graphrec import snapshot

        report = snapshot_report(snapshot.read(args.snapshot), top=args.top)
    else:
        driver, database = _driver(args)
        try:
            report = dataset_report(driver, args.dataset, top=args.top, database=database)
        finally:
            driver.close()
    if args.format == "json":
        print(json.dumps({k: v for k, v in report.__dict__.items() if k != "behaviors"}
                         | {"behaviors": list(report.behaviors.order)}, indent=2, default=str))
    else:
        print(report.render())
    return 0


# --------------------------------------------------------------------------------------------- export


def default_snapshot_dir(home: str | None, dataset: str) -> Path:
    return state_home(home) / "snapshots" / dataset


def cmd_export(args: argparse.Namespace) -> int:
    from graphrec import graph
    from graphrec.export import export_dataset
    from graphrec.progress import Progress, format_table

    out = Path(args.out) if args.out else default_snapshot_dir(args.home, args.dataset)
    if (out / "manifest.json").is_file():
        _log(f"replacing the snapshot in {out}")
    driver, database = _driver(args)
    progress = Progress()
    try:
        report = export_dataset(driver, args.dataset, out, database=database, progress=progress)
    finally:
        driver.close()
    s = report.snapshot
    t1 = time.perf_counter()
    data = graph.load(s)
    build_s = time.perf_counter() - t1
    if args.dgl:
        graph.save_dgl(data, args.dgl)
    rows = [[name, rel.kind, len(rel), ", ".join(f"{k} {v:,}" for k, v in rel.split_counts().items())]
            for name, rel in s.relations.items()]
    print(f"dataset {s.dataset}: {s.n_users:,} users, {s.n_items:,} items -> {report.path} "
          f"({report.bytes / 2**20:.1f} MiB) in {report.seconds:.1f} s; "
          f"heterograph built and validated in {build_s:.1f} s")
    print(format_table(["relation", "kind", "edges", "splits / holdout"], rows))
    g = data.graph
    print(format_table(["canonical etype", "edges"], [[f"({a}, {r}, {b})", g.num_edges((a, r, b))]
                                                      for a, r, b in g.canonical_etypes]))
    if args.dgl:
        print(f"DGL graph saved to {args.dgl}")
    return 0


# --------------------------------------------------------------------------------------------- train


def _snapshot_for(args: argparse.Namespace) -> Path:
    """--snapshot DIR as given, or HOME/snapshots/DATASET (exported from Neo4j first if missing)."""
    if args.snapshot:
        return Path(args.snapshot)
    if not args.dataset:
        raise BadValue("give --dataset NAME (exported from Neo4j if needed) or --snapshot DIR")
    path = default_snapshot_dir(args.home, args.dataset)
    _export_if_missing(args, args.dataset, path, f"no snapshot of {args.dataset!r} in {path}")
    return path


def _export_if_missing(args: argparse.Namespace, dataset: str, path: Path, why: str) -> None:
    """Export ``dataset`` from Neo4j (the connection args) to ``path`` unless a snapshot is there."""
    if (path / "manifest.json").is_file():
        return
    from graphrec import distributed

    if distributed.from_env().active:  # every process would export at once
        raise BadValue(f"{why}; export it before a distributed run: graphrec export --dataset {dataset}")
    from graphrec.export import export_dataset
    from graphrec.progress import Progress

    _log(f"{why}; exporting {dataset!r} from Neo4j")
    driver, database = _driver(args)
    try:
        export_dataset(driver, dataset, path, database=database, progress=Progress())
    finally:
        driver.close()


def _count(text: str) -> int:
    from graphrec.synth import parse_count

    try:
        return parse_count(text)
    except BadValue as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_synth(args: argparse.Namespace) -> int:
    from graphrec.config import load_config
    from graphrec.progress import format_table
    from graphrec.synth import synthesize

    cfg = load_config(args.config, []).ingest if args.config else None

    def progress(done: int, total: int, seconds: float) -> None:
        _log(f"  {done:,} / {total:,} rows ({done / max(seconds, 1e-9):,.0f} rows/s)")

    p, r = synthesize(args.like, args.events, args.out, cfg=cfg, seed=args.seed, users=args.users, items=args.items,
                      progress=progress, snapshot=args.snapshot)
    if args.profile_out:
        Path(args.profile_out).write_text(p.to_json() + "\n")
    print(f"wrote {r.path}: {r.rows:,} rows, {r.users:,} users, {r.items:,} items in {r.seconds:.1f} s "
          f"({r.rows / max(r.seconds, 1e-9):,.0f} rows/s), shaped like {p.source}")
    if r.snapshot is not None:
        print(f"wrote the snapshot {r.snapshot} (train on it with graphrec train --snapshot {r.snapshot})")
    print(format_table(["pattern of a (user, item) pair", f"share in {p.source}"],
                       [[k, f"{v:.4f}"] for k, v in sorted(p.patterns.items(), key=lambda kv: -kv[1])]))
    return 0


def _run_dir(args: argparse.Namespace, stem: str) -> Path:
    """--run, else HOME/runs/STEM-TIME (a new training run's directory)."""
    return Path(args.run) if args.run else state_home(args.home) / "runs" / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_train(args: argparse.Namespace) -> int:
    from graphrec.config import load_config, model_params, train_config
    from graphrec.models import get_model
    from graphrec.train import fit

    cfg = load_config(_config_path(args), list(args.set or []))
    params = model_params(cfg, args.model)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if get_model(args.model).stage == "ranking":
        return _train_ranking(args, cfg, params)
    if args.recall_run:
        raise BadValue(f"--recall-run is for ranking models; {args.model!r} is a recall model")
    snapshot_path = _snapshot_for(args)
    run = _run_dir(args, f"{snapshot_path.name}-{args.model}")
    result = fit(args.model, params, train_config(cfg, args.model), snapshot_path, run, device=args.device,
                 resume=args.resume)
    print(f"run directory: {result.run_dir}")
    return 0


def _train_ranking(args: argparse.Namespace, cfg, params) -> int:
    from graphrec.ranking.train import fit_ranking

    if not args.recall_run:
        raise BadValue(f"{args.model!r} is a ranking model: give --recall-run DIR, a recall run trained under the "
                         "honest protocol (e.g. graphrec train --model hpmr --dataset beibei)")
    if args.resume:
        raise BadValue("--resume is for recall runs; a ranking run is short, start it again in a new --run")
    run = _run_dir(args, f"{Path(args.recall_run).name}-{args.model}")
    _recall_snapshot_from_neo4j(args)
    fit_ranking(args.model, params, cfg.ranking, args.recall_run, run, device=args.device)
    print(f"run directory: {run}")
    return 0


def _recall_snapshot_from_neo4j(args: argparse.Namespace) -> None:
    """The ranking data comes from the snapshot the recall run was trained on. When that directory
    is gone, export it again from Neo4j: exports are byte-for-byte reproducible, so an unchanged
    graph gives the same manifest, which the recall run's hash check then confirms."""
    from graphrec.runs import load_run

    info = load_run(args.recall_run)
    path = Path(info.snapshot)
    _export_if_missing(args, info.dataset, path, f"snapshot {path} of recall run {args.recall_run} is missing")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from graphrec.assess import SparsityRequest, evaluate_runs

    sparsity = SparsityRequest(args.groups, args.n_groups, args.out) if args.by_sparsity else None
    report = evaluate_runs(args.run, ks=args.ks, device=args.device, snapshot=args.snapshot,
                           sampled_negatives=args.negatives if args.sampled else None, seed=args.seed,
                           sparsity=sparsity)
    print("\n\n".join(t.render() for t in report.tables))
    if report.written:
        print("wrote " + ", ".join(str(p) for p in report.written))
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from graphrec.assess import is_ranking_run
    from graphrec.progress import format_table
    from graphrec.recommend import recommend, write_back
    from graphrec.runs import load_run, pick_device

    if is_ranking_run(args.run):
        return _recommend_ranked(args)
    recs = recommend(args.run, args.user, k=args.k, device=str(pick_device(args.device)),  # auto: CUDA if any
                     snapshot_path=args.snapshot)
    print(format_table(["user", "rank", "item", "score"], [[r.user, r.rank, r.item, f"{r.score:.4f}"] for r in recs]))
    if args.write_back:
        info = load_run(args.run)
        driver, database = _driver(args)
        try:
            n = write_back(driver, info.dataset, info.model, Path(args.run).name, recs, database)
        finally:
            driver.close()
        print(f"wrote {n} (:User)-[:RECOMMENDED]->(:Item) relationships for run {Path(args.run).name}")
    return 0


def _recommend_ranked(args: argparse.Namespace) -> int:
    from graphrec.progress import format_table
    from graphrec.ranking.serve import recommend_ranked
    from graphrec.ranking.train import pick_device_name
    from graphrec.recommend import Recommendation, write_back

    weights = args.weights
    recs, info = recommend_ranked(args.run, args.user, k=args.k, device=pick_device_name(args.device), weights=weights)
    tasks = list(recs[0].probs) if recs else []
    print(f"two-stage: candidates from {info['data']['recall_model']} ({info['recall_run']}), ordered by "
          f"{info['model']}'s score = weighted sum of the task probabilities")
    print(format_table(["user", "rank", "item", "score", *[f"p({t})" for t in tasks], "recall rank"],
                       [[r.user, r.rank, r.item, f"{r.score:.4f}", *[f"{r.probs[t]:.4f}" for t in tasks],
                         r.recall_rank] for r in recs]))
    if args.write_back:
        driver, database = _driver(args)
        try:
            n = write_back(driver, info["data"]["dataset"], info["model"], Path(args.run).name,
                           [Recommendation(r.user, r.item, r.rank, r.score) for r in recs], database)
        finally:
            driver.close()
        print(f"wrote {n} (:User)-[:RECOMMENDED]->(:Item) relationships for run {Path(args.run).name}")
    return 0


# --------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="graphrec", description="graphrec: multi-behavior GNN "
                                "recommendation on a Neo4j graph.")
    p.add_argument("--home", help="local state directory (managed Neo4j, rejected rows); env GRAPHREC_HOME, "
                   "default ./.graphrec")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    n = sub.add_parser("neo4j", help="install, start, stop or check the managed local Neo4j",
                       description="The managed Neo4j Community server: Bolt on 127.0.0.1 only, no usage reports.")
    n.add_argument("action", choices=["install", "start", "stop", "status"],
                   help="install: fetch Neo4j with Maven and build the launcher; "
                        "start/stop/status: the server for --home")
    n.add_argument("--heap", default="2g", help="JVM heap for start (default 2g)")
    n.add_argument("--pagecache", default="512m", help="page cache for start (default 512m)")
    n.add_argument("--force", action="store_true", help="install: re-fetch and rebuild")
    n.set_defaults(func=cmd_neo4j)

    i = sub.add_parser("ingest", help="load an interaction log into Neo4j as a multi-behavior graph",
                       description="Read a log, validate it completely, then write users, items, one relationship "
                       "type per behavior and the derived unique relations into Neo4j. Re-running resumes an "
                       "interrupted ingest; identical input is a no-op.")
    i.add_argument("--dataset", required=True, help="name of the dataset in the database, e.g. beibei")
    i.add_argument("--source", help="a per-user text folder (train.txt, test.txt, cart.txt, pv.txt) or a long-format "
                   ".csv/.tsv/.parquet with columns user, item, behavior[, timestamp]; default for a registered data "
                   "set (graphrec datasets list): $GRAPHREC_DATA/NAME, the cache, else a verified download")
    i.add_argument("--mirror", metavar="URL", help="download a registered data set from URL/NAME/FILE "
                   "(env GRAPHREC_DATASETS_MIRROR) instead of its upstream repositories")
    i.add_argument("--format", choices=["beibei", "taobao", "tmall", "ghcf", "csv", "parquet"],
                   help="source format (default: detected from the path)")
    i.add_argument("--behaviors", type=_comma_list(_name, "a behavior name"),
                   help="behavior cascade, upstream first, target last, e.g. view,cart,buy")
    i.add_argument("--config", help="YAML config (default: configs/DATASET.yaml when graphrec ships that preset)")
    i.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. ingest.split.seed=7")
    i.add_argument("--seed", type=int, help="seed of the train/valid/test split (default 2024)")
    i.add_argument("--test", metavar="FILE", help="a long-format log's held-out purchases (user,item[,timestamp]; "
                   "the log's column names): they become the test split (config: ingest.test_file)")
    i.add_argument("--replace", action="store_true", help="delete this dataset first and rebuild it")
    i.add_argument("--append", action="store_true",
                   help="add the events of --source to this complete dataset (new purchases are train; the same "
                        "file twice is a no-op; an interrupted append resumes when run again)")
    i.add_argument("--bulk", action="store_true",
                   help="load with Neo4j's offline importer (managed server only; its database must hold no other "
                        "dataset: the store is rebuilt whole, the server restarted)")
    i.add_argument("--skip-bad-rows", action="store_true",
                   help="set bad rows aside in a file (see --rejects) instead of stopping at the first")
    i.add_argument("--rejects", help="where --skip-bad-rows writes rejected rows (default HOME/rejected/DATASET.tsv)")
    _connection_args(i)
    i.set_defaults(func=cmd_ingest)

    sy = sub.add_parser("synth", help="write a seeded synthetic event log of any size, shaped like a real one",
                        description="Measure a real log (activity, popularity, the cascade's behavior patterns, "
                        "repeats, time gaps) and write a long-format log (user, item, behavior, timestamp) of "
                        "exactly --events rows with the same shape, chunk by chunk (bounded memory).")
    sy.add_argument("--events", required=True, type=_count, help="rows to write, e.g. 1M, 10M, 100M")
    sy.add_argument("--like", required=True, help="a registered data set (e.g. retailrocket, taobao_mbcgcn) or a log "
                    "graphrec reads (with --config for its column names and behavior codes)")
    sy.add_argument("--out", required=True, help="output file: .parquet (row group per 20,000 users) or .csv")
    sy.add_argument("--config", help="YAML whose ingest: section says how to read --like (columns, behaviors, codes)")
    sy.add_argument("--seed", type=int, default=0, help="seed (default 0): same seed and sizes, same file")
    sy.add_argument("--users", type=_count, help="at most this many users (default: as many as the rows need)")
    sy.add_argument("--items", type=_count, help="catalogue size (default: the real log's items per user)")
    sy.add_argument("--profile-out", help="also write the measured profile as JSON")
    sy.add_argument("--snapshot", help="also write the log's snapshot to this folder, as ingest + export would "
                    "(no database; its name is the data set's): for cost curves and hosts without Neo4j")
    sy.set_defaults(func=cmd_synth)

    ds = sub.add_parser("datasets", help="the public data sets graphrec knows: list, info, fetch (verified), path",
                        description="A registry of public multi-behavior data sets: each file's upstream repository "
                        "and commit, size and hash. Found in $GRAPHREC_DATA/NAME (default ../shared/data), the cache "
                        "($GRAPHREC_HOME/datasets or ~/.cache/graphrec), else downloaded and verified.")
    dsub = ds.add_subparsers(dest="action", required=True)
    dsub.add_parser("list", help="one line per data set")
    for action, text in (("info", "files, sources, sizes, hashes, license, citation"),
                         ("fetch", "download into the cache (or --to DIR) and verify every file"),
                         ("path", "the folder of a verified copy on this machine (exit 3 if none)")):
        a = dsub.add_parser(action, help=text)
        a.add_argument("name")
        if action == "fetch":
            a.add_argument("--to", metavar="DIR", help="download into DIR instead of the cache")
            a.add_argument("--mirror", metavar="URL", help="fetch URL/NAME/FILE (env GRAPHREC_DATASETS_MIRROR)")
    ds.set_defaults(func=cmd_datasets)

    d = sub.add_parser("drop", help="delete one dataset from the database", description="Delete a dataset's nodes, "
                       "relationships and record in bounded transactions.")
    d.add_argument("--dataset", required=True)
    _connection_args(d)
    d.set_defaults(func=cmd_drop)

    c = sub.add_parser("cypher", help="list or run the named queries of cypher/",
                       description="Named, parameterized Cypher queries for dataset inspection.")
    csub = c.add_subparsers(dest="action", metavar="ACTION", required=True)
    cl = csub.add_parser("list", help="list the queries and their parameters")
    cl.set_defaults(func=cmd_cypher)
    cr = csub.add_parser("run", help="run one query", description="Run a named query; parameters are typed and "
                         "passed as Cypher parameters.")
    cr.add_argument("name", help="query name (see `graphrec cypher list`)")
    cr.add_argument("--param", action="append", metavar="KEY=VALUE", help="a query parameter, e.g. dataset=beibei")
    cr.add_argument("--format", choices=["table", "csv", "json"], default="table")
    _connection_args(cr)
    cr.set_defaults(func=cmd_cypher)

    e = sub.add_parser("export", help="write a dataset from Neo4j to a snapshot and check it builds a DGL heterograph",
                       description="Stream a complete dataset's relationships, splits and id maps out of Neo4j into "
                       "a snapshot directory (compressed int32 arrays, id maps, manifest.json with counts and "
                       "sha256), then build and validate the DGL heterograph from it.")
    e.add_argument("--dataset", required=True)
    e.add_argument("--out", help="snapshot directory (default HOME/snapshots/DATASET); replaced atomically")
    e.add_argument("--dgl", metavar="FILE", help="also save the heterograph with dgl.save_graphs to FILE")
    _connection_args(e)
    e.set_defaults(func=cmd_export)

    t = sub.add_parser("train", help="train a model on a snapshot (CPU or GPU)",
                       description="Train a registered model on a dataset's snapshot; evaluates every "
                       "train.eval_every epochs, stops early, checkpoints, and writes a run directory.")
    t.add_argument("--model", required=True, help="model name (hpmr, ghcf, lightgcn, lightgcn_m, ...)")
    t.add_argument("--dataset", help="dataset name: uses HOME/snapshots/NAME, exporting it from Neo4j if missing")
    t.add_argument("--snapshot", help="a snapshot directory (no Neo4j needed)")
    t.add_argument("--config", help="YAML with train: and models: sections (default with --dataset: "
                   "configs/DATASET.yaml when graphrec ships that preset)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. train.epochs=20 or "
                   "models.hpmr.layers=2")
    t.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    t.add_argument("--run", "--run-dir", dest="run",
                   help="run directory (default HOME/runs/DATASET-MODEL-TIME); under torchrun spell it --run-dir, "
                        "since torchrun takes --run for its own --run-path")
    t.add_argument("--resume", action="store_true", help="continue the run in --run from its last checkpoint")
    t.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    t.add_argument("--recall-run", help="ranking models (dmt, stan, mmoe, ple, shared_bottom, mlp_single): the "
                   "recall run whose top-N candidates they rank (trained under the honest protocol)")
    _connection_args(t)
    t.set_defaults(func=cmd_train)

    v = sub.add_parser("evaluate", help="evaluate a trained run: full ranking (and 1+99 sampled)",
                       description="Full ranking over all items, excluding each user's training purchases; "
                       "HR@K, NDCG@K, Recall@K per split. --sampled adds the 1 positive + N negatives protocol.")
    v.add_argument("--run", required=True, action="append", help="run directory (repeatable: compares runs)")
    v.add_argument("--snapshot", help="snapshot directory if it moved since training")
    v.add_argument("--by-sparsity", action="store_true", help="test HR/NDCG per group of users by number of "
                   "training purchases, as a table, sparsity.csv and PNG plots")
    v.add_argument("--groups", help="a sparsity.split file (pairs of '#users=[N]' and user ids), e.g. "
                   "../shared/data/beibei/sparsity.split; default: quantile groups")
    v.add_argument("--n-groups", type=int, default=5, help="number of quantile groups without --groups")
    v.add_argument("--out", help="where --by-sparsity writes its CSV and plots (default: the first run)")
    v.add_argument("--ks", default=[10], type=_comma_list(int, "a whole number", 1),
                   help="comma-separated cut-offs, e.g. 10,50,100")
    v.add_argument("--sampled", action="store_true", help="also the 1 positive + N sampled negatives protocol")
    v.add_argument("--negatives", type=int, default=99)
    v.add_argument("--seed", type=int, default=0, help="seed of the sampled negatives")
    v.add_argument("--device", default="auto")
    v.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("recommend", help="top-k items for users of a trained run; optionally write them to Neo4j",
                       description="Top-k recommendations with the user's purchases excluded; external keys in "
                       "and out. --write-back stores (:User)-[:RECOMMENDED {score, rank, model, run}]->(:Item).")
    r.add_argument("--run", required=True)
    r.add_argument("--user", required=True, action="append", help="user key (repeatable)")
    r.add_argument("-k", type=int, default=10)
    r.add_argument("--snapshot", help="snapshot directory if it moved since training")
    r.add_argument("--write-back", action="store_true", help="store the recommendations in Neo4j (replacing "
                   "this run's earlier ones for these users)")
    r.add_argument("--weights", type=_comma_list(float, "a number", 0),
                   help="ranking runs: comma-separated weights of the task probabilities in behavior "
                   "order (default: ranking.score_weights of the run)")
    r.add_argument("--device", default="auto")
    _connection_args(r)
    r.set_defaults(func=cmd_recommend)

    s = sub.add_parser("inspect", help="report on one dataset: counts, funnel, violations, degrees, popular items",
                       description="Print a dataset report built from the queries in cypher/, or the same report "
                       "computed from a snapshot (to check that nothing was lost between Neo4j and the graph).")
    s.add_argument("--dataset", help="a dataset in Neo4j")
    s.add_argument("--snapshot", metavar="DIR", help="a snapshot directory written by graphrec export")
    s.add_argument("--top", type=int, default=10, help="how many popular items to list")
    s.add_argument("--format", choices=["table", "json"], default="table")
    _connection_args(s)
    s.set_defaults(func=cmd_inspect)
    return p


def exit_code(exc: BaseException) -> int | None:
    """EXIT_INPUT for graphrec's input errors, EXIT_FAILURE for work that failed (and a connection
    that could not be made); None for everything else, which is a bug and keeps its traceback."""
    from graphrec.errors import UserError, WorkFailed

    if isinstance(exc, UserError):
        return EXIT_INPUT
    if isinstance(exc, (WorkFailed, ConnectionError)):
        return EXIT_FAILURE
    return None


#: Commands whose time goes into torch steps over (users + items) × d tensors: they keep freed
#: memory (graphrec.malloc). Ingest and export, whose peak memory is what bounds them, do not.
TENSOR_COMMANDS = frozenset({"train", "evaluate", "recommend"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in TENSOR_COMMANDS:
        keep_freed_memory()
    try:
        func: Callable[[argparse.Namespace], int] = args.func
        code = func(args)
    except KeyboardInterrupt:
        _log("interrupted")
        code = 130
    except Exception as exc:
        code = exit_code(exc)
        if code is None:
            raise
        _log(f"error: {exc}")
    if args.command == "train":
        from graphrec import distributed

        if distributed.from_env().active:
            distributed.leave(code)  # see there: a torchrun worker must not reach finalization
    return code


if __name__ == "__main__":
    sys.exit(main())
