"""Does a CPU suite separate methods as issue 17 asks? Its requirements, measured from the suite's records.

    python -m analysis.mini --results-dir docs/results/mini --design held_out_mixed \
        --probe docs/results/mini/designs_held_out_mixed_1993.json [--probe ... one per seed] \
        [--readme README.md --name mini]

Prints a Markdown table, one requirement per row (what is measured, the value, the bound, whether it holds), then
each adapter's and full fine-tuning's task-incremental accuracy (the last requirement's inputs), two diagnostics
of what the separation rests on (:func:`largest_se_seeds`: the row with the largest standard error, seed by seed,
with its accuracy on the task it learned last; :func:`near_chance`: the rows whose task-incremental accuracy fell
to chance at some seed, i.e. whose training collapsed), the ranking, and the Kendall rank correlation between the
suite's method ranking (final class-incremental Acc, seed means) and the paper's ImageNet-R N=10 ranking (``results/reference/paper_results.csv``, methods both have), as a diagnostic, not a
target. The linear probe comes from ``bench/mini_designs.py`` (``--probe``, repeatable: one file per seed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from analysis.readme import replace_block
from analysis.records import done, load_records, mean_se, paper_key
from analysis.tables import PAPER_RESULTS, PAPER_TABLES, _read_reference
from core.errors import UserError
from methods import METHODS

ADAPTERS = ("sd_lora", "sd_lora_rr", "sd_lora_kd", "seq_lora", "inflora")  # LoRA-family rows of the CPU suites
NEAR_CHANCE = 5.0  # points above chance under which a seed's final task-incremental Acc counts as collapsed
BOUNDS = {"wall_min": 20.0, "joint_minus_simple_cil": 10.0, "joint_minus_probe": 10.0, "spread_over_se": 5.0,
          "adapter_til_minus_full_ft": 5.0}


def seed_means(df: pd.DataFrame, metric: str) -> dict[str, tuple[float, float, int]]:
    """method -> (mean, standard error, seeds) of ``metric`` over the done records."""
    return {m: mean_se(g[metric]) for m, g in df.groupby("method", sort=False)}


def ranked_rows(df: pd.DataFrame) -> dict[str, tuple[float, float, int]]:
    """The seed means of Acc of the rows the separation requirement compares (every row but the reference ones)."""
    names = dict(zip(df["method"], df["method_name"], strict=False))
    return {m: v for m, v in seed_means(df, "acc").items() if METHODS.get(names[m]).info.group != "reference"}


def largest_se_seeds(df: pd.DataFrame) -> str:
    """The row whose standard error bounds the separation, seed by seed: final Acc, and its class- and
    task-incremental Acc on the task it learned last (the last entries of the two accuracy matrices), with that
    task's classes. A last task near 0 class-incremental but well above chance task-incremental is one whose
    classes the features separate but whose heads earlier classes outscore."""
    ranked = ranked_rows(df)
    worst = max(ranked, key=lambda m: ranked[m][1])
    parts = []
    for record in df[df["method"] == worst].sort_values("seed")["record"]:
        last = record["classes_per_task"][-1]
        classes = ",".join(str(c) for c in record["class_order"][-last:])
        parts.append(f"seed {record['seed']}: Acc {record['metrics']['acc']:.2f}, last task (classes {classes}) "
                     f"{record['acc_matrix'][-1][-1]:.1f} class-incr., {record['til_matrix'][-1][-1]:.1f} task-incr.")
    return f"largest standard error: {worst} {ranked[worst][1]:.2f} ({'; '.join(parts)})"


def chance_til(record: dict) -> float:
    """Task-incremental accuracy of guessing: the mean over tasks of 100 / classes in the task."""
    return float(np.mean([100.0 / c for c in record["classes_per_task"]]))


def near_chance(df: pd.DataFrame, margin: float = NEAR_CHANCE) -> str:
    """The rows with a seed whose final task-incremental Acc is within ``margin`` points of chance: a network that
    no longer separates even the classes of one task has collapsed, which is not the same as forgetting."""
    counts = {}
    for method, group in df.groupby("method", sort=False):
        hits = [r for r in group["record"] if r["metrics"]["til_acc"] <= chance_til(r) + margin]
        if hits:
            counts[method] = f"{method} {len(hits)} of {len(group)} seed(s) (" + ", ".join(
                f"{r['metrics']['til_acc']:.1f}" for r in sorted(hits, key=lambda r: r["seed"])) + ")"
    chance = ", ".join(sorted({f"{chance_til(r):.1f}" for r in df["record"]}))
    return (f"final task-incr. Acc within {margin:g} points of chance ({chance}): "
            + ("; ".join(counts.values()) if counts else "no row"))


def wall_minutes(df: pd.DataFrame, results_dir: Path | None = None) -> float:
    """First job's start to last job's end, from the records' provenance, plus the recipe rule's selection before
    them (``elapsed_s`` of ``<results>/recipe.json``, runner/recipe.py) when the suite has one."""
    starts = [dt.datetime.fromisoformat(r["provenance"]["started"]) for r in df["record"]]
    ends = [dt.datetime.fromisoformat(r["provenance"]["finished"]) for r in df["record"]]
    return ((max(ends) - min(starts)).total_seconds() + selection_seconds(results_dir)) / 60


def selection_seconds(results_dir: Path | None) -> float:
    """Seconds the recipe rule's selection took (0 for a suite without one)."""
    path = Path(results_dir) / "recipe.json" if results_dir is not None else None
    if path is None or not path.exists():
        return 0.0
    doc = json.loads(path.read_text())
    return float(doc["elapsed_s"]) if "elapsed_s" in doc else float("nan")  # a recipe.json from before its timing


def probe_mean(paths: list[Path], design: str) -> tuple[float, int]:
    values = []
    for path in paths:
        try:
            values.append(json.loads(path.read_text())["designs"][design]["linear_probe"])
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"--probe {path}: no linear probe for design {design!r} ({err}); "
                            "write it with python bench/mini_designs.py --out FILE") from None
    return float(np.mean(values)), len(values)


def paper_acc(benchmark: str = "imagenet_r", n_tasks: int = 10, reference: Path = PAPER_RESULTS) -> dict[str, float]:
    """The paper's final Acc per method name of the reference CSV, from the table that reports ``benchmark`` at
    ``n_tasks`` (ImageNet-R: Table 2; the ablation rows of Table 4 are configurations of SD-LoRA, not methods)."""
    table = next(t for t, layout in PAPER_TABLES.items() if not layout.requires and any(
        c.benchmark_name == benchmark and c.n_tasks == n_tasks for c in layout.columns))
    ref = _read_reference(reference)
    rows = ref[(ref["table"] == table) & (ref["benchmark"] == benchmark) & (ref["n_tasks"] == n_tasks)]
    return dict(zip(rows["method"], rows["acc"].astype(float), strict=True))


def rank_agreement(acc: dict[str, float], reference: Path = PAPER_RESULTS) -> tuple[float, float, list[str]]:
    """(Kendall tau, p-value, methods compared) between our seed-mean Acc and the paper's ImageNet-R N=10 Acc."""
    paper = paper_acc(reference=reference)
    ours = {paper_key(m): a for m, a in acc.items() if paper_key(m) in paper}
    common = sorted(ours)
    if len(common) < 3:
        raise UserError(f"only {len(common)} methods shared with the paper's ImageNet-R N=10 rows; need 3")
    tau, p = kendalltau([ours[m] for m in common], [paper[m] for m in common])
    return float(tau), float(p), common


def requirements(df: pd.DataFrame, probe: float | None, results_dir: Path | None = None) -> list[dict]:
    acc, til = seed_means(df, "acc"), seed_means(df, "til_acc")
    for needed in ("joint", "simple_cil", "full_ft"):
        if needed not in acc:
            raise UserError(f"the records hold no {needed} row; the requirements compare against it")
    ranked = ranked_rows(df)
    spread = max(v[0] for v in ranked.values()) - min(v[0] for v in ranked.values())
    max_se = max(v[1] for v in ranked.values())
    adapters = [m for m in ADAPTERS if m in til]
    wall = wall_minutes(df, results_dir)
    rows = [
        ("suite wall-clock (minutes: the jobs, plus the recipe rule's selection if any)", wall, "<=",
         BOUNDS["wall_min"]) if not np.isnan(wall) else
        ("suite wall-clock (minutes: jobs only; this recipe.json predates the selection's timing)",
         wall_minutes(df), "<=", BOUNDS["wall_min"]),
        ("joint Acc - SimpleCIL Acc", acc["joint"][0] - acc["simple_cil"][0], ">=", BOUNDS["joint_minus_simple_cil"]),
    ]
    if probe is not None:
        rows.append(("joint Acc - linear probe of the frozen backbone", acc["joint"][0] - probe, ">=",
                     BOUNDS["joint_minus_probe"]))
    rows += [
        ("spread of method means / largest standard error (joint left out)", spread / max_se, ">=",
         BOUNDS["spread_over_se"]),
        ("lowest adapter task-incr. Acc - full_ft task-incr. Acc", min(til[m][0] for m in adapters) - til["full_ft"][0],
         ">=", BOUNDS["adapter_til_minus_full_ft"]),
    ]
    return [{"requirement": name, "value": round(value, 2), "bound": f"{op} {bound:g}",
             "holds": bool(value <= bound if op == "<=" else value >= bound)} for name, value, op, bound in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.mini", description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", type=Path, required=True)
    ap.add_argument("--probe", type=Path, action="append", default=[], help="bench/mini_designs.py JSON (per seed)")
    ap.add_argument("--design", default="held_out_mixed", help="the probe's design that the suite runs (the mini suite's)")
    ap.add_argument("--readme", type=Path, help="also write the output between <!-- requirements:NAME:start --> "
                                                "and <!-- requirements:NAME:end --> of this Markdown file")
    ap.add_argument("--name", help="the marker's NAME (default: the results folder's name)")
    args = ap.parse_args(argv)
    try:
        df = done(load_records(args.results_dir))
        if df.empty:
            raise UserError(f"--results-dir {args.results_dir}: no done records")
        probe, n_probe = probe_mean(args.probe, args.design) if args.probe else (None, 0)
        rows = requirements(df, probe, args.results_dir)
        acc = {m: v[0] for m, v in seed_means(df, "acc").items()}
        tau, p, common = rank_agreement(acc)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    lines = ["| requirement | measured | bound | holds |", "|---|---:|---|---|"]
    lines += [f"| {r['requirement']} | {r['value']:.2f} | {r['bound']} | {'yes' if r['holds'] else 'no'} |"
              for r in rows]
    if probe is not None:
        lines += ["", f"linear probe: {probe:.2f} (mean of {n_probe} seed(s), design {args.design})"]
    til = {m: v[0] for m, v in seed_means(df, "til_acc").items()}
    lines.append("task-incr. Acc (seed means): full_ft " + f"{til['full_ft']:.2f}; adapters: "
                 + ", ".join(f"{m} {til[m]:.2f}" for m in sorted((m for m in ADAPTERS if m in til), key=til.get)))
    lines += [largest_se_seeds(df), near_chance(df)]
    order = sorted(acc, key=acc.get, reverse=True)
    lines.append("ranking (seed-mean Acc): " + " > ".join(f"{m} {acc[m]:.2f}" for m in order))
    lines.append(f"Kendall tau vs the paper's ImageNet-R N=10 Acc over {len(common)} methods ({', '.join(common)}): "
                 f"{tau:.3f} (p = {p:.3f}); a diagnostic, not a target")
    print("\n".join(lines))
    if args.readme is not None:
        replace_block(args.readme, "requirements", args.name or args.results_dir.name, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
