"""Tests of ``analysis``: records -> frame, LaTeX tables (golden file, math, bold, missing), figures, report.

Fixture records come from ``tests/fixtures/records/make.py`` (3 methods x 2 benchmarks x 3 seeds, one missing cell,
one failed record with absurd numbers); the paper/extended row blocks use a second, 5-seed fixture (:func:`_rows`)
with a registered "as released" twin of L2P. Golden files: every entry of :data:`GOLDEN` is compared with
``tests/golden/<name>``; regenerate them with ``UPDATE_GOLDEN=1 python -m pytest tests/test_analysis.py -k golden``
(a new table is one more entry).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis import figures, html, stats, tables
from analysis.__main__ import main as cli_main
from analysis.records import (
    aggregate,
    benchmark_order,
    display_name,
    done,
    load_records,
    order_methods,
    paper_key,
    paper_rows,
    pooled_long,
    record_row,
    records_frame,
)
from analysis.report import make_report
from core.registry import Entry
from methods.base import METHODS, MethodInfo

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = ROOT / "tests" / "golden"
REFERENCE_CSV = ROOT / "results" / "reference" / "paper_results.csv"


def _load_make():
    spec = importlib.util.spec_from_file_location("fixture_make", ROOT / "tests" / "fixtures" / "records" / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make = _load_make()


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    return make.write_records(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def df(results_dir) -> pd.DataFrame:
    return load_records(results_dir)


def _frame(records: list[dict]) -> pd.DataFrame:
    """A frame from in-memory records (same path as load_records, without files)."""
    return records_frame([record_row(rec, Path(rec["job_id"] + ".json")) for rec in records])


def _shown(label: str) -> str:
    """A row label as the LaTeX tables print it: its method's display name (e.g. SD-LoRA), else the label."""
    method = max((m for m in METHODS.names() if label.startswith(m) and display_name(m)), key=len, default=None)
    return (label if method is None else display_name(method) + label[len(method):]).replace("_", r"\_")


def _row_line(latex: str, label: str) -> str:
    lines = [ln for ln in latex.splitlines() if ln.startswith(_shown(label) + " &")]
    assert len(lines) == 1, latex
    return lines[0]


# --- records ---------------------------------------------------------------------------------------------------


def test_load_records_one_row_per_file_failed_kept_but_not_done(df):
    assert len(df) == 16
    assert (df["status"] == "failed").sum() == 1
    assert len(done(df)) == 15
    keys = ["method", "benchmark_name", "n_tasks", "benchmark", "backbone", "seed"]
    assert list(df.index) == list(df.sort_values(keys, kind="mergesort").index)
    assert df.loc[0, "record"]["schema"] == 1
    row = df[df["job_id"] == "sd_lora__imagenet_r_5__s1995"].iloc[0]
    assert (row["benchmark_name"], row["n_tasks"], row["acc"]) == ("imagenet_r", 5, 80.0)


def test_make_report_needs_a_done_record(tmp_path):
    make.write_records(tmp_path, [make.make_record("sd_lora", "imagenet_r_5", 1996, status="failed")])
    with pytest.raises(ValueError, match="no record with status 'done'"):
        make_report(tmp_path)
    assert tables.main_table(load_records(tmp_path)).count("\n") > 5  # an empty table still renders


def test_load_records_rejects_unknown_schema(tmp_path):
    rec = make.make_record("sd_lora", "imagenet_r_5", 1993)
    rec["schema"] = 99  # schema 1 and 2 are readable (runner/record.py)
    make.write_records(tmp_path, [rec])
    with pytest.raises(ValueError, match="schema"):
        load_records(tmp_path)


def test_pooled_long_has_one_row_per_task_and_ignores_failed(df):
    long = pooled_long(df)
    assert list(long.columns) == ["method", "label", "benchmark", "seed", "task", "pooled_acc"]
    assert len(long) == 3 * (5 * 3 + 10 * 2)  # seeds x (imagenet_r_5 runs + cifar100_10 runs)
    assert 1996 not in set(long["seed"])
    first = long[(long["method"] == "sd_lora") & (long["benchmark"] == "imagenet_r_5") & (long["seed"] == 1993)]
    assert list(first["task"]) == [1, 2, 3, 4, 5] and first["pooled_acc"].iloc[-1] == 78.5


def test_method_order_is_fixed_with_joint_last():
    assert order_methods(["joint", "zeta", "sd_lora", "l2p", "alpha", "full_ft"]) == [
        "full_ft",
        "l2p",
        "sd_lora",
        "alpha",
        "zeta",
        "joint",
    ]


def test_aggregate_formula_by_hand():
    frame = pd.DataFrame({"m": ["a", "a", "a", "b", "c"], "v": [78.5, 79.0, 80.0, 5.0, float("nan")]})
    out = aggregate(frame, ["m"], ["v"]).set_index("m")
    mean = (78.5 + 79.0 + 80.0) / 3
    sd = math.sqrt(((78.5 - mean) ** 2 + (79.0 - mean) ** 2 + (80.0 - mean) ** 2) / 2)
    assert out.loc["a", "v_mean"] == pytest.approx(mean) and out.loc["a", "v_sd"] == pytest.approx(sd)
    assert out.loc["a", "v_se"] == pytest.approx(sd / math.sqrt(3)) and out.loc["a", "v_n"] == 3
    # one run gives no spread; a NaN value is not a run
    assert math.isnan(out.loc["b", "v_se"]) and out.loc["b", "v_n"] == 1
    assert math.isnan(out.loc["c", "v_mean"]) and out.loc["c", "v_n"] == 0
    whole = aggregate(frame.iloc[:3], [], ["v"])
    assert list(whole.columns) == ["v_mean", "v_sd", "v_se", "v_n"] and whole["v_mean"].iloc[0] == pytest.approx(mean)


# --- main table --------------------------------------------------------------------------------------------------


def test_main_table_cell_math_best_bold_joint_missing(df):
    latex = tables.main_table(df, stat="se")
    # sd_lora on imagenet_r_5: acc 78.5, 79.0, 80.0 -> mean 79.17, se 0.44; it beats inflora, so it is bold.
    sd = _row_line(latex, "sd_lora")
    assert r"\textbf{79.17 (0.44)}" in sd and sd.endswith("& 3 \\\\")
    # inflora never ran on cifar100_10 (after imagenet_r_5: the paper's order): its last two cells are missing,
    # not invented.
    assert _row_line(latex, "inflora").startswith(r"InfLoRA & 75.17 (0.44) & 79.17 (0.44) & -- & -- & 3")
    # joint has the highest numbers but is a reference row: below a midrule, never bold.
    joint = _row_line(latex, "joint")
    assert r"\textbf" not in joint and "88.17 (0.44)" in joint
    lines = latex.splitlines()
    assert lines[lines.index(joint) - 2 : lines.index(joint)] == [r"\midrule", rf"\multicolumn{{6}}{{l}}{{{EXTENDED}}} \\"]
    # cifar100_10 has sd_lora as its only ranked method: nothing to beat, so nothing is bold there.
    assert r"\textbf{87.67" not in latex
    assert "99.99" not in latex  # the failed record


def test_benchmarks_in_the_papers_order_then_the_others_by_name():
    """Columns and sections follow the paper's tables (ImageNet-R N=5/10/20, ImageNet-A, DomainNet, then its
    appendix's CIFAR-100 and CUB-200), read from the committed reference CSV; other benchmarks come after."""
    shuffled = [("split_fmnist", "split_fmnist", 5), *reversed(SEVEN), ("synthetic_3", "synthetic", 3)]
    d = _frame([_rec("sd_lora", label, 1993, 70.0, 80.0, n_tasks=n, bench_name=name) for label, name, n in shuffled])
    assert benchmark_order(d) == [label for label, _, _ in SEVEN] + ["split_fmnist", "synthetic_3"]


def test_ablations_are_never_marked_in_the_tables_of_every_method():
    """An ablation of SD-LoRA scoring above every method is not the best method: main.tex, extended.tex and
    report.html mark the best compared method, the comparisons never take the ablation as best (it is still
    compared), and Table 4 still ranks it against SD-LoRA."""
    recs = [_rec(m, "imagenet_r_10", seed, acc + off, acc + 10 + off, n_tasks=10, bench_name="imagenet_r")
            for m, acc in (("inflora", 60.0), ("sd_lora", 70.0), ("sd_lora_no_rescale", 75.0))
            for seed, off in zip(SEEDS5[:3], OFFSETS5)]
    d = _frame(recs)
    for latex in (tables.main_table(d), tables.extended_table(d)):
        assert r"\textbf" not in _row_line(latex, "sd_lora_no_rescale")
        assert r"\textbf{70." in _row_line(latex, "sd_lora") and tables.ABLATION_TEXT in latex
    assert tables.ABLATION_TEXT not in tables.main_table(d[d["method"] != "sd_lora_no_rescale"])
    assert r"\textbf{75." in _row_line(tables.paper_table(d, 4), "sd_lora_no_rescale")
    page = html.results_table(d, "t", "sd").split("<tbody>")[1]
    rows = {row.split("</td>")[0].rsplit(">", 1)[-1]: row for row in page.split("<tr>")[1:]}
    assert ' best"' in rows["sd_lora"] and ' best"' not in rows["sd_lora_no_rescale"]
    comp = stats.comparisons(d)
    assert set(comp.loc[comp["role"].str.contains("best"), "versus"]) == {"sd_lora"}
    assert "sd_lora_no_rescale" in set(comp["label"])
    assert "sd_lora_no_rescale" not in stats.rank_table(d).columns


def test_diverged_seeds_are_marked_in_every_seeds_column_and_explained_once(twin):
    """A record whose training loss became NaN (``nonfinite_loss``) reads as a result unless the tables say so: the
    row's Seeds cell counts its diverged seeds, the caption explains the mark; rows and tables without one are
    unchanged."""
    from analysis.records import seed_count

    recs = [_rec(m, "imagenet_r_10", seed, 60.0 + off, 70.0 + off, n_tasks=10, bench_name="imagenet_r")
            for m in ("sd_lora", "full_ft") for seed, off in zip(SEEDS5[:3], OFFSETS5)]
    clean = _frame(recs)
    recs[3]["nonfinite_loss"], recs[5]["nonfinite_loss"] = [4, 1], [2, 3]  # full_ft at two of its three seeds
    d = _frame(recs)
    for make_table in (tables.main_table, tables.extended_table, lambda x: tables.paper_table(x, 2)):
        latex, plain = make_table(d), make_table(clean)
        assert _row_line(latex, "full_ft").endswith(r"& 3 (2$^\dagger$) \\")
        assert _row_line(latex, "sd_lora").endswith(r"& 3 \\")
        assert latex.count(tables.DIVERGED_TEXT) == 1 and tables.DIVERGED_TEXT not in plain
        assert latex.replace(" (2$^\\dagger$)", "").replace(" " + tables.DIVERGED_TEXT, "") == plain
    assert seed_count(d, "full_ft") == "3 (2 diverged)" and seed_count(d, "sd_lora") == "3"


def test_main_table_single_seed_omits_se_and_escapes():
    d = _frame([make.make_record("my_method", "imagenet_r_5", 1994), make.make_record("sd_lora", "imagenet_r_5", 1994)])
    latex = tables.main_table(d, stat="se")
    assert _row_line(latex, "my_method") == r"my\_method & 70.00 & 72.00 & 1 \\"
    assert r"\textbf" not in latex  # my_method is an extended row, and sd_lora alone has nothing to beat
    escaped = tables.render(pd.DataFrame([["1"]], index=["a_b&c%"], columns=["x_y"]), "c", "l", escape_header=True)
    assert r"a\_b\&c\% & 1" in escaped and r"x\_y" in escaped


def test_tables_are_deterministic(df, results_dir, tmp_path):
    shutil.copytree(results_dir / "records", tmp_path / "records")
    again = load_records(tmp_path)
    assert tables.main_table(again, stat="se") == tables.main_table(df, stat="se")
    assert tables.paper_table(again, 2, stat="se") == tables.paper_table(df, 2, stat="se")


# --- paper rows and the extended block --------------------------------------------------------------------------

EXTENDED = tables.EXTENDED_HEADER
TWIN = "fixture_l2p_released"
SEEDS5 = (1993, 1994, 1995, 1996, 1997)
OFFSETS5 = (-0.5, 0.0, 1.0, 0.3, -0.2)
# Final accuracy per (method, benchmark) before the seed offsets; AAA = Acc + 4. simple_cil beats every paper method
# on ImageNet-R and hide_prompt on CIFAR-100, where the paper does not report it (Table 6).
ROWS = {
    "l2p": (73.0, 83.0),
    TWIN: (74.5, 84.0),
    "hide_prompt": (74.0, 86.0),
    "sd_lora": (79.0, 85.0),
    "simple_cil": (81.0, 80.0),
    "seq_lora": (70.0, 75.0),
    "joint": (88.0, 93.0),
}


@contextlib.contextmanager
def _registered_twin():
    """Register ``TWIN``, L2P "as released" (``released_of="l2p"``, the same ``paper_key``), for the block."""
    l2p = METHODS.get("l2p")
    info = MethodInfo(display="L2P (as released)", released_of="l2p", paper_key=l2p.info.paper_key)
    METHODS._entries[TWIN] = Entry(TWIN, l2p.obj, l2p.config_cls, "fixture twin", info)
    try:
        yield TWIN
    finally:
        METHODS._entries.pop(TWIN, None)


@pytest.fixture
def twin():
    with _registered_twin() as name:
        yield name


def _rec(method: str, benchmark: str, seed: int, acc: float, aaa: float, n_tasks: int = 5,
         bench_name: str | None = None) -> dict:
    """A fixture record with these final numbers (task_mean_acc = acc: every task's test set the same size)."""
    rec = make.make_record(method, benchmark, seed, n_tasks=n_tasks)
    rec["benchmark_name"] = bench_name or rec["benchmark_name"]
    rec["metrics"] |= {"acc": acc, "aaa": aaa, "task_mean_acc": acc}
    return rec


def _rows() -> pd.DataFrame:
    recs = []
    for method, bases in ROWS.items():
        for bench, base in zip(("imagenet_r_5", "cifar100_10"), bases):
            for seed, off in zip(SEEDS5, OFFSETS5):
                recs.append(_rec(method, bench, seed, base + off, base + off + 4, n_tasks=5 if bench[-1] == "5" else 10))
    return _frame(recs)


def _body(latex: str) -> list[str]:
    """Row names of the body, with ``EXTENDED`` where the extended block starts."""
    lines = latex.splitlines()
    body = lines[lines.index(r"\midrule", lines.index(r"\toprule")) + 1 : lines.index(r"\bottomrule")]
    return [EXTENDED if EXTENDED in ln else ln.split(" &")[0] for ln in body if ln != r"\midrule"]


GOLDEN = {
    # name in tests/golden -> the table it holds
    "main_table.tex": lambda: tables.main_table(_frame(make.build_records()), stat="se"),
    "main_rows_sd.tex": lambda: tables.main_table(_rows(), stat="sd"),
    "table6_rows_se.tex": lambda: tables.paper_table(_rows(), 6, stat="se"),
    "reference_rows_sd.tex": lambda: tables.reference_table(_rows(), REFERENCE_CSV),
    "table5_efficiency_se.tex": lambda: tables.paper_table(_frame(_table5_records()), 5, stat="se"),
}


def _table5_records() -> list[dict]:
    recs = [make.make_record(m, "imagenet_r_20", s, n_tasks=20) for m in ("inflora", "sd_lora") for s in (1993, 1994)]
    for rec in recs:
        rec["benchmark_name"] = "imagenet_r"
    return recs


def test_latex_rows_are_named_as_the_paper_names_them():
    d = pd.DataFrame({"label": ["sd_lora", "l2p_released", "ewc", "sd_lora (dino)", "my_plugin"],
                      "method": ["sd_lora", "l2p_released", "avalanche:EWC", "sd_lora", "my_plugin"]})
    assert tables.row_names(d, list(d["label"])) == ["SD-LoRA", "L2P (as released)", "ewc", "SD-LoRA (dino)",
                                                     "my_plugin"]


def test_table5_ranks_the_paper_rows_and_sets_the_others_below_the_rule():
    """SimpleCIL has no Table 5 row in the paper: it goes under Extended, unmarked, however low its cost."""
    recs = _table5_records()
    recs += [make.make_record("simple_cil", "imagenet_r_20", s, n_tasks=20) for s in (1993, 1994)]
    for rec in recs[-2:]:
        rec["benchmark_name"] = "imagenet_r"
        rec["efficiency"] = {**(rec.get("efficiency") or {}), "learnable_params_excl_head": 0, "gflops": 1.0}
    latex = tables.paper_table(_frame(recs), 5, stat="sd")
    assert _body(latex) == ["InfLoRA", "SD-LoRA", EXTENDED, "SimpleCIL"]
    simple = next(ln for ln in latex.splitlines() if ln.startswith("SimpleCIL &"))
    assert r"\textbf" not in simple and r"\textbf" in latex


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_table_matches_golden(name, twin):
    latex = GOLDEN[name]()
    golden = GOLDEN_DIR / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(latex, encoding="utf-8")
    assert latex == golden.read_text(encoding="utf-8")


def test_golden_files_name_the_statistic_the_extended_block_and_the_marks():
    for name in GOLDEN:
        text = (GOLDEN_DIR / name).read_text(encoding="utf-8")
        stat = "standard error, sd/$\\sqrt{n}$" if "_se" in name or name == "main_table.tex" else "standard deviation"
        assert f"ours: mean ({stat}) over seeds" in text if name.startswith("reference") else f"mean ({stat}" in text
        if name.startswith("reference"):
            assert "No marks" in text and r"\textbf" not in text and r"\underline" not in text
        elif name.startswith("table5"):  # the efficiency comparison: ours beside the paper's Table 5
            assert "Learnable w/o head (M)" in text and "paper" in text.lower()
        else:
            assert EXTENDED in text and "Bold: best mean of the paper's methods" in text and r"\textbf{" in text


def test_paper_rows_bold_and_extended_block(twin):
    latex = tables.main_table(_rows(), stat="sd")
    # The paper's rows in the paper's order, then the extended block: the twin right after its method's position,
    # SimpleCIL and sequential LoRA in registry order, joint last.
    assert _body(latex) == [
        "L2P", "HiDe-Prompt", "SD-LoRA", EXTENDED, "L2P (as released)", "Sequential LoRA", "SimpleCIL",
        "Joint training (upper bound)",
    ]
    # simple_cil has the best ImageNet-R numbers (81.12 > 79.12) but is not the paper's: sd_lora is bold.
    assert r"\textbf" not in _row_line(latex, "simple_cil") and r"\textbf" not in _row_line(latex, "l2p (as released)")
    assert _row_line(latex, "sd_lora").count(r"\textbf") == 2  # Acc and AAA on ImageNet-R (cifar100: hide_prompt)
    assert _row_line(latex, "hide_prompt").startswith(r"HiDe-Prompt & 74.12 (0.57) & 78.12 (0.57) & \textbf{86.12")
    # Table 6: the paper leaves HiDe-Prompt out, so it moves below the rule and sd_lora is the best there.
    t6 = tables.paper_table(_rows(), 6, stat="sd")
    assert _body(t6) == ["L2P", "SD-LoRA", EXTENDED, "L2P (as released)", "HiDe-Prompt", "Sequential LoRA",
                         "SimpleCIL", "Joint training (upper bound)"]
    assert _row_line(t6, "sd_lora").startswith(r"SD-LoRA & \textbf{85.12") and r"\textbf" not in _row_line(t6, "hide_prompt")
    # Table 2 reports HiDe-Prompt: a paper row there. Without a reference CSV every paper key counts.
    assert _body(tables.paper_table(_rows(), 2, stat="sd"))[:3] == ["L2P", "HiDe-Prompt", "SD-LoRA"]
    assert _body(tables.paper_table(_rows(), 6, stat="sd", reference_csv=None))[:3] == ["L2P", "HiDe-Prompt", "SD-LoRA"]


def test_paper_rows_follow_the_paper_order_of_every_table():
    ref = pd.read_csv(REFERENCE_CSV, comment="#")
    for table in (2, 3, 4, 6):
        keys = list(dict.fromkeys(ref.loc[ref["table"] == table, "method"]))
        assert [paper_key(m) for m in paper_rows(METHODS.names(), set(keys))] == keys, table
    assert paper_key("joint") is None and paper_key("simple_cil") is None and paper_key("seq_lora") is None


def test_released_twin_is_never_a_paper_row_and_follows_its_method_in_the_reference_table(twin):
    assert paper_key(twin) is None and paper_rows(["l2p", twin]) == ["l2p"]
    lines = tables.reference_table(_rows(), REFERENCE_CSV).splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith(r"T2 imagenet\_r N=5 & L2P &"))
    # Paper L2P 73.04 (0.71); ours 73.12, the twin 74.62, both against the paper's L2P row.
    assert lines[i].endswith(r"& Acc & 73.04 (0.71) & 73.12 (0.57) & +0.08 & yes & 5 \\")
    assert lines[i + 2].startswith(r"T2 imagenet\_r N=5 & L2P (as released) & Acc & 73.04 (0.71) & 74.62 (0.57) & +1.58 & yes")


def test_sd_and_se_by_hand_for_five_seeds(twin):
    values = [79.0 + off for off in OFFSETS5]  # sd_lora on imagenet_r_5: 78.5, 79.0, 80.0, 79.3, 78.8
    mean, sd = statistics.mean(values), statistics.stdev(values)
    se = sd / math.sqrt(5)
    assert (round(mean, 2), round(sd, 2), round(se, 2)) == (79.12, 0.57, 0.26)
    for stat, spread in (("sd", sd), ("se", se)):
        main = tables.main_table(_rows(), stat=stat)
        assert rf"\textbf{{{mean:.2f} ({spread:.2f})}}" in _row_line(main, "sd_lora"), stat
        assert f"mean ({tables.STAT_TEXT[stat]}) over seeds" in main
        t2 = tables.paper_table(_rows(), 2, stat=stat)
        assert _row_line(t2, "sd_lora").startswith(rf"SD-LoRA & \textbf{{{mean:.2f} ({spread:.2f})}} / ")
        # beside the paper's standard deviation, ours is one too, whichever statistic the other tables show
        assert f"& 79.15 (0.20) & {mean:.2f} ({sd:.2f}) &" in tables.reference_table(_rows(), REFERENCE_CSV)


def test_extended_table_shows_pooled_and_per_task_accuracy():
    # Two tasks with 100 and 300 test samples: 90% and 60% correct after the last task.
    pooled, task_mean = (90 + 0.6 * 300) / 400 * 100, (90.0 + 60.0) / 2
    recs = []
    for seed in (1993, 1994):
        rec = _rec("sd_lora", "unbalanced_2", seed, pooled, 80.0, n_tasks=2)
        rec["acc_matrix"] = [[95.0], [90.0, 60.0]]
        rec["metrics"]["task_mean_acc"] = statistics.mean(rec["acc_matrix"][-1])  # as runner/metrics.py writes it
        recs.append(rec)
    recs.append(_rec("simple_cil", "unbalanced_2", 1993, 99.0, 99.0, n_tasks=2))
    latex = tables.extended_table(_frame(recs), stat="sd")
    assert " & Acc & Acc (task mean) & AAA & Seeds \\" in latex
    assert _row_line(latex, "sd_lora") == rf"SD-LoRA & {pooled:.2f} (0.00) & {task_mean:.2f} (0.00) & 80.00 (0.00) & 2 \\"
    assert (pooled, task_mean) == (67.5, 75.0) and EXTENDED in latex and r"\textbf" not in latex
    assert "pooled accuracy after the last task" in latex and "mean over tasks" in latex


# --- paper tables ----------------------------------------------------------------------------------------------


def test_paper_table_2_and_6_layouts(df):
    t2 = tables.paper_table(df, 2, stat="se")
    assert "N=5 & N=10 & N=20 & Seeds" in t2 and EXTENDED in t2
    assert _row_line(t2, "sd_lora") == r"SD-LoRA & \textbf{79.17 (0.44)} / \textbf{85.17 (0.44)} & -- & -- & 3 \\"
    assert r"\textbf" not in _row_line(t2, "joint")
    t6 = tables.paper_table(df, 6, stat="se")
    assert _row_line(t6, "sd_lora").startswith(r"SD-LoRA & 87.67 (0.44) / 92.17 (0.44) & -- &")
    assert tables.paper_table(df, 3, stat="se") is None  # no imagenet_a or domainnet run
    with pytest.raises(ValueError, match="valid ids"):
        tables.paper_table(df, 7, stat="se")


def test_paper_table_4_needs_an_ablation_and_keeps_paper_rows(df):
    assert tables.paper_table(df, 4, stat="se") is None  # sd_lora alone is not an ablation table
    recs = [make.make_record("sd_lora_single", "imagenet_r_5", s) for s in (1993, 1994)]
    recs += [make.make_record("sd_lora", "imagenet_r_5", s) for s in (1993, 1994)]
    t4 = tables.paper_table(_frame(recs), 4, stat="se")
    body = [ln.split(" &")[0] for ln in t4.splitlines() if ln.startswith("SD-LoRA")]
    assert body == ["SD-LoRA, first direction fixed", "SD-LoRA, one decoupled LoRA", "SD-LoRA, old magnitudes fixed", "SD-LoRA"]
    assert _row_line(t4, "sd_lora_fixed_first") == r"SD-LoRA, first direction fixed & -- & -- & -- \\"
    assert _row_line(t4, "sd_lora").startswith(r"SD-LoRA & \textbf{78.75 (0.25)} / \textbf{84.75 (0.25)} & --")


def test_paper_table_5_efficiency():
    t5 = tables.paper_table(_frame(_table5_records()), 5, stat="se")
    assert "GFLOPs} & \\multicolumn{2}{c}{Learnable w/o head (M)} & \\multicolumn{2}{c}{Stored features (M)}" in t5
    # ours (learnable without the head: 370,000 - 1,000) beside the paper's (results/reference/paper_efficiency.csv)
    assert _row_line(t5, "inflora") == r"InfLoRA & 35.12 & 35.12 & 0.37 & 0.37 & 0.10 & 0.10 & 2 \\"
    assert _row_line(t5, "sd_lora") == r"SD-LoRA & 35.12 & 35.12 & 0.37 & 0.37 & \textbf{0.00} & 0.00 & 2 \\"


# --- reference table ---------------------------------------------------------------------------------------------


def test_reference_table_compares_with_paper(df):
    lines = tables.reference_table(df, REFERENCE_CSV).splitlines()
    rows = [ln for ln in lines if ln.startswith("T") and "&" in ln]
    assert len(rows) == 3  # inflora and sd_lora on ImageNet-R N=5, sd_lora on CIFAR-100; joint has no paper row
    i = lines.index(next(r for r in rows if r.startswith(r"T2 imagenet\_r N=5 & SD-LoRA")))
    # Acc: 79.17 vs 79.15 (0.20) -> +0.02, within 0.20 + 1; AAA: 85.17 vs 83.01 (0.42) -> +2.16, outside 1.42.
    # ours: standard deviations (0.44 standard error x sqrt 3), as the paper's +-
    assert lines[i].endswith("& Acc & 79.15 (0.20) & 79.17 (0.76) & +0.02 & yes & 3 \\\\")
    assert lines[i + 1] == r" &  & AAA & 83.01 (0.42) & 85.17 (0.76) & +2.16 & no & 3 \\"


def test_reference_csv_names_the_papers_sd_and_older_files_still_read(df, tmp_path):
    text = REFERENCE_CSV.read_text()
    assert ",acc,acc_sd,aaa,aaa_sd," in text  # the paper's +- are standard deviations (SD-Lora-CL#14)
    old = tmp_path / "old.csv"
    old.write_text(text.replace("acc_sd", "acc_se").replace("aaa_sd", "aaa_se"))
    assert tables.reference_table(df, old) == tables.reference_table(df, REFERENCE_CSV)


def test_reference_table_maps_ablation_names_and_none_without_match(tmp_path):
    recs = [make.make_record("sd_lora_no_rescale", "imagenet_r_5", 1994)]
    latex = tables.reference_table(_frame(recs), REFERENCE_CSV)
    # Paper: ablation_fixed_old_magnitudes, 78.28 (0.59); ours is one seed of 70.00 (no se).
    assert r"T4 imagenet\_r N=5 & SD-LoRA, old magnitudes fixed & Acc & 78.28 (0.59) & 70.00 & -8.28 & no & 1" in latex
    none = tables.reference_table(_frame([make.make_record("sd_lora", "other_bench", 1994)]), REFERENCE_CSV)
    assert none is None


# --- figures -----------------------------------------------------------------------------------------------------

INTERP = {
    "seq_lora": {"lambda": [0.0, 0.5, 1.0], "t1": [80.0, 60.0, 40.0], "t2": [50.0, 70.0, 90.0]},
    "sd_lora": {"lambda": [0.0, 0.5, 1.0], "t1": [80.0, 81.0, 82.0], "t2": [50.0, 70.0, 90.0]},
}
FIGURES = {
    "accuracy_curves": lambda d, out: figures.accuracy_curves(d, out),
    "magnitude_plot": lambda d, out: figures.magnitude_plot(d, out),
    "residual_plot": lambda d, out: figures.residual_plot(d, out),
    "interpolation_plot": lambda d, out: figures.interpolation_plot(INTERP, out),
    "proximity_heatmap": lambda d, out: figures.proximity_heatmap([[0.0, 0.2], [0.3, 0.0]], ["T1", "T2"], out),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_renders_identically_twice(name, df, tmp_path):
    first, second = FIGURES[name](df, tmp_path / "a"), FIGURES[name](df, tmp_path / "b")
    assert [p.suffix for p in first] == [".png", ".pdf"]
    for a, b in zip(first, second):
        assert a.stat().st_size > 1000
        assert a.read_bytes() == b.read_bytes(), a.name


def test_figures_skip_without_data(tmp_path):
    plain = _frame([make.make_record("inflora", "imagenet_r_5", 1994)])
    assert figures.magnitude_plot(plain, tmp_path) is None
    assert figures.residual_plot(plain, tmp_path) is None
    assert figures.accuracy_curves(plain.iloc[0:0], tmp_path) is None
    assert figures.interpolation_plot({}, tmp_path) is None
    assert figures.proximity_heatmap([], [], tmp_path) is None
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError):
        figures.proximity_heatmap([[0.0, 1.0]], ["T1"], tmp_path)


def test_method_colors_are_stable():
    a = figures.method_colors(["sd_lora", "joint", "my_method"])
    b = figures.method_colors(["my_method", "l2p"])
    assert a["joint"] == "#000000" and a["my_method"] == b["my_method"]
    assert a["sd_lora"] != b["l2p"]


# --- report ------------------------------------------------------------------------------------------------------


def test_make_report_writes_tables_and_figures(results_dir, tmp_path, capsys):
    shutil.copytree(results_dir / "records", tmp_path / "records")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "table3.tex").write_text("stale")  # from an earlier report; no data now
    # Through the CLI, which calls make_report and prints its sorted paths (one report run keeps the test fast).
    assert cli_main(["--results-dir", str(tmp_path), "--reference", str(REFERENCE_CSV)]) == 0
    paths = [Path(line) for line in capsys.readouterr().out.splitlines()]
    names = [str(p.relative_to(tmp_path)) for p in paths]
    assert names == sorted(names) and paths == sorted(paths)
    assert set(names) == {
        "tables/main.tex",
        "tables/extended.tex",
        "tables/table2.tex",
        "tables/table6.tex",
        "tables/reference.tex",
        "tables/summary.csv",
        *(f"figures/{n}.{e}" for n in ("accuracy", "magnitudes", "residuals") for e in ("png", "pdf")),
        # One accuracy-matrix heatmap per benchmark (the reference method's lowest seed) and the one-page report.
        *(f"figures/acc_matrix__sd_lora__{b}__s1993.{e}" for b in ("cifar100_10", "imagenet_r_5") for e in ("png", "pdf")),
        "report.html",
    }
    assert not (tmp_path / "tables" / "table3.tex").exists()
    summary = pd.read_csv(tmp_path / "tables" / "summary.csv")
    cell = summary[(summary["method"] == "sd_lora") & (summary["benchmark"] == "cifar100_10")].iloc[0]
    assert (cell["n_seeds"], cell["acc_mean"], cell["acc_se"]) == (3, 87.6667, 0.4410)
    assert cli_main(["--results-dir", str(tmp_path / "missing")]) == 2
    with pytest.raises(FileNotFoundError):
        make_report(tmp_path, tmp_path / "no_such.csv")


# --- LaTeX compiles ----------------------------------------------------------------------------------------------


# The paper suite's seven benchmarks: (label, registry name, N).
SEVEN = (("imagenet_r_5", "imagenet_r", 5), ("imagenet_r_10", "imagenet_r", 10), ("imagenet_r_20", "imagenet_r", 20),
         ("imagenet_a_10", "imagenet_a", 10), ("domainnet_5", "domainnet", 5), ("cifar100_10", "cifar100", 10),
         ("cub200_10", "cub200", 10))


def _seven_benchmarks() -> pd.DataFrame:
    """Every paper method, the ablations and the harness's extra rows (the L2P twin included) on all seven."""
    methods = [*paper_rows(METHODS.names()), "simple_cil", "seq_lora", TWIN, "joint"]
    recs = [_rec(m, label, seed, 60.0 + k + off, 70.0 + k + off, n_tasks=n, bench_name=name)
            for k, m in enumerate(methods) for label, name, n in SEVEN for seed, off in zip(SEEDS5[:3], OFFSETS5)]
    recs[0]["nonfinite_loss"] = [2, 1]  # one diverged seed: its mark and caption note must compile too
    return _frame(recs)


def test_generated_tables_compile_with_pdflatex_at_article_width(twin, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed: apt-get install texlive-latex-base texlive-latex-recommended")
    both = _seven_benchmarks()
    fragments = {"main": tables.main_table(both), "reference": tables.reference_table(both, REFERENCE_CSV),
                 "extended": tables.extended_table(both)}
    fragments |= {f"table{i}": tables.paper_table(both, i) for i in tables.PAPER_TABLE_IDS}
    assert all(latex is not None for latex in fragments.values()), sorted(k for k, v in fragments.items() if v is None)
    assert r"\begin{sidewaystable}" in fragments["main"]  # seven benchmarks: landscape
    # The golden files too: what the golden tests pin must also compile at article width.
    fragments |= {f"golden_{p.stem}": p.read_text(encoding="utf-8") for p in sorted(GOLDEN_DIR.glob("*.tex"))}
    for name, latex in fragments.items():
        (tmp_path / f"{name}.tex").write_text(latex, encoding="utf-8")
    # The packages docs/analysis.md names; \clearpage keeps the floats from piling up.
    doc = (
        "\\documentclass{article}\n\\usepackage{booktabs,graphicx,rotating}\n\\begin{document}\n"
        + "\n\\clearpage\n".join(rf"\input{{{name}.tex}}" for name in sorted(fragments))
        + "\n\\end{document}\n"
    )
    (tmp_path / "doc.tex").write_text(doc, encoding="utf-8")
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0
    log = (tmp_path / "doc.log").read_text(encoding="latin-1")
    assert "Overfull \\hbox" not in log, log[log.find("Overfull"):][:1500]


CD_SCRIPT = """
import sys
import numpy as np, pandas as pd
from analysis import figures, stats
rng = np.random.default_rng(0)
# 7 benchmarks x 9 methods, coarse accuracies so that ranks tie and several crossbars share their lowest rank
table = pd.DataFrame(rng.integers(0, 4, size=(7, 9)).astype(float), index=[f"b{i}" for i in range(7)],
                     columns=["sd_lora", "sd_lora_kd", "sd_lora_rr", "l2p", "dualprompt", "coda_prompt", "inflora",
                              "full_ft", "hide_prompt"])
figures.critical_difference_plot(stats.friedman_nemenyi(table), sys.argv[1])
"""


def test_critical_difference_figure_is_byte_identical_across_processes(tmp_path):
    """scikit-posthocs groups the crossbars in sets of labels; a string's hash changes with PYTHONHASHSEED, so two
    runs of `python -m analysis` must not depend on it (issue: the CD figure of `paper_tables --smoke` differed)."""
    outs = []
    for seed in ("1", "2", "3"):
        out = tmp_path / seed
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", CD_SCRIPT, str(out)], check=True, env=env, cwd=ROOT)
        outs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert set(outs[0]) == {"critical_difference.png", "critical_difference.pdf"}
    assert outs[0] == outs[1] == outs[2]
