"""Write a suite's results into README.md between markers, from the records (never by hand).

    python -m analysis.readme --results-dir docs/results/quick --readme README.md

Replaces the text between ``<!-- results:NAME:start -->`` and ``<!-- results:NAME:end -->`` (NAME = the
results folder's name) with a Markdown table: mean (standard error) over seeds of the class-incremental Acc and
AAA, the task-incremental Acc, forgetting, and the mean time per job.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from analysis.records import done, load_records, summary


def _cell(mean: float, se: float) -> str:
    return f"{mean:.2f}" if not np.isfinite(se) else f"{mean:.2f} ({se:.2f})"


def results_markdown(results_dir: Path) -> str:
    df = load_records(results_dir)
    table = summary(df)
    times = done(df).assign(total_s=lambda d: d["record"].map(lambda r: r["timings"]["total_s"]))
    mean_time = times.groupby(["label", "benchmark"])["total_s"].mean()
    lines = ["| method | benchmark | seeds | Acc | AAA | task-incr. Acc | forgetting | s/job |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in table.itertuples(index=False):
        r = row._asdict()
        lines.append(
            f"| {r['label']} | {r['benchmark']} | {r['n_seeds']} | {_cell(r['acc_mean'], r['acc_se'])} | "
            f"{_cell(r['aaa_mean'], r['aaa_se'])} | {_cell(r['til_acc_mean'], r['til_acc_se'])} | "
            f"{_cell(r['forgetting_mean'], r['forgetting_se'])} | {mean_time[(r['label'], r['benchmark'])]:.0f} |")
    return "\n".join(lines)


def update_readme(results_dir: Path, readme: Path) -> None:
    name = results_dir.name
    start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
    text = readme.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"error: {readme} has no {start} ... {end} block; add the two markers where the table goes")
    block = f"{start}\n{results_markdown(results_dir)}\n{end}"
    readme.write_text(pattern.sub(lambda _: block, text))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", type=Path, required=True)
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    args = ap.parse_args(argv)
    update_readme(args.results_dir, args.readme)


if __name__ == "__main__":
    main()
