#!/usr/bin/env python3
"""Runs `cargo bench` and prints every contender's throughput and the reference's
ratio to it, from criterion's own estimates (target/criterion/**/new/*.json), so the
README's table can be regenerated from one run:

    python3 benches/ratios.py                       # all benches, --features peers
    python3 benches/ratios.py --bench top_k -- --measurement-time 5

Arguments are passed to `cargo bench --features peers` as they are. Only estimates
written by this run are read: a bench that was skipped (no redis-server) prints
nothing rather than an old number.
"""

import json
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRITERION = ROOT / "target" / "criterion"


def run_benches(args):
    started = time.time()
    command = ["cargo", "bench", "--features", "peers", *args]
    print("$", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, cwd=ROOT, check=True)
    return started


def fresh_results(since):
    """(group, contender) -> elements per second, for estimates written since `since`."""
    results = {}
    for estimates in CRITERION.glob("**/new/estimates.json"):
        if estimates.stat().st_mtime < since:
            continue
        benchmark = json.loads((estimates.parent / "benchmark.json").read_text())
        elements = (benchmark.get("throughput") or {}).get("Elements")
        if not elements:
            continue
        # The mean time per iteration, in ns; an iteration handles `elements` items.
        mean_ns = json.loads(estimates.read_text())["mean"]["point_estimate"]
        contender = benchmark["full_id"][len(benchmark["group_id"]) + 1 :]
        results[(benchmark["group_id"], contender)] = elements / mean_ns * 1e9
    return results


def human(per_second):
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_second >= scale:
            return f"{per_second / scale:.2f}{unit}/s"
    return f"{per_second:.1f}/s"


def main():
    since = run_benches(sys.argv[1:])
    results = fresh_results(since)
    groups = sorted({group for group, _ in results})
    for group in groups:
        contenders = {name: rate for (g, name), rate in results.items() if g == group}
        references = sorted(name for name in contenders if name.startswith("reference"))
        others = sorted(name for name in contenders if not name.startswith("reference"))
        print(f"\n{group}")
        for name in references + others:
            print(f"  {name:<40} {human(contenders[name]):>12}")
        for reference in references:
            for other in others:
                print(f"  {reference} / {other}: {contenders[reference] / contenders[other]:.2f}x")


if __name__ == "__main__":
    main()
