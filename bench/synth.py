"""Synthetic logs against the real ones they are shaped like, and the generator's speed.

    python bench/synth.py [--like retailrocket,taobao_mbcgcn] [--events 1M] [--sizes 1M,10M]

For each real data set: its profile (``graphrec.synth.profile``), a synthetic log of ``--events``
rows, that log's own profile, and one table of the figures side by side (behavior shares, the
cascade's conditional rates, events per user, the popularity exponent, repeats, time gaps). Then
generation time, rows/s, file size and peak RSS at each of ``--sizes`` (one process per size).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def figures(p) -> dict[str, str]:
    b = p.behaviors
    pat = p.patterns
    share = {x: sum(v * (x in k.split("+")) * 1 for k, v in pat.items()) for x in b}
    per_pair = sum(share.values())
    out = {f"{x} share of interactions": f"{share[x] / per_pair:.3f}" for x in b}
    for up, down in zip(b, b[1:]):
        both = sum(v for k, v in pat.items() if up in k.split("+") and down in k.split("+"))
        out[f"P({down} | {up})"] = f"{both / max(share[up], 1e-12):.3f}"
        alone = sum(v for k, v in pat.items() if down in k.split("+") and up not in k.split("+"))
        out[f"{down} without {up}"] = f"{alone / max(share[down], 1e-12):.3f}"
    out["distinct items per user, mean"] = f"{math.exp(p.pairs_log_mean + p.pairs_log_std ** 2 / 2):.1f}"
    out["log items per user, mean / std"] = f"{p.pairs_log_mean:.2f} / {p.pairs_log_std:.2f}"
    out["Zipf exponent (top 2,000 items)"] = f"{p.zipf_exponent:.2f}"
    out["repeated interactions"] = ", ".join(f"{x} {p.repeat_share[x]:.3f}" for x in b)
    for key, (mu, _) in p.gaps.items():
        out[f"median gap {key.replace('>', ' → ')}"] = f"{math.exp(mu):,.0f} s" if p.has_timestamps else "(none)"
    return out


def one_size(like: str, events: int, out: Path) -> dict:
    from graphrec.synth import synthesize

    _, r = synthesize(like, events, out, seed=0)
    return {"rows": r.rows, "users": r.users, "items": r.items, "seconds": r.seconds,
            "bytes": out.stat().st_size, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--like", default="retailrocket,taobao_mbcgcn")
    ap.add_argument("--events", default="1M")
    ap.add_argument("--sizes", default="1M,10M")
    ap.add_argument("--one", nargs=3, metavar=("LIKE", "EVENTS", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench/out/synth.md"))
    args = ap.parse_args()
    from graphrec.synth import parse_count

    if args.one:
        print(json.dumps(one_size(args.one[0], parse_count(args.one[1]), Path(args.one[2]))))
        return
    from graphrec import datasets
    from graphrec.ingest.readers import read_source
    from graphrec.progress import format_table
    from graphrec.synth import profile, synthesize

    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for like in args.like.split(","):
            real_p, r = synthesize(like, parse_count(args.events), Path(tmp) / f"{like}.parquet", seed=0)
            data = read_source(r.path)
            syn_p = profile(data.frame, data.behaviors.order, "synthetic")
            real, syn = figures(real_p), figures(syn_p)
            folder = datasets.resolve(like)
            parts.append(f"## {like} ({folder}) against {r.rows:,} synthetic rows (seed 0)\n\n" + format_table(
                ["figure", like, "synthetic"], [[k, real[k], syn.get(k, "")] for k in real]))
            rows = []
            for size in args.sizes.split(","):
                out = Path(tmp) / f"{like}-{size}.parquet"
                res = json.loads(subprocess.run([sys.executable, __file__, "--one", like, size, str(out)],
                                                capture_output=True, text=True, check=True).stdout.splitlines()[-1])
                rows.append([size, f"{res['rows']:,}", f"{res['users']:,}", f"{res['items']:,}",
                             f"{res['seconds']:.1f}", f"{res['rows'] / res['seconds']:,.0f}",
                             f"{res['bytes'] / 2**20:.1f}", f"{res['rss_mib']:.0f}"])
                out.unlink()
                print(rows[-1], file=sys.stderr, flush=True)
            parts.append(f"### generating logs shaped like {like}\n\n" + format_table(
                ["events", "rows", "users", "items", "seconds", "rows/s", "Parquet MiB", "peak RSS MiB"], rows))
    text = "\n\n".join(parts) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
