"""Does a CPU suite separate methods as issue 17 asks? Its requirements, measured from the suite's records.

    python -m analysis.mini --results-dir docs/results/mini --design held_out_mixed \
        --probe docs/results/mini/designs_held_out_mixed_1993.json [--probe ... one per seed] \
        [--readme README.md --name mini]

Prints a Markdown table, one requirement per row (what is measured, the value, the bound, whether it holds), then
each adapter's and full fine-tuning's task-incremental accuracy (the last requirement's inputs), two diagnostics
of what the separation rests on (:func:`largest_se_seeds`: the row with the largest standard error, seed by seed,
with its accuracy on the task it learned last; :func:`near_chance`: the rows whose task-incremental accuracy fell
to chance at some seed, i.e. whose training collapsed; :func:`diverged`, only when a record says so: the rows
whose training loss became NaN or infinite), the ranking, and the Kendall rank correlation between the
suite's method ranking (final class-incremental Acc, seed means) and the paper's ImageNet-R N=10 ranking (``results/reference/paper_results.csv``, methods both have), as a diagnostic, not a
target. The linear probe comes from ``bench/mini_designs.py`` (``--probe``, repeatable: one file per seed).

    python -m analysis.mini --results-dir docs/results/mini --results-dir docs/results/mini_seeds --draws 3 \
        --suite-seeds 1993,1994,1995 --probe ... [one per seed] [--readme FILE --name NAME]

With ``--draws K`` (and the records of more than K seeds, pooled from the folders of several runs of one suite) it
asks how sure one K-seed run's verdict is: for every choice of K seeds it recomputes the requirements the records
decide (all but the wall-clock; :func:`seed_draws`) and prints how many draws meet each, the least, median and
largest value, the value at the suite's own seeds, which row had the largest standard error, and the measures over
all seeds (:func:`draws_lines`). With ``--draws K-L`` it does so for every number of seeds from K to L, one column
each: how many draws meet each requirement and all of them (:func:`counts_lines`), i.e. how many seeds a run needs
before its verdict stops depending on which seeds it drew.

    python -m analysis.mini --results-dir docs/results/mini_avx2 --tasks [--readme FILE --name NAME]

With ``--tasks`` it says where each row's class-incremental errors go (:func:`task_lines`, from the records'
``task_confusion``, runner/metrics.py): within tasks or between them, and between them which way.

    python -m analysis.mini --summary docs/results/mini/candidates.json [--readme FILE --name NAME]

With ``--summary`` it reads a manifest of candidate runs (each run's results folder, the design its stream and
backbone are, that design's probe files) and of probed designs, and prints every run against the five
requirements, one row each, then every probed design's probe-stage gaps (:func:`summary_lines`): the whole
search on one page, each number computed from the records and probe files as the per-run tables are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from analysis.readme import replace_block
from analysis.records import TASK_ERRORS, aggregate, done, paper_key, task_errors
from analysis.report import load_folders
from analysis.tables import PAPER_RESULTS, PAPER_TABLES, _read_reference
from core.errors import UserError
from methods import METHODS

ADAPTERS = ("sd_lora", "sd_lora_rr", "sd_lora_kd", "seq_lora", "inflora")  # LoRA-family rows of the CPU suites
NEAR_CHANCE = 5.0  # points above chance under which a seed's final task-incremental Acc counts as collapsed
BOUNDS = {"wall_min": 20.0, "joint_minus_simple_cil": 10.0, "joint_minus_probe": 10.0, "spread_over_se": 5.0,
          "adapter_til_minus_full_ft": 5.0}
OPS = {key: "<=" if key == "wall_min" else ">=" for key in BOUNDS}
NAMES = {"wall_min": "suite wall-clock (minutes: the jobs, plus the recipe rule's selection if any)",
         "joint_minus_simple_cil": "joint Acc - SimpleCIL Acc",
         "joint_minus_probe": "joint Acc - linear probe of the frozen backbone",
         "spread_over_se": "spread of method means / largest standard error (joint left out)",
         "adapter_til_minus_full_ft": "lowest adapter task-incr. Acc - full_ft task-incr. Acc"}


def seed_means(df: pd.DataFrame, metric: str) -> dict[str, tuple[float, float, int]]:
    """method -> (mean, standard error, seeds) of ``metric`` over the done records, in the records' order of
    methods (one :func:`analysis.records.aggregate` over all rows: the statistics of the tables)."""
    return _by_method(aggregate(df, ["method"], [metric]), metric, df["method"].unique())


def _by_method(stats: pd.DataFrame, metric: str, methods) -> dict[str, tuple[float, float, int]]:
    """:func:`seed_means`' mapping from :func:`analysis.records.aggregate`'s rows of one group of records."""
    rows = stats.set_index("method")
    return {m: (float(rows.at[m, f"{metric}_mean"]), float(rows.at[m, f"{metric}_se"]), int(rows.at[m, f"{metric}_n"]))
            for m in methods}


def reference_rows(df: pd.DataFrame) -> set[str]:
    """The rows the separation requirement leaves out: the registry's reference group (joint training)."""
    names = dict(zip(df["method"], df["method_name"], strict=False))
    return {m for m, name in names.items() if METHODS.get(name).info.group == "reference"}


def ranked_rows(df: pd.DataFrame) -> dict[str, tuple[float, float, int]]:
    """The seed means of Acc of the rows the separation requirement compares (every row but the reference ones)."""
    return _ranked(seed_means(df, "acc"), reference_rows(df))


def _ranked(acc: dict[str, tuple[float, float, int]], leave_out: set[str]) -> dict[str, tuple[float, float, int]]:
    """:func:`ranked_rows` from the rows' seed means of Acc and the rows to leave out."""
    return {m: v for m, v in acc.items() if m not in leave_out}


def largest_se_row(ranked: dict[str, tuple[float, float, int]]) -> str:
    """The row of :func:`ranked_rows` with the largest standard error (the one that bounds the separation)."""
    return max(ranked, key=lambda m: ranked[m][1])


def mean_probe(probes: dict[int, float] | None, seeds) -> float | None:
    """The mean of ``seeds``' linear probes, or None without probes."""
    return float(np.mean([probes[s] for s in seeds])) if probes is not None else None


def largest_se_seeds(df: pd.DataFrame) -> str:
    """The row whose standard error bounds the separation, seed by seed: final Acc, and its class- and
    task-incremental Acc on the task it learned last (the last entries of the two accuracy matrices), with that
    task's classes. A last task near 0 class-incremental but well above chance task-incremental is one whose
    classes the features separate but whose heads earlier classes outscore."""
    ranked = ranked_rows(df)
    worst = largest_se_row(ranked)
    parts = []
    for record in df[df["method"] == worst].sort_values("seed")["record"]:
        last = record["classes_per_task"][-1]
        classes = ",".join(str(c) for c in record["class_order"][-last:])
        parts.append(f"seed {record['seed']}: Acc {record['metrics']['acc']:.2f}, last task (classes {classes}) "
                     f"{record['acc_matrix'][-1][-1]:.1f} class-incr., {record['til_matrix'][-1][-1]:.1f} task-incr."
                     + (f", predicted into tasks 1-{len(record['task_confusion'])} (%): "
                        + "/".join(f"{v:.1f}" for v in record["task_confusion"][-1])
                        if record.get("task_confusion") else ""))
    return f"largest standard error: {worst} {ranked[worst][1]:.2f} ({'; '.join(parts)})"


def task_lines(df: pd.DataFrame) -> list[str]:
    """Where each row's class-incremental errors go (:func:`analysis.records.task_errors`: seed means of Acc,
    task-incremental Acc and task-identity Acc, and the two ways a task's images leave it), as a Markdown table."""
    frame = task_errors(df)
    if len(frame) < len(df):
        raise UserError("--tasks: the records hold no task_confusion (written before it was recorded); rerun them")
    stats = aggregate(frame, ["method"], list(TASK_ERRORS)).sort_values("acc_mean", ascending=False, kind="mergesort")
    lines = ["| method | " + " | ".join(TASK_ERRORS.values()) + " |", "|---|" + "---:|" * len(TASK_ERRORS)]
    lines += ["| " + " | ".join([row.method, *(f"{row[k + '_mean']:.2f} ({row[k + '_se']:.2f})" for k in TASK_ERRORS)])
              + " |" for _, row in stats.iterrows()]
    return [*lines, "", ("seed means (standard error); task-id Acc: the final test images predicted into their own "
                         "task's classes (Acc never exceeds it); the old tasks' column is the mean over the tasks "
                         "before the last")]


def chance_til(record: dict) -> float:
    """Task-incremental accuracy of guessing: the mean over tasks of 100 / classes in the task."""
    return float(np.mean([100.0 / c for c in record["classes_per_task"]]))


def seeds_where(df: pd.DataFrame, hit, show) -> list[str]:
    """``method k of n seed(s) (...)`` for each row with seeds whose record ``hit`` accepts; ``show`` writes the
    brackets from those records, in seed order."""
    lines = []
    for method, group in df.groupby("method", sort=False):
        hits = sorted((r for r in group["record"] if hit(r)), key=lambda r: r["seed"])
        if hits:
            lines.append(f"{method} {len(hits)} of {len(group)} seed(s) ({show(hits)})")
    return lines


def near_chance(df: pd.DataFrame, margin: float = NEAR_CHANCE) -> str:
    """The rows with a seed whose final task-incremental Acc is within ``margin`` points of chance: a network that
    no longer separates even the classes of one task has collapsed, which is not the same as forgetting."""
    counts = seeds_where(df, lambda r: r["metrics"]["til_acc"] <= chance_til(r) + margin,
                         lambda hits: ", ".join(f"{r['metrics']['til_acc']:.1f}" for r in hits))
    chance = ", ".join(sorted({f"{chance_til(r):.1f}" for r in df["record"]}))
    return (f"final task-incr. Acc within {margin:g} points of chance ({chance}): "
            + ("; ".join(counts) if counts else "no row"))


def diverged(df: pd.DataFrame) -> list[str]:
    """One line naming the rows with a seed whose training loss became NaN or infinite (the records'
    ``nonfinite_loss``: their numbers are a diverged network's), or none when no record says so."""
    counts = seeds_where(df, lambda r: bool(r.get("nonfinite_loss")),
                         lambda hits: "from task " + ", ".join(str(r["nonfinite_loss"][0]) for r in hits))
    return ["training loss not finite (diverged): " + "; ".join(counts)] if counts else []


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


def probes_by_seed(paths: list[Path], design: str) -> dict[int, float]:
    """seed -> linear probe of ``design``, from ``bench/mini_designs.py`` files (each names its seed)."""
    out = {}
    for path in paths:
        try:
            doc = json.loads(path.read_text())
            seed, value = int(doc["seed"]), doc["designs"][design]["linear_probe"]
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"--probe {path}: no seed or linear probe for design {design!r} ({err}); "
                            "write it with python bench/mini_designs.py --seed S --out FILE") from None
        if seed in out:
            raise UserError(f"--probe {path}: a second probe for seed {seed}; pass one file per seed")
        out[seed] = value
    return out


def probe_mean(paths: list[Path], design: str) -> tuple[float, int]:
    values = probes_by_seed(paths, design)
    return float(np.mean(list(values.values()))), len(values)


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


def measures(df: pd.DataFrame, probe: float | None = None) -> dict[str, float]:
    """The requirements the records decide (all but the wall-clock), keyed as :data:`BOUNDS`, from seed means."""
    return _measures(seed_means(df, "acc"), seed_means(df, "til_acc"), reference_rows(df), probe)


def _measures(acc: dict, til: dict, leave_out: set[str], probe: float | None) -> dict[str, float]:
    """:func:`measures` from the rows' seed means of Acc and task-incremental Acc (:func:`seed_means`)."""
    for needed in ("joint", "simple_cil", "full_ft"):
        if needed not in acc:
            raise UserError(f"the records hold no {needed} row; the requirements compare against it")
    ranked = _ranked(acc, leave_out)
    spread = max(v[0] for v in ranked.values()) - min(v[0] for v in ranked.values())
    out = {"joint_minus_simple_cil": acc["joint"][0] - acc["simple_cil"][0]}
    if probe is not None:
        out["joint_minus_probe"] = acc["joint"][0] - probe
    out["spread_over_se"] = spread / max(v[1] for v in ranked.values())
    out["adapter_til_minus_full_ft"] = min(til[m][0] for m in ADAPTERS if m in til) - til["full_ft"][0]
    return out


def holds(key: str, value: float) -> bool:
    return bool(value <= BOUNDS[key] if OPS[key] == "<=" else value >= BOUNDS[key])


def met(values: pd.Series, key: str) -> int:
    """How many of ``values`` (one requirement's, over draws) meet its bound."""
    return int(values.map(lambda x: holds(key, x)).sum())


def requirements(df: pd.DataFrame, probe: float | None, results_dir: Path | None = None) -> list[dict]:
    wall = wall_minutes(df, results_dir)
    rows = [(NAMES["wall_min"], "wall_min", wall) if not np.isnan(wall) else
            ("suite wall-clock (minutes: jobs only; this recipe.json predates the selection's timing)", "wall_min",
             wall_minutes(df))]
    rows += [(NAMES[key], key, value) for key, value in measures(df, probe).items()]
    return [{"requirement": name, "value": round(value, 2), "bound": f"{OPS[key]} {BOUNDS[key]:g}",
             "holds": holds(key, value)} for name, key, value in rows]


def seed_draws(df: pd.DataFrame, k: int, probes: dict[int, float] | None = None) -> pd.DataFrame:
    """Every choice of ``k`` of the records' seeds, each row at the same seeds (as one suite run draws them): the
    requirements the records decide, recomputed from those seeds' records (and the mean of those seeds' probes),
    with the row whose standard error is the largest. One row per draw, in :func:`itertools.combinations` order.

    Raises:
        UserError: When a row lacks some seed, ``k`` is not between 2 and the number of seeds, or a seed has no
            probe.
    """
    seeds = sorted(int(s) for s in df["seed"].unique())
    for method, group in df.groupby("method", sort=False):
        if missing := sorted(set(seeds) - set(group["seed"])):
            raise UserError(f"{method} has no record at seed(s) {missing}; run them (run_suite.py --seeds) so "
                            "that every draw compares every row")
    if not 2 <= k <= len(seeds):
        raise UserError(f"--draws {k}: choose between 2 and the {len(seeds)} seeds the records hold")
    if probes is not None and (missing := sorted(set(seeds) - set(probes))):
        raise UserError(f"no probe for seed(s) {missing}; write each with python bench/mini_designs.py --seed S")
    draws = list(itertools.combinations(seeds, k))
    # one aggregate over every draw's records (each group's rows in the records' order, as seed_means sees them)
    pooled = pd.concat([df[df["seed"].isin(draw)].assign(draw=i) for i, draw in enumerate(draws)])
    stats = aggregate(pooled, ["draw", "method"], ["acc", "til_acc"])
    methods, leave_out, rows = df["method"].unique(), reference_rows(df), []
    for (_, group), draw in zip(stats.groupby("draw", sort=True), draws, strict=True):
        acc, til = _by_method(group, "acc", methods), _by_method(group, "til_acc", methods)
        values = _measures(acc, til, leave_out, mean_probe(probes, draw))
        rows.append({"seeds": draw, **values, "holds_all": all(holds(key, v) for key, v in values.items()),
                     "largest_se_row": largest_se_row(_ranked(acc, leave_out))})
    return pd.DataFrame(rows)


def draws_lines(df: pd.DataFrame, k: int, probes: dict[int, float] | None = None,
                suite_seeds: tuple[int, ...] | None = None) -> list[str]:
    """:func:`seed_draws` as a Markdown table (per requirement: how many draws meet it, the least, median and
    largest value, and the value at ``suite_seeds`` when given), then how many draws meet all, which row had the
    largest standard error, the same measures over all seeds, and :func:`near_chance` over all seeds."""
    draws = seed_draws(df, k, probes)
    seeds = sorted(int(s) for s in df["seed"].unique())
    at_suite = None
    if suite_seeds is not None:
        at_suite = draws[draws["seeds"].map(lambda s: s == tuple(sorted(suite_seeds)))]
        if at_suite.empty:
            raise UserError(f"--suite-seeds {','.join(map(str, suite_seeds))}: not {k} of the records' seeds {seeds}")
    keys = [key for key in BOUNDS if key in draws]
    extra = f" at seeds {', '.join(map(str, sorted(suite_seeds)))} |" if at_suite is not None else ""
    header = (f"| requirement ({k} of {len(seeds)} seeds: {len(draws)} draws) | draws meeting it | least | median | "
              f"largest |{extra} bound |")
    lines = [header, "|---|---:|---:|---:|---:|" + ("---:|" if extra else "") + "---|"]
    for key in keys:
        v = draws[key]
        ours = f" {at_suite[key].iloc[0]:.2f} |" if at_suite is not None else ""
        lines.append(f"| {NAMES[key]} | {met(v, key)} | {v.min():.2f} | {v.median():.2f} | {v.max():.2f} |{ours} "
                     f"{OPS[key]} {BOUNDS[key]:g} |")
    counts = draws["largest_se_row"].value_counts()
    everything = measures(df, mean_probe(probes, seeds))
    lines += ["", f"all of these requirements met: {int(draws['holds_all'].sum())} of {len(draws)} draws",
              "row with the largest standard error: " + ", ".join(f"{m} in {n}" for m, n in counts.items()),
              f"over all {len(seeds)} seeds ({', '.join(map(str, seeds))}; standard errors of {len(seeds)} seeds, "
              f"the bounds are set for {k}): " + "; ".join(f"{NAMES[key]} {everything[key]:.2f}" for key in keys),
              near_chance(df), *diverged(df)]
    return lines + ranking_lines(df, f"{len(seeds)}-seed")


def counts_lines(df: pd.DataFrame, counts: tuple[int, ...], probes: dict[int, float] | None = None) -> list[str]:
    """:func:`seed_draws` for each number of seeds per run in ``counts``, as a Markdown table with one column per
    number: per requirement the records decide, how many draws meet it (and the median value), then how many meet
    all of them at once. How many seeds a run needs before its verdict stops depending on which seeds it drew."""
    seeds = sorted(int(s) for s in df["seed"].unique())
    tables = {k: seed_draws(df, k, probes) for k in counts}
    keys = [key for key in BOUNDS if key in tables[counts[0]]]
    columns = [f"{k} seeds ({len(d)} draw{'s' * (len(d) > 1)})" for k, d in tables.items()]
    lines = ["| requirement | bound | " + " | ".join(columns) + " |",
             "|---|---|" + "---:|" * len(tables)]
    for key in keys:
        cells = [f"{met(d[key], key)} ({d[key].median():.2f})" for d in tables.values()]
        lines.append(f"| {NAMES[key]} | {OPS[key]} {BOUNDS[key]:g} | " + " | ".join(cells) + " |")
    all_met = [int(d["holds_all"].sum()) for d in tables.values()]
    lines.append("| all of these | | " + " | ".join(f"{n} ({100 * n / len(d):.0f}%)"
                                                   for n, d in zip(all_met, tables.values(), strict=True)) + " |")
    return [*lines, "", (f"each cell: the draws that meet the requirement (the median value over the draws); the "
            f"draws are every choice of that many of the records' {len(seeds)} seeds, so draws of one count share "
            "seeds and are subsamples of one set, not independent runs; the bounds are set for 3 seeds")]


SHORT = {"wall_min": "minutes", "joint_minus_simple_cil": "joint - SimpleCIL", "joint_minus_probe": "joint - probe",
         "spread_over_se": "spread / largest SE", "adapter_til_minus_full_ft": "adapters' - full_ft's task-incr."}


def read_manifest(path: Path) -> dict:
    """The candidates manifest (``docs/results/mini/candidates.json``) with paths resolved: each run's ``folder``
    (a sibling of the manifest's folder) and ``probes``, and the ``probed`` files (in the manifest's folder)."""
    try:
        doc = json.loads(Path(path).read_text())
        runs = [{**run, "folder": Path(path).parent.parent / run["folder"],
                 "probes": [Path(path).parent / p for p in run["probes"]]} for run in doc["runs"]]
        return {"runs": runs, "probed": [Path(path).parent / p for p in doc["probed"]]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"--summary {path}: not a candidates manifest ({err}); see docs/results/mini/candidates.json"
                        ) from None


def summary_lines(manifest: Path) -> list[str]:
    """Every candidate run of the manifest against the five requirements (3-seed means, as each run's own table:
    :func:`requirements`), with the CPU its records name, then every probed design's probe-stage numbers
    (``bench/mini_designs.py``, seed 1993) and the runs that ran it."""
    doc = read_manifest(manifest)
    keys = list(BOUNDS)
    lines = ["| run | section | stream and backbone | CPU | " + " | ".join(SHORT[k] for k in keys) + " | holds |",
             "|---|---:|---|---|" + "---:|" * len(keys) + "---:|"]
    for run in doc["runs"]:
        df = done(load_folders([run["folder"]])[0])
        rows = requirements(df, probe_mean(run["probes"], run["design"])[0], run["folder"])
        cpus = sorted({r["provenance"].get("cpu") or "not recorded" for r in df["record"]})
        cells = [f"{r['value']:.2f}" + ("" if r["holds"] else " (no)") for r in rows]
        lines.append(f"| {run['folder'].name} | {run['section']} | {run['what']} | {', '.join(cpus)} | "
                     + " | ".join(cells) + f" | {sum(r['holds'] for r in rows)} of {len(rows)} |")
    lines += ["", "bounds: " + "; ".join(f"{SHORT[k]} {OPS[k]} {BOUNDS[k]:g}" for k in keys)
              + "; (no): the bound is missed; every value from the run's records (3 seeds) and its design's probes",
              "", ("| design | pretraining classes | stream | SimpleCIL | linear probe | joint (2 epochs) | joint - "
                   "SimpleCIL | joint - probe | run as |"), "|---|---|---|---:|---:|---:|---:|---:|---|"]
    seen = set()
    for path in doc["probed"]:
        for name, d in json.loads(path.read_text())["designs"].items():
            if name in seen:
                continue
            seen.add(name)
            runs = ", ".join(r["folder"].name for r in doc["runs"] if r["design"] == name) or "-"
            lines.append(f"| {name} | {', '.join(map(str, d['pretrain_classes']))} | {d['style']} | "
                         f"{d['simple_cil']:.2f} | {d['linear_probe']:.2f} | {d['joint']:.2f} | "
                         f"{d['joint_minus_simple_cil']:.2f} | {d['joint_minus_linear_probe']:.2f} | {runs} |")
    return [*lines, "", (f"{len(seen)} designs probed at seed 1993 (bench/mini_designs.py: the frozen backbone's "
                         "SimpleCIL and linear probe, and a 2-epoch joint fine-tuning, on the stream's images), "
                         f"{len({r['design'] for r in doc['runs']})} of them run as suites")]


def parse_draws(text: str) -> tuple[int, ...]:
    """``--draws K`` or ``K-L``: the numbers of seeds per draw."""
    try:
        low, _, high = text.partition("-")
        counts = tuple(range(int(low), int(high or low) + 1))
    except ValueError:
        raise UserError(f"--draws {text}: pass a number of seeds K or a range K-L, e.g. 3 or 3-10") from None
    if not counts:
        raise UserError(f"--draws {text}: the range is empty; pass K-L with K <= L")
    return counts


def ranking_lines(df: pd.DataFrame, means: str = "seed") -> list[str]:
    """The rows by seed-mean Acc, and the Kendall rank correlation of that order with the paper's."""
    acc = {m: v[0] for m, v in seed_means(df, "acc").items()}
    tau, p, common = rank_agreement(acc)
    order = sorted(acc, key=acc.get, reverse=True)
    return [f"ranking ({means}-mean Acc): " + " > ".join(f"{m} {acc[m]:.2f}" for m in order),
            (f"Kendall tau vs the paper's ImageNet-R N=10 Acc over {len(common)} methods ({', '.join(common)}): "
            f"{tau:.3f} (p = {p:.3f}); a diagnostic, not a target")]


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise UserError(f"--suite-seeds {text}: pass comma-separated integers, e.g. 1993,1994,1995") from None


def requirement_lines(df: pd.DataFrame, args: argparse.Namespace) -> list[str]:
    probe, n_probe = probe_mean(args.probe, args.design) if args.probe else (None, 0)
    rows = requirements(df, probe, args.results_dir[0])
    lines = ["| requirement | measured | bound | holds |", "|---|---:|---|---|"]
    lines += [f"| {r['requirement']} | {r['value']:.2f} | {r['bound']} | {'yes' if r['holds'] else 'no'} |"
              for r in rows]
    if probe is not None:
        lines += ["", f"linear probe: {probe:.2f} (mean of {n_probe} seed(s), design {args.design})"]
    til = {m: v[0] for m, v in seed_means(df, "til_acc").items()}
    lines.append("task-incr. Acc (seed means): full_ft " + f"{til['full_ft']:.2f}; adapters: "
                 + ", ".join(f"{m} {til[m]:.2f}" for m in sorted((m for m in ADAPTERS if m in til), key=til.get)))
    return [*lines, largest_se_seeds(df), near_chance(df), *diverged(df), *ranking_lines(df)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.mini", description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", type=Path, action="append", default=[],
                    help="results folder holding records/ (repeat only with --draws, to pool the seeds of several "
                         "runs of one suite)")
    ap.add_argument("--probe", type=Path, action="append", default=[], help="bench/mini_designs.py JSON (per seed)")
    ap.add_argument("--design", default="held_out_mixed", help="the probe's design that the suite runs (the mini suite's)")
    ap.add_argument("--draws", metavar="K[-L]",
                    help="instead of the requirements, recompute those the records decide for every choice of K of "
                         "the records' seeds (how sure one K-seed run's verdict is); with a range K-L, one column per "
                         "number of seeds: how many draws meet each")
    ap.add_argument("--suite-seeds", help="with --draws: the suite's own seeds (comma-separated), shown beside")
    ap.add_argument("--tasks", action="store_true",
                    help="instead of the requirements, where each row's errors go: within tasks or between them "
                         "(the records' task_confusion)")
    ap.add_argument("--readme", type=Path, help="also write the output between <!-- KIND:NAME:start --> and "
                                                "<!-- KIND:NAME:end --> of this Markdown file (KIND: requirements; "
                                                "draws with --draws K; counts with --draws K-L; tasks with --tasks)")
    ap.add_argument("--summary", type=Path, metavar="MANIFEST",
                    help="instead, every candidate run of this manifest (docs/results/mini/candidates.json) against "
                         "the requirements, and every probed design (KIND of --readme: summary)")
    ap.add_argument("--name", help="the marker's NAME (default: the first results folder's name; with --summary: "
                                   "the manifest's folder's)")
    args = ap.parse_args(argv)
    try:
        if args.summary is not None:
            if args.results_dir or args.draws or args.tasks or args.probe:
                raise UserError("--summary reads its runs and probes from the manifest; pass it alone (with "
                                "--readme, --name)")
            lines = summary_lines(args.summary)
            print("\n".join(lines))
            if args.readme is not None:
                replace_block(args.readme, "summary", args.name or args.summary.parent.name, "\n".join(lines))
            return 0
        if not args.results_dir:
            raise UserError("pass --results-dir (a suite's results folder) or --summary MANIFEST")
        if len(args.results_dir) > 1 and args.draws is None:
            raise UserError("pass one --results-dir: the wall-clock is one run's (several pool seeds only with "
                            "--draws K)")
        if args.suite_seeds is not None and args.draws is None:
            raise UserError("--suite-seeds goes with --draws K")
        suite = parse_seeds(args.suite_seeds) if args.suite_seeds is not None else None
        counts = parse_draws(args.draws) if args.draws is not None else None
        if counts is not None and len(counts) > 1 and suite is not None:
            raise UserError("--suite-seeds goes with one number of seeds (--draws K), not a range")
        df = done(load_folders(args.results_dir)[0])
        if df.empty:
            raise UserError(f"--results-dir {', '.join(map(str, args.results_dir))}: no done records")
        if args.tasks:
            if counts is not None:
                raise UserError("--tasks and --draws are two views: pass one")
            lines = task_lines(df)
        elif counts is not None:
            probes = probes_by_seed(args.probe, args.design) if args.probe else None
            lines = (draws_lines(df, counts[0], probes, suite) if len(counts) == 1 else
                     counts_lines(df, counts, probes))
        else:
            lines = requirement_lines(df, args)
    except (UserError, FileNotFoundError) as err:  # FileNotFoundError: a folder without records/
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    if args.readme is not None:
        kind = ("tasks" if args.tasks else "requirements" if counts is None else "draws" if len(counts) == 1
                else "counts")
        replace_block(args.readme, kind, args.name or args.results_dir[0].name, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
