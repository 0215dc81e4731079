"""Tests of ``analysis``: records -> frame, LaTeX tables (golden file, math, bold, missing), figures, report.

Fixture records come from ``tests/fixtures/records/make.py`` (3 methods x 2 benchmarks x 3 seeds, one missing cell,
one failed record with absurd numbers). Regenerate the golden table with ``UPDATE_GOLDEN=1 python -m pytest
tests/test_analysis.py``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from analysis import figures, tables
from analysis.__main__ import main as cli_main
from analysis.records import done, load_records, mean_se, order_methods, pooled_long, record_row, records_frame
from analysis.report import make_report

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
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


def _row_line(latex: str, label: str) -> str:
    lines = [ln for ln in latex.splitlines() if ln.startswith(label.replace("_", r"\_") + " &")]
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


def test_mean_se_formula_by_hand():
    mean, se, n = mean_se([78.5, 79.0, 80.0])
    by_hand = math.sqrt(((78.5 - mean) ** 2 + (79.0 - mean) ** 2 + (80.0 - mean) ** 2) / 2) / math.sqrt(3)
    assert (round(mean, 4), round(se, 4), n) == (79.1667, round(by_hand, 4), 3)
    assert math.isnan(mean_se([5.0])[1]) and mean_se([])[2] == 0


# --- main table --------------------------------------------------------------------------------------------------


def test_main_table_matches_golden(df):
    latex = tables.main_table(df, stat="se")
    golden = GOLDEN / "main_table.tex"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(latex, encoding="utf-8")
    assert latex == golden.read_text(encoding="utf-8")


def test_main_table_cell_math_best_bold_joint_missing(df):
    latex = tables.main_table(df, stat="se")
    # sd_lora on imagenet_r_5: acc 78.5, 79.0, 80.0 -> mean 79.17, se 0.44; it beats inflora, so it is bold.
    sd = _row_line(latex, "sd_lora")
    assert r"\textbf{79.17 (0.44)}" in sd and sd.endswith("& 3 \\\\")
    # inflora never ran on cifar100_10: its first two cells are missing, not invented.
    assert _row_line(latex, "inflora").startswith(r"inflora & -- & -- & 75.17 (0.44)")
    # joint has the highest numbers but is a reference row: below a midrule, never bold.
    joint = _row_line(latex, "joint")
    assert r"\textbf" not in joint and "88.17 (0.44)" in joint
    lines = latex.splitlines()
    assert lines[lines.index(joint) - 1] == r"\midrule"
    # cifar100_10 has sd_lora as its only ranked method: nothing to beat, so nothing is bold there.
    assert r"\textbf{87.67" not in latex
    assert "99.99" not in latex  # the failed record


def test_main_table_single_seed_omits_se_and_escapes():
    d = _frame([make.make_record("my_method", "imagenet_r_5", 1994), make.make_record("sd_lora", "imagenet_r_5", 1994)])
    latex = tables.main_table(d, stat="se")
    assert _row_line(latex, "my_method") == r"my\_method & 70.00 & 72.00 & 1 \\"
    assert r"\textbf{79.00}" in latex
    escaped = tables.render(pd.DataFrame([["1"]], index=["a_b&c%"], columns=["x_y"]), "c", "l", escape_header=True)
    assert r"a\_b\&c\% & 1" in escaped and r"x\_y" in escaped


def test_tables_are_deterministic(df, results_dir, tmp_path):
    shutil.copytree(results_dir / "records", tmp_path / "records")
    again = load_records(tmp_path)
    assert tables.main_table(again, stat="se") == tables.main_table(df, stat="se")
    assert tables.paper_table(again, 2, stat="se") == tables.paper_table(df, 2, stat="se")


# --- paper tables ----------------------------------------------------------------------------------------------


def test_paper_table_2_and_6_layouts(df):
    t2 = tables.paper_table(df, 2, stat="se")
    assert "N=5 & N=10 & N=20 & Seeds" in t2
    assert _row_line(t2, "sd_lora") == r"sd\_lora & \textbf{79.17 (0.44)} / \textbf{85.17 (0.44)} & -- & -- & 3 \\"
    assert r"\textbf" not in _row_line(t2, "joint")
    t6 = tables.paper_table(df, 6, stat="se")
    assert _row_line(t6, "sd_lora").startswith(r"sd\_lora & 87.67 (0.44) / 92.17 (0.44) & -- &")
    assert tables.paper_table(df, 3, stat="se") is None  # no imagenet_a or domainnet run
    with pytest.raises(ValueError, match="valid ids"):
        tables.paper_table(df, 7, stat="se")


def test_paper_table_4_needs_an_ablation_and_keeps_paper_rows(df):
    assert tables.paper_table(df, 4, stat="se") is None  # sd_lora alone is not an ablation table
    recs = [make.make_record("sd_lora_single", "imagenet_r_5", s) for s in (1993, 1994)]
    recs += [make.make_record("sd_lora", "imagenet_r_5", s) for s in (1993, 1994)]
    t4 = tables.paper_table(_frame(recs), 4, stat="se")
    body = [ln.split(" &")[0] for ln in t4.splitlines() if ln.startswith("sd")]
    assert body == [r"sd\_lora\_fixed\_first", r"sd\_lora\_single", r"sd\_lora\_no\_rescale", r"sd\_lora"]
    assert _row_line(t4, "sd_lora_fixed_first") == r"sd\_lora\_fixed\_first & -- & -- & -- \\"
    assert _row_line(t4, "sd_lora").startswith(r"sd\_lora & \textbf{78.75 (0.25)} / \textbf{84.75 (0.25)} & --")


def test_paper_table_5_efficiency():
    recs = [make.make_record(m, "imagenet_r_20", s, n_tasks=20) for m in ("inflora", "sd_lora") for s in (1993, 1994)]
    for rec in recs:
        rec["benchmark_name"] = "imagenet_r"
    t5 = tables.paper_table(_frame(recs), 5, stat="se")
    assert "GFLOPs} & \\multicolumn{2}{c}{Learnable w/o head (M)} & \\multicolumn{2}{c}{Stored features (M)}" in t5
    # ours (learnable without the head: 370,000 - 1,000) beside the paper's (results/reference/paper_efficiency.csv)
    assert _row_line(t5, "inflora") == r"inflora & 35.12 & 35.12 & 0.37 & 0.37 & 0.10 & 0.10 & 2 \\"
    assert _row_line(t5, "sd_lora") == r"sd\_lora & 35.12 & 35.12 & 0.37 & 0.37 & \textbf{0.00} & 0.00 & 2 \\"


# --- reference table ---------------------------------------------------------------------------------------------


def test_reference_table_compares_with_paper(df):
    lines = tables.reference_table(df, REFERENCE_CSV, stat="se").splitlines()
    rows = [ln for ln in lines if ln.startswith("T") and "&" in ln]
    assert len(rows) == 3  # inflora and sd_lora on ImageNet-R N=5, sd_lora on CIFAR-100; joint has no paper row
    i = lines.index(next(r for r in rows if r.startswith(r"T2 imagenet\_r N=5 & sd\_lora")))
    # Acc: 79.17 vs 79.15 (0.20) -> +0.02, within 0.20 + 1; AAA: 85.17 vs 83.01 (0.42) -> +2.16, outside 1.42.
    assert lines[i].endswith("& Acc & 79.15 (0.20) & 79.17 (0.44) & +0.02 & yes & 3 \\\\")
    assert lines[i + 1] == r" &  & AAA & 83.01 (0.42) & 85.17 (0.44) & +2.16 & no & 3 \\"


def test_reference_table_maps_ablation_names_and_none_without_match(tmp_path):
    recs = [make.make_record("sd_lora_no_rescale", "imagenet_r_5", 1994)]
    latex = tables.reference_table(_frame(recs), REFERENCE_CSV, stat="se")
    # Paper: ablation_fixed_old_magnitudes, 78.28 (0.59); ours is one seed of 70.00 (no se).
    assert r"T4 imagenet\_r N=5 & sd\_lora\_no\_rescale & Acc & 78.28 (0.59) & 70.00 & -8.28 & no & 1" in latex
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


def test_generated_tables_compile_with_pdflatex(df, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed: apt-get install texlive-latex-base texlive-latex-recommended")
    extra = [make.make_record("sd_lora_single", "imagenet_r_5", 1994)]
    extra += [make.make_record("sd_lora", "imagenet_r_20", s, n_tasks=20) for s in (1993, 1994)]
    for rec in extra:
        rec["benchmark_name"] = "imagenet_r"
    both = pd.concat([df, _frame(extra)], ignore_index=True)
    fragments = {"main": tables.main_table(both), "reference": tables.reference_table(both, REFERENCE_CSV)}
    fragments |= {f"table{i}": tables.paper_table(both, i) for i in tables.PAPER_TABLE_IDS}
    inputs = []
    for name, latex in sorted(fragments.items()):
        if latex is not None:
            (tmp_path / f"{name}.tex").write_text(latex, encoding="utf-8")
            inputs.append(rf"\input{{{name}.tex}}")
    assert len(inputs) == 6  # main, reference, tables 2, 4, 5, 6 (table 3 has no data)
    doc = (
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        + "\n".join(inputs)
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
