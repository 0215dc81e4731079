"""Write a suite's results into README.md between markers, from the records (never by hand).

    python -m analysis.readme --results-dir docs/results/quick --readme README.md
    python -m analysis.readme --results-dir docs/results/quick --results-dir docs/results/last_blocks \
        --readme docs/adding_a_method.md --name quick_and_last_blocks

Replaces the text between ``<!-- results:NAME:start -->`` and ``<!-- results:NAME:end -->`` (NAME = ``--name``,
default the first results folder's name) with a Markdown table of the pooled records of every folder: mean (standard error) over seeds of the class-incremental Acc and
AAA, the task-incremental Acc, forgetting, and the mean time per job; a row some of whose seeds diverged (the
records' ``nonfinite_loss``) says how many beside its seed count.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from analysis.records import done, seed_count, summary
from analysis.report import load_folders


def _cell(mean: float, se: float) -> str:
    return f"{mean:.2f}" if not np.isfinite(se) else f"{mean:.2f} ({se:.2f})"


def results_markdown(results_dirs: list[Path]) -> str:
    df, _ = load_folders(results_dirs)
    table = summary(df)
    times = done(df).assign(total_s=lambda d: d["record"].map(lambda r: r["timings"]["total_s"]))
    mean_time = times.groupby(["label", "benchmark"])["total_s"].mean()
    lines = ["| method | benchmark | seeds | Acc | AAA | task-incr. Acc | forgetting | s/job |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in table.itertuples(index=False):
        r = row._asdict()
        seeds = seed_count(times[times["benchmark"] == r["benchmark"]], r["label"], r["n_seeds"])
        lines.append(
            f"| {r['label']} | {r['benchmark']} | {seeds} | {_cell(r['acc_mean'], r['acc_se'])} | "
            f"{_cell(r['aaa_mean'], r['aaa_se'])} | {_cell(r['til_acc_mean'], r['til_acc_se'])} | "
            f"{_cell(r['forgetting_mean'], r['forgetting_se'])} | {mean_time[(r['label'], r['benchmark'])]:.0f} |")
    return "\n".join(lines)


def update_readme(results_dirs: list[Path], readme: Path, name: str | None = None) -> None:
    replace_block(readme, "results", name or results_dirs[0].name, results_markdown(results_dirs))


def replace_block(readme: Path, kind: str, name: str, body: str) -> None:
    """Put ``body`` between ``<!-- KIND:NAME:start -->`` and ``<!-- KIND:NAME:end -->`` of ``readme``."""
    start, end = f"<!-- {kind}:{name}:start -->", f"<!-- {kind}:{name}:end -->"
    text = readme.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"error: {readme} has no {start} ... {end} block; add the two markers where the table goes")
    block = f"{start}\n{body}\n{end}"
    readme.write_text(pattern.sub(lambda _: block, text))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", type=Path, required=True, action="append",
                    help="results folder holding records/ (repeat to pool several folders in one table)")
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    ap.add_argument("--name", help="the marker's NAME (default: the first results folder's name)")
    args = ap.parse_args(argv)
    update_readme(args.results_dir, args.readme, args.name)


if __name__ == "__main__":
    main()
