"""``python -m analysis --results-dir results/quick [--reference results/reference/paper_results.csv]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.report import make_report


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, write the report and print the written paths; errors exit with code 2 and one line."""
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    parser.add_argument("--results-dir", type=Path, required=True, help="results directory holding records/")
    parser.add_argument("--reference", type=Path, default=None, help="CSV of the paper's numbers (reference.tex)")
    args = parser.parse_args(argv)
    try:
        paths = make_report(args.results_dir, args.reference)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
