"""The public data sets graphrec knows, where each of their files comes from, and where a data set
is found on this machine or fetched from.

Every file graphrec reads is pinned by size and SHA-256 (and, where its upstream copy is a git
blob, by that blob id too), so a fetched data set is verified end to end, even where a
``prepare`` step converts the published files into graphrec's layout.

Where a data set comes from, in order (``resolve``):
  1. an explicit ``--source``, used as given (a team's own files: nothing to verify against);
  2. the folder ``$GRAPHREC_DATA/NAME`` (default ``../shared/data`` beside the repository, when it
     exists), if every required file is there and verifies;
  3. the cache ``$GRAPHREC_HOME/datasets/NAME`` (else ``$XDG_CACHE_HOME/graphrec`` or
     ``~/.cache/graphrec``), if complete and verified;
  4. a download: from ``--mirror URL`` / ``$GRAPHREC_DATASETS_MIRROR`` (``URL/NAME/FILE``, the layout
     of the local folder, so ``python -m http.server`` in a copy of it is a mirror), else from the
     upstream repositories at pinned commits.

Downloads go through pooch: streamed into a temporary file beside the target, verified, then moved
into place, so an interrupted or corrupt transfer never leaves a file that passes as complete.
This module imports only the standard library at load time: ``python3 -m graphrec.datasets
check NAME`` runs before any package is installed (``make demo`` uses it to fail fast).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from graphrec.errors import UserError, WorkFailed

REPO_ROOT = Path(__file__).resolve().parents[1]
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
ENV_DATA = "GRAPHREC_DATA"
ENV_MIRROR = "GRAPHREC_DATASETS_MIRROR"
RETRIES = 2  # after a failed or corrupt transfer: pooch waits 1 s, 2 s and starts it again

Log = Callable[[str], None]


class DatasetError(WorkFailed):
    """A data set cannot be found, fetched or verified; the message names what and the fix."""


class UnknownDataset(UserError, DatasetError):
    """A name that is not in the registry (bad input, not a failed fetch)."""


class DigestMismatch(ValueError):
    """A downloaded file is not the registered one (a ValueError, so pooch retries the transfer)."""


class NotThere(Exception):
    """The server answered that the file does not exist (not retried: asking again changes nothing)."""


# --------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Upstream:
    """One file as its authors published it in a public git repository."""

    repo: str
    commit: str
    path: str
    size: int | None = None  # None: not known here (the file could not be seen)
    git_blob: str | None = None

    @property
    def url(self) -> str:
        return RAW_URL.format(repo=self.repo, commit=self.commit, path=self.path)


@dataclass(frozen=True)
class DataFile:
    """One file graphrec reads, pinned by size and hash; ``upstream`` is its byte-identical
    published copy when there is one (else a ``prepare`` step makes it)."""

    name: str
    size: int | None
    sha256: str | None
    git_blob: str | None = None
    upstream: Upstream | None = None
    optional: bool = False  # used when present; a folder without it still counts as complete
    about: str = ""


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    behaviors: tuple[str, ...]
    format: str  # the reader graphrec ingests it with ("ghcf", "csv"), or "tfrecord" (ranking fixture)
    users: int | None
    items: int | None
    files: tuple[DataFile, ...]
    license: str
    citation: str
    source: str = "."  # what `graphrec ingest --source` gets, relative to the folder
    test_file: str | None = None  # a long-format log's held-out purchases, relative to the folder
    preset: str | None = None  # configs/PRESET.yaml (default: the data set's name)
    inputs: tuple[Upstream, ...] = ()  # published files that `prepare` converts
    prepare: str | None = None  # key of PREPARE
    no_url: str | None = None  # why no public URL serves these files (a mirror or a local copy does)
    note: str = ""

    @property
    def required(self) -> tuple[DataFile, ...]:
        return tuple(f for f in self.files if not f.optional)

    @property
    def size(self) -> int:
        return sum(f.size or 0 for f in self.files)

    @property
    def origin(self) -> str:
        ups = [f.upstream for f in self.files if f.upstream] + list(self.inputs)
        return ", ".join(dict.fromkeys(f"{u.repo}@{u.commit[:7]}" for u in ups)) or "—"

    def file(self, name: str) -> DataFile:
        return next(f for f in self.files if f.name == name)


def _ghcf(name: str, folder: str, files: dict[str, tuple[int, str, str]], views: str, users: int,
          items: int, note: str) -> Dataset:
    repo, commit = "chenchongthu/GHCF", "5ca2d693410c90721a980bab609bfab140fa30b1"
    about = {"train.txt": "purchases for training, one line per user", "test.txt": "one held-out purchase per user",
             "cart.txt": "add-to-cart lists", "sparsity.split": "user groups by number of purchases"}
    pinned = tuple(DataFile(f, size, sha, blob, Upstream(repo, commit, f"Data/{folder}/{f}", size, blob),
                            about=about[f])
                   for f, (size, sha, blob) in files.items())
    pv = DataFile("pv.txt", None, None, views, Upstream(repo, commit, f"Data/{folder}/pv.txt", None, views),
                  optional=True, about="page views (upstream only; ingest them with --behaviors view,cart,buy)")
    return Dataset(
        name, f"{folder}, GHCF/HPMR preprocessing", ("view", "cart", "buy"), "ghcf", users, items, pinned + (pv,),
        license="no license file in the repository; cite GHCF (AAAI 2021) and HPMR (KDD 2023)",
        citation="Chen et al., Graph Heterogeneous Multi-Relational Recommendation, AAAI 2021",
        note=note)


_MBCGCN = ("SS-00-SS/MBCGCN", "931f9c103817cdfa280353c506f4e3cb08306a1c")
_MULE = ("geonwooko/MULE", "304d6637d0642f56778240072787a932c0cacd16")

DATASETS: tuple[Dataset, ...] = (
    _ghcf("beibei", "Beibei", {
        "train.txt": (1500012, "0e7c792b48eea1c122ac657ef95415bc943d1a4e9b08531334c0c7904ab51538",
                      "b676c41a780106e6041a8aebe20712b4289bafe6"),
        "test.txt": (227286, "84709478e3b07aa7c20e39fbcd22e0ca57b485e16ed1338294cf8b9e411eef18",
                     "1a6a854f05b2ee44d25bcbe16e3814d6995634a5"),
        "cart.txt": (3253442, "fabc00d05a4674df2b7cf372b4b67144818aac83a1d79b83d2268f514568549a",
                     "9bf731c9857847ff0e3f6b5f2aeaf81c6f970bcf"),
        "sparsity.split": (119256, "180cbf6e631a8ca7ba3c3470e361e04d29e49335459452784d69130ca98ebe78",
                           "530c3e7189e78af1147e6896e1433af63d3ac0c4"),
    }, "856fa9c2c97edd68f2ab7e630274c6582f5d1e03", 21716, 7977,
        "2,412,586 views upstream (pv.txt, pinned by its git blob id); the preset ingests cart → buy"),
    _ghcf("taobao", "Taobao", {
        "train.txt": (1488717, "90075dde98ba5e202c7a860ccde5b6308019e8c99f9e621a38b723248d7804e4",
                      "dcb8ad62d555ed9a9fd72ad88d33ae0bac90f3a8"),
        "test.txt": (560349, "22b9c3c09c302e19808b2c42cc0ad94b99df3b15006c74b5abd8dab1e7870753",
                     "5cc7383b0240b4b185cdee159a78ba7c887bfd7e"),
        "cart.txt": (1326247, "f41bfaa2cc4d984d36c9b14a4310f2e762d817368872e6520b4370f11d05684f",
                     "cd3bb3538df7e2d365ad9a91ffdeccfca48c9693"),
        "sparsity.split": (281452, "52cb210f3834baa65f56fe4690b483072e21301684b65045d8947d86d0c0ad78",
                           "b62dc18c5d69d623fc1a5b5b08427caeeda2ef8a"),
    }, "0e59adf98f60095e09b666b360c713919fa101d1", 48749, 39493,
        "1,548,126 views upstream (pv.txt, pinned by its git blob id); the preset ingests cart → buy"),
    Dataset(
        "taobao_mbcgcn", "Taobao, MB-CGCN/CRGCN preprocessing (MuLe's table)", ("view", "cart", "buy"), "ghcf",
        15449, 11953,
        (DataFile("train.txt", 531628, "6eba57f9e86189d8ed285f36d0691064fbab641c3cf85586400c2f47b6da811d",
                  about="purchases for training (MB-CGCN Data/buy/train.txt)"),
         DataFile("test.txt", 157170, "bc03717c802ef857501cc4239759cc9862685b16b330016fe0d3f86a07bc6a54",
                  about="one held-out purchase per user (Data/buy/test.txt)"),
         DataFile("cart.txt", 1048504, "1152fdc0383afe1ec975134e6f87e02e2b71ca98c52374cd3d4f601d60464bb7",
                  about="carts: Data/cart/train.txt + Data/cart/test.txt, as MuLe uses them"),
         DataFile("pv.txt", 4427196, "7143f8f030a57047cdcca1ace535eef45f63393a520cac0ed1426bcb548ebdec",
                  about="views: MuLe's data/taobao/view.txt (MB-CGCN's view graph) per user")),
        license="no license file in either repository; cite MB-CGCN (SIGIR 2023) and MuLe (CIKM 2024)",
        citation="Cheng et al., Multi-Behavior Recommendation with Cascading Graph Convolution Networks, "
                 "SIGIR 2023; Lee et al., MuLe, CIKM 2024",
        # MB-CGCN's sizes as published; their content is pinned through the files prepare makes of them
        inputs=(Upstream(*_MBCGCN, "Data/buy/train.txt", 531627),
                Upstream(*_MBCGCN, "Data/buy/test.txt", 157169),
                Upstream(*_MBCGCN, "Data/cart/train.txt", 972161),
                Upstream(*_MBCGCN, "Data/cart/test.txt", 157925),
                Upstream(*_MULE, "data/taobao/view.txt", 8971128, "2c5b2eb40f998847457e9a828d8997a7b207e4b7")),
        prepare="mbcgcn",
        note="published numbers of 7 models on exactly these files (bench/published.py)"),
    Dataset(
        "retailrocket", "Retailrocket, CML/KMCLR preprocessing", ("view", "cart", "buy"), "csv", 2174, 29905,
        (DataFile("events.csv", 2465347, "cdcc4076aeadf90db59a83d6b36bd839f3edb3f4b3b84f30a5507243903f9129",
                  about="user,item,behavior,timestamp (Unix s), sorted by time"),
         DataFile("test.csv", 21485, "d1918d3c73fe29fd43cc57a17dccf1b7c7fcae7a0800e2f6d77a38f931e190d5",
                  about="user,item: one held-out purchase per user")),
        license="Retailrocket on Kaggle: CC BY-NC-SA 4.0; SSLRec: Apache-2.0; cite Retailrocket and CML",
        citation="Wei et al., Contrastive Meta Learning with Behavior Multiplicity for Recommendation, WSDM 2022",
        source="events.csv", test_file="test.csv",
        inputs=tuple(Upstream("HKUDS/SSLRec", "7597c31ce3f78c7497918d886b90df6d4d02cad5",
                              f"datasets/multi_behavior/retail_rocket/{f}")
                     for f in ("trn_view", "trn_cart", "trn_buy", "test_mat.pkl")),
        no_url="HKUDS/SSLRec@7597c31 (datasets/multi_behavior/retail_rocket/) publishes this set as pickled scipy "
               "matrices, and unpickling a download runs whatever code it holds; graphrec reads the long-format "
               "CSV made from them, which no public URL serves",
        note="real timestamps; its papers report 1+99 sampled ranking, not full ranking"),
    Dataset(
        "tianchi_sample", "Tianchi mobile log, 1,999 raw rows", ("click", "collect", "cart", "buy"), "csv", 34, 1689,
        (DataFile("user_behavior.csv", 90079, "243df824ed0a99f0bd573ea4f0a7c0948c288d115a77d5e88668aaa88e4ee6ba",
                  "a541d1bfebf23be9e2322c0b4dffb649cbe5cf86",
                  Upstream("qichen2020/customer-conversion-funnel-analysis", "ea10b9376b0c5ce78622fd0f890cca1cbce7dc34",
                           "sample_user_behavior.csv", 90079, "a541d1bfebf23be9e2322c0b4dffb649cbe5cf86"),
                  about="user_id,item_id,behavior_type (1..4),user_geohash,item_category,time (hourly)"),),
        license="MIT (the repository); the Tianchi competition data's own terms apply",
        citation="Alibaba Tianchi mobile recommendation competition, 2015",
        source="user_behavior.csv", preset="tianchi",
        note="a raw-log fixture (codes, hourly times, duplicates); too small to train on"),
    Dataset(
        "jd_dmt_demo", "JD recommender demo impressions (DMT)", ("click", "cart", "order"), "tfrecord", None, None,
        tuple(DataFile(name, size, sha, blob,
                       Upstream("guyulongcs/CIKM2020_DMT", "91431ed5d0bb5f17e01ed1ef6a77fd5e8af52fe8",
                                path, size, blob),
                       about=about)
              for name, size, sha, blob, path, about in (
                  ("part-r-00000.tfrecord", 3175265, "e4f408e6a062ab7f808b5a9fa223af0a1d8ea5ab0024bb65bc046dca1253a984",
                   "4bd093aec1d8a0021edf06d107bab250fd79e4b2",
                   "jd_recsys_demo/2019-12-04_2019-12-04/test_ord/2019-12-19_2019-12-19/data/part-r-00000",
                   "240 impressions, tf.train.Example records"),
                  ("part-r-00001.tfrecord", 3119795, "24a532acfda95128ca6fd07c7144d8eea5ab44cf483b9f0addec818f0c5bfebc",
                   "8984a05ea69e790e0793b0f9351ad73f7856e5f0",
                   "jd_recsys_demo/2019-12-04_2019-12-04/test_ord/2019-12-19_2019-12-19/data/part-r-00001",
                   "234 impressions"),
                  ("dense_mean.txt", 12130, "f630fa168521df5cdcd7495690fe75041ee822d306e2699bd2751edb673d7cfa",
                   "aad87a2e0ce59ac7987b4eef8fededb34edd1f57", "jd_recsys_demo/stat/dense_mean.txt",
                   "dense feature means"),
                  ("dense_std.txt", 11813, "a8a1ca10308e5777f1c9c0f7f0639269e10522fe488baad35343e05bf9d5b029",
                   "2f2ed4f4c43854ccece6a3bc311a1e6a0db3f153", "jd_recsys_demo/stat/dense_std.txt",
                   "dense feature standard deviations"),
                  ("stat.txt", 27, "d607e6c8f24f9b275936de7a1f30863eeb15635254a9687639f8dfb71d0748d0",
                   "0a8f30853048c0426bb3362bdf52e3af3f20ebcb", "jd_recsys_demo/stat/stat.txt", "split counts"),
                  ("train_stat.txt", 41, "957e94500c64eb70a3e9f4f66f2f7f13b8e77c0a86386de5df8d179eaa73fd96",
                   "4f0c4fc8e1979cde22564c28e254bb2510538279", "jd_recsys_demo/stat/train_stat.txt", "train counts"))),
        license="no license file in the repository; cite DMT (CIKM 2020)",
        citation="Gu et al., Deep Multifaceted Transformers for Multi-objective Ranking, CIKM 2020",
        note="a format fixture for the ranking stage's JD reader, not a set to ingest"),
)


def names() -> list[str]:
    return [d.name for d in DATASETS]


def get(name: str) -> Dataset:
    for d in DATASETS:
        if d.name == name:
            return d
    raise UnknownDataset(f"{name!r} is not a data set graphrec knows\n  fix: one of {', '.join(names())} "
                       f"(graphrec datasets list), or --source PATH for your own files")


def is_registered(name: str | None) -> bool:
    return name in names()


# ----------------------------------------------------------------------------------- verification


def digest(path: Path) -> tuple[int, str, str]:
    """(size, SHA-256, git blob id) in one pass; a git blob id is SHA-1 of ``blob SIZE\\0`` + bytes."""
    size = path.stat().st_size
    sha256, blob = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha256.update(chunk)
            blob.update(chunk)
    return size, sha256.hexdigest(), blob.hexdigest()


def mismatch(path: Path, want: DataFile | Upstream) -> str | None:
    """What differs between a file and its registered size and hashes, or None."""
    size, sha256, blob = digest(path)
    if want.size is not None and size != want.size:
        return f"size {size:,} bytes, expected {want.size:,}"
    if getattr(want, "sha256", None) and sha256 != want.sha256:
        return f"SHA-256 {sha256}, expected {want.sha256}"
    if want.git_blob and blob != want.git_blob:
        return f"git blob {blob}, expected {want.git_blob}"
    return None


def _verified(folder: Path, ds: Dataset, log: Log | None) -> bool:
    """Every required file present and matching, and every optional one present matching."""
    if not all((folder / f.name).is_file() for f in ds.required):
        return False
    for f in ds.files:
        p = folder / f.name
        if p.is_file() and (bad := mismatch(p, f)):
            if log:
                log(f"warning: {p} is not the registered file ({bad}); not using {folder}")
            return False
    return True


# ------------------------------------------------------------------------------------- resolution


def data_root() -> Path | None:
    """$GRAPHREC_DATA, else ../shared/data beside the repository when it exists."""
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser()
    shared = REPO_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def cache_root() -> Path:
    """$GRAPHREC_HOME/datasets, else the user cache folder (XDG) /graphrec."""
    home = os.environ.get("GRAPHREC_HOME")
    if home:
        return Path(home).expanduser() / "datasets"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "graphrec"


def locate(name: str, log: Log | None = None) -> tuple[Path, str] | None:
    """Where a complete, verified copy of a registered data set is on this machine: (folder, which)."""
    ds = get(name)
    root = data_root()
    for folder, where in ((root / name if root else None, ENV_DATA), (cache_root() / name, "cache")):
        if folder is not None and folder.is_dir() and _verified(folder, ds, log):
            return folder, where
    return None


def resolve(name: str, source: str | Path | None = None, mirror: str | None = None,
            log: Log | None = None) -> Path:
    """The folder of data set NAME: an explicit source, else the local folder, else the cache,
    else a verified download into the cache."""
    if source is not None:
        return Path(source)
    found = locate(name, log)
    if found is not None:
        if log:
            log(f"data set {name}: {found[0]} ({'local folder, ' + ENV_DATA if found[1] == ENV_DATA else 'cache'}; "
                f"verified)")
        return found[0]
    return fetch(name, mirror=mirror, log=log)


def ingest_source(name: str, folder: Path) -> tuple[Path, Path | None]:
    """(what `ingest --source` reads, the separate test file or None) of a registered data set."""
    ds = get(name)
    if ds.format not in ("ghcf", "csv"):
        raise DatasetError(f"{name} is a {ds.format} fixture for the ranking stage, not a log to ingest\n"
                           f"  fix: its files are in {folder}; graphrec.ranking.jd reads them")
    return folder / ds.source, (folder / ds.test_file if ds.test_file else None)


# ---------------------------------------------------------------------------------------- fetching


def mirror_url() -> str | None:
    return os.environ.get(ENV_MIRROR) or None


def _by_hand(ds: Dataset, dest: Path) -> str:
    files = ", ".join(f.name for f in ds.required)
    return (f"  fix: put {files} in {dest}, or point {ENV_DATA} at a folder holding {ds.name}/ with them, or "
            f"serve such a folder over HTTP and set {ENV_MIRROR}=URL (files at URL/{ds.name}/FILE); "
            f"`graphrec datasets info {ds.name}` lists every file with its source, size and SHA-256")


def _download(url: str, target: Path, want: DataFile | Upstream, progressbar: bool) -> None:
    """Fetch one file into ``target`` via pooch: a temporary file beside it, verified, then moved."""
    import pooch
    import requests

    def verified_download(url_: str, output_file: str, pooch_: object, check_only: bool = False) -> None:
        try:
            pooch.HTTPDownloader(progressbar=progressbar, timeout=30)(url_, output_file, pooch_)
        except requests.exceptions.HTTPError as e:
            code = e.response.status_code if e.response is not None else 0
            if 400 <= code < 500:
                raise NotThere(code) from None
            raise
        bad = mismatch(Path(output_file), want)
        if bad:
            raise DigestMismatch(bad)

    pooch.get_logger().setLevel("WARNING")
    fetcher = pooch.create(path=target.parent, base_url="", registry={target.name: None},
                           urls={target.name: url}, retry_if_failed=RETRIES)
    try:
        fetcher.fetch(target.name, downloader=verified_download)
    except DigestMismatch as e:
        raise DatasetError(f"{url}: the download is not the registered file: {e}; removed it\n"
                           f"  fix: retry; if it persists the source changed: use a mirror ({ENV_MIRROR}) "
                           f"or a local copy ({ENV_DATA})") from None
    except NotThere as e:
        raise DatasetError(f"{url}: HTTP {e}, the file is not there") from None
    except requests.exceptions.RequestException as e:
        raise ConnectionError(f"{url}: {type(e).__name__}: {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    text = str(e)
    return text if len(text) < 200 else text[:200] + " ..."


def fetch(name: str, to: str | Path | None = None, mirror: str | None = None, log: Log | None = None,
          progressbar: bool = True) -> Path:
    """Download data set NAME into ``to`` (default: the cache) and verify every file; files already
    there and verified are kept, so an interrupted fetch resumes where it stopped."""
    ds = get(name)
    dest = Path(to) if to is not None else cache_root() / name
    mirror = mirror or mirror_url()
    if not mirror and ds.no_url:
        raise DatasetError(f"{name}: no public URL serves the files graphrec reads: {ds.no_url}\n" + _by_hand(ds, dest))
    dest.mkdir(parents=True, exist_ok=True)
    say = log or (lambda s: None)
    try:
        if mirror:
            _fetch_files(ds, dest, lambda f: f"{mirror.rstrip('/')}/{ds.name}/{f.name}", say, progressbar)
        elif ds.prepare:
            _fetch_prepared(ds, dest, say, progressbar)
        else:
            _fetch_files(ds, dest, lambda f: f.upstream.url, say, progressbar)
    except ConnectionError as e:
        raise DatasetError(f"{name}: cannot download: {e}\n" + _by_hand(ds, dest)) from None
    say(f"data set {name}: {dest} (downloaded; verified)")
    return dest


def _fetch_files(ds: Dataset, dest: Path, url_of: Callable[[DataFile], str], say: Log, progressbar: bool) -> None:
    for f in ds.files:
        target = dest / f.name
        if target.is_file():
            if mismatch(target, f) is None:
                continue
            target.unlink()  # a stale or foreign file: replaced by a verified one below
        url = url_of(f)
        say(f"fetching {url}")
        try:
            _download(url, target, f, progressbar)
        except DatasetError as e:
            if not f.optional:
                raise
            say(f"  {f.name} is optional and was not fetched ({str(e).splitlines()[0]}); {ds.name} is complete "
                f"without it")


def _fetch_prepared(ds: Dataset, dest: Path, say: Log, progressbar: bool) -> None:
    if _verified(dest, ds, None):
        return
    staging = dest / ".upstream"
    staging.mkdir(exist_ok=True)
    inputs = {}
    for up in ds.inputs:
        target = staging / up.path.replace("/", "__")
        if not (target.is_file() and mismatch(target, up) is None):
            say(f"fetching {up.url}")
            _download(up.url, target, up, progressbar)
        inputs[up.path] = target
    with tempfile.TemporaryDirectory(dir=dest, prefix=".prepare-") as tmp:
        out = Path(tmp)
        PREPARE[ds.prepare](inputs, out)
        for f in ds.files:
            bad = mismatch(out / f.name, f)
            if bad:
                raise DatasetError(f"{ds.name}: {f.name} made from the upstream files is not the registered file "
                                   f"({bad})\n" + _by_hand(ds, dest))
        for f in ds.files:
            os.replace(out / f.name, dest / f.name)
    shutil.rmtree(staging)


def _lines(path: Path) -> Iterable[list[str]]:
    with open(path, encoding="ascii") as fh:
        for line in fh:
            parts = line.split()
            if parts:
                yield parts


def _write_per_user(path: Path, rows: dict[str, list[str]]) -> None:
    with open(path, "w", encoding="ascii", newline="\n") as fh:
        for user, items in rows.items():
            fh.write(" ".join([user, *items]) + "\n")


def prepare_mbcgcn(inputs: dict[str, Path], out: Path) -> None:
    """MB-CGCN's per-behavior files (tab-separated per-user lines, 0-based) and MuLe's view pairs
    (``u i``, 1-based) → graphrec's per-user text layout (train, test, cart, pv)."""
    for name, src in (("train.txt", "Data/buy/train.txt"), ("test.txt", "Data/buy/test.txt")):
        _write_per_user(out / name, {p[0]: p[1:] for p in _lines(inputs[src])})
    cart = {p[0]: p[1:] for p in _lines(inputs["Data/cart/train.txt"])}
    for p in _lines(inputs["Data/cart/test.txt"]):
        cart.setdefault(p[0], []).extend(p[1:])
    _write_per_user(out / "cart.txt", cart)
    views: dict[str, list[str]] = {}
    for u, i in _lines(inputs["data/taobao/view.txt"]):
        views.setdefault(str(int(u) - 1), []).append(str(int(i) - 1))
    _write_per_user(out / "pv.txt", views)


PREPARE: dict[str, Callable[[dict[str, Path], Path], None]] = {"mbcgcn": prepare_mbcgcn}


# ------------------------------------------------------------------------------------ reporting

LIST_HEADERS = ("name", "behaviors", "users", "items", "size", "source", "license")


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def listing() -> list[list[object]]:
    """One row per data set (LIST_HEADERS): the README's "Data sets" table is this, as Markdown."""
    rows = []
    for d in DATASETS:
        views = " (views upstream only)" if any(f.optional for f in d.files) else ""
        size = _mib(d.size) + (" + views" if views else "")
        source = d.origin if not d.no_url else d.origin + " (mirror or local copy)" if d.origin != "—" else \
            "mirror or local copy"
        rows.append([d.name, " → ".join(d.behaviors) + views, d.users, d.items, size, source,
                     d.license.split(";")[0]])
    return rows


def info(name: str) -> str:
    """A data set's record: what it is, each file with its source, size and hash, where it is here."""
    d = get(name)
    found = locate(name)
    lines = [f"{d.name}: {d.title}", f"  behaviors: {' → '.join(d.behaviors)}; format {d.format}"
             + (f"; {d.users:,} users, {d.items:,} items" if d.users else ""),
             f"  license: {d.license}", f"  cite: {d.citation}"]
    if d.note:
        lines.append(f"  note: {d.note}")
    lines.append(f"  on this machine: {found[0] if found else 'no (graphrec datasets fetch ' + name + ')'}")
    lines.append("  files graphrec reads:")
    for f in d.files:
        size = f"{f.size:,} B" if f.size is not None else "size not known here"
        pin = f"sha256 {f.sha256}" if f.sha256 else f"git blob {f.git_blob}"
        lines.append(f"    {f.name:<22} {size:>14}  {pin}{'  (optional)' if f.optional else ''}")
        lines.append(f"      {f.about}" + (f"; from {f.upstream.url}" if f.upstream else ""))
    if d.inputs:
        lines.append(f"  made by `{d.prepare}` from the published files:" if d.prepare else
                     "  converted (outside graphrec) from the published files:")
        lines += [f"    {u.url}" + (f" ({u.size:,} B)" if u.size else "") for u in d.inputs]
    if d.no_url:
        lines.append(f"  download: from a mirror ({ENV_MIRROR}) or a local copy only: {d.no_url}")
    if d.format in ("ghcf", "csv"):
        lines.append(f"  ingest: graphrec ingest --dataset {d.name}   (finds or fetches the files itself)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ fail fast


def probe(name: str, mirror: str | None = None, timeout: float = 8.0) -> str:
    """For `make demo` before the long setup: where NAME will come from, or DatasetError at once
    when it is on this machine nowhere and its download source does not answer."""
    ds = get(name)
    found = locate(name)
    if found is not None:
        return f"{name}: {found[0]}"
    mirror = mirror or mirror_url()
    if not mirror and ds.no_url:
        raise DatasetError(f"{name}: not on this machine, and no public URL serves it: {ds.no_url}\n"
                           + _by_hand(ds, cache_root() / name))
    first = ds.required[0]
    url = (f"{mirror.rstrip('/')}/{name}/{first.name}" if mirror else
           (ds.inputs[0].url if ds.prepare else first.upstream.url))
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DatasetError(f"{name}: not on this machine, and {url} does not answer ({reason})\n"
                           + _by_hand(ds, cache_root() / name)) from None
    return f"{name}: will be downloaded from {url.rsplit('/', 1)[0]}/"


def main(argv: list[str] | None = None) -> int:
    """``python3 -m graphrec.datasets check NAME``: the standard-library-only probe."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "check":
        print("usage: python3 -m graphrec.datasets check NAME", file=sys.stderr)
        return 2
    try:
        print(probe(args[1]))
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
