"""``python -m benchmarks.prepare NAME... --data-root DIR``: fetch, verify and lay out datasets (and weights).

    python -m benchmarks.prepare imagenet_r cifar100 --data-root /data
    python -m benchmarks.prepare imagenet_r:coda domainnet --data-root /data --dry-run
    python -m benchmarks.prepare all --data-root /data --backbone vit_base_patch16_224.augreg2_in21k_ft_in1k

Exit codes: 0 done, 2 bad input or a failed step (one line saying what to do; offline: one line per item).
"""

from __future__ import annotations

import argparse
import sys

from core.errors import UserError
from core.folders import output_problem


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from benchmarks.prepare.table import preparable

    names = preparable()
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.prepare",
        description="Fetch, verify and lay out the paper's datasets under a data root (docs/datasets.md).",
    )
    ap.add_argument(
        "names",
        nargs="+",
        metavar="NAME",
        help=f"all (every name below), or benchmarks: {', '.join(names)} (imagenet_r alone means imagenet_r:pilot)",
    )
    ap.add_argument("--data-root", required=True, help="folder that receives the datasets (created if needed)")
    ap.add_argument(
        "--backbone",
        action="append",
        default=[],
        metavar="TAG",
        help="also fetch the weights of this timm tag into the Hugging Face cache (repeatable)",
    )
    ap.add_argument("--dry-run", action="store_true", help="list source, size and target of each file; fetch nothing")
    ap.add_argument(
        "--offline",
        action="store_true",
        help="never use the network: use archives already in <data-root>/.downloads, list the rest",
    )
    ap.add_argument("--keep-archives", action="store_true", help="keep the archives in <data-root>/.downloads")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap.parse_args(argv)


def configs(names: list[str], data_root: str) -> list[tuple[str, object]]:
    """``(benchmark, config)`` for each NAME (``imagenet_r:coda`` sets the split)."""
    from benchmarks import BENCHMARKS
    from benchmarks.prepare.table import preparable

    valid = preparable()
    if "all" in names:  # every name, both splits of imagenet_r included
        names = list(dict.fromkeys([n for n in names if n != "all"] + list(valid)))
    out = []
    for name in names:
        bench, _, split = name.partition(":")
        if name not in valid and f"{name}:pilot" not in valid:
            raise UserError(f"cannot prepare {name!r}; valid names are: all, {', '.join(valid)}")
        fields = {"root": data_root, **({"split": split} if split else {})}
        out.append((bench, BENCHMARKS.make_config(bench, fields)))
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        from benchmarks.backbones import BackboneConfig
        from benchmarks.prepare import listing, plan, prepare
        from benchmarks.prepare.weights import prepare_weights, weight_items

        problem = output_problem(args.data_root, "--data-root", probe=not args.dry_run)
        if problem:
            raise UserError(problem)
        items = plan(configs(args.names, args.data_root))
        weights = weight_items(BackboneConfig(tag=tag) for tag in args.backbone)
        if args.dry_run:
            print("\n".join(listing(items, weights)))
            return 0
        prepare(items, offline=args.offline, keep_archives=args.keep_archives, quiet=args.quiet)
        prepare_weights(weights, offline=args.offline)
        return 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a download's .part file stays: the next run resumes it
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
