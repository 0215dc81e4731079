"""What pinning the CPU kernels costs (``run_suite.py --cpu-isa``, core/cpu.py): the same quick-suite jobs under each
level, timed from their records, and whether each level gives the default's records.

    python bench/cpu_isa.py                                   # full_ft and sd_lora at seed 1993, 2 rounds
    python bench/cpu_isa.py --methods full_ft,sd_lora,l2p --rounds 3 --levels native,avx2

Each round runs, once per level and in turn, ``run_suite.py --suite quick --methods M --seeds S --jobs 1 --threads
1 --force --no-report --cpu-isa LEVEL`` in a fresh process whose environment holds none of the pin's variables, into
a scratch folder holding the committed ``docs/results/quick/recipe.json`` (so the recipe rule trains nothing). A
level's time is the sum of its jobs' ``timings.total_s`` (training and evaluation; process start-up left out), its
figure the median over rounds, and each level's ratio to ``native`` is taken within the run. ``same_as_default``
says whether a level's records have the accuracy matrices of the default level's (``avx2``). Prints one line per
level, then a JSON line with every figure (the last line).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.cpu import DEFAULT, LEVELS, unpinned


def run_level(level: str, methods: str, seed: int, folder: Path) -> dict[str, dict]:
    """One run of the jobs at ``level`` into ``folder``; its records by job id."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy(REPO / "docs" / "results" / "quick" / "recipe.json", folder / "recipe.json")
    cmd = [sys.executable, str(REPO / "run_suite.py"), "--suite", "quick", "--methods", methods, "--seeds", str(seed),
           "--jobs", "1", "--threads", "1", "--force", "--no-report", "--results-dir", str(folder), "--cpu-isa", level]
    subprocess.run(cmd, cwd=REPO, env=unpinned(dict(os.environ)), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return {p.stem: json.loads(p.read_text()) for p in sorted((folder / "records").glob("*.json"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="full_ft,sd_lora", help="quick-suite labels, comma-separated")
    ap.add_argument("--seed", type=int, default=1993)
    ap.add_argument("--levels", default="native,avx2,baseline", help=f"comma-separated, of: {', '.join(LEVELS)}")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    levels = [x.strip() for x in args.levels.split(",") if x.strip()]
    unknown = [x for x in levels if x not in LEVELS]
    if unknown or "native" not in levels or args.rounds < 1:
        print(f"error: --levels must name known levels ({', '.join(LEVELS)}), native among them, and --rounds be "
              f">= 1; got {args.levels!r}, {args.rounds}", file=sys.stderr)
        return 2
    seconds: dict[str, list[float]] = {x: [] for x in levels}
    matrices: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="sdlb-cpu-isa-") as tmp:
        for _ in range(args.rounds):
            for level in levels:
                records = run_level(level, args.methods, args.seed, Path(tmp) / level)
                seconds[level].append(sum(r["timings"]["total_s"] for r in records.values()))
                matrices[level] = {k: (r["acc_matrix"], r["til_matrix"]) for k, r in records.items()}
                cpus = {r["provenance"]["cpu"] for r in records.values()}
                print(f"  {level}: {seconds[level][-1]:.1f} s ({', '.join(sorted(cpus))})", flush=True)
    median = {x: statistics.median(s) for x, s in seconds.items()}
    result = {
        "machine": platform.machine(), "methods": args.methods, "seed": args.seed, "rounds": args.rounds,
        "seconds": {x: round(m, 2) for x, m in median.items()},
        "ratio_to_native": {x: round(m / median["native"], 3) for x, m in median.items()},
        "same_as_default": ({x: matrices[x] == matrices[DEFAULT] for x in levels} if DEFAULT in matrices else None),
    }
    for level in levels:
        print(f"{level:9s} {median[level]:7.1f} s  x{result['ratio_to_native'][level]:.3f} of native"
              + (f"  same records as {DEFAULT}: {result['same_as_default'][level]}" if result["same_as_default"] else ""))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
