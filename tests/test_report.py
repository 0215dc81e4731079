"""Tests of the comparisons that say how sure they are (``analysis.stats``), ``report.html``, ``compare`` and several
results folders in one table.

Records are built with known seed values (``tests/fixtures/records/make.py`` with the accuracies overwritten), so
every interval, mark and flag is checked against numbers computed here by hand or by scipy directly.
"""

from __future__ import annotations

import importlib.util
import io
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats as st

from analysis import html, stats, tables
from analysis.__main__ import main as cli_main
from analysis.compare import compare_dirs
from analysis.records import display_name, load_records, record_row, records_frame
from analysis.report import make_report

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "docs" / "results" / "quick"
SEEDS = (1993, 1994, 1995, 1996, 1997)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make = _load("fixture_make", ROOT / "tests" / "fixtures" / "records" / "make.py")
cdp = _load("cdp", ROOT / "tests" / "cdp.py")

# Known Acc per seed on one benchmark: "top" is best; "close" is behind by a noisy amount (its interval holds 0);
# "far" is behind by a nearly constant 3 points (its interval excludes 0).
ACC = {
    "top": [80.0, 82.0, 81.0, 83.0, 79.0],
    "close": [79.0, 83.0, 79.5, 81.0, 80.0],
    "far": [77.0, 79.2, 77.9, 80.1, 76.0],
}


def _record(method: str, benchmark: str, seed: int, acc: float, **kw) -> dict:
    rec = make.make_record(method, benchmark, seed, **kw)
    shift = acc - rec["metrics"]["acc"]
    rec["pooled_acc"] = [round(v + shift, 6) for v in rec["pooled_acc"]]
    rec["metrics"]["acc"] = acc
    rec["metrics"]["aaa"] = sum(rec["pooled_acc"]) / len(rec["pooled_acc"])
    return rec


def _frame(records):
    return records_frame([record_row(r, Path(r["job_id"] + ".json")) for r in records])


def _known(benchmark: str = "imagenet_r_5") -> list[dict]:
    return [_record(m, benchmark, s, v) for m, vals in ACC.items() for s, v in zip(SEEDS, vals)]


def _write(folder: Path, records: list[dict]) -> Path:
    return make.write_records(folder, records)


# --- intervals and marks ------------------------------------------------------------------------------------------


def test_an_interval_that_excludes_zero_never_prints_a_zero_bound():
    from analysis.stats import interval_text

    assert interval_text(0.0043, 0.14) == "[+0.0043, +0.14]"  # +0.00 would read as touching zero
    assert interval_text(-27.42, 2.114) == "[-27.42, +2.11]" and interval_text(0.0, 1.0) == "[+0.00, +1.00]"
    assert interval_text(float("nan"), 1.0) == "--"


def test_paired_intervals_and_probability_of_improvement_by_hand():
    comp = stats.comparisons(_frame(_known()), "acc", reference="far")
    for lab in ("close", "far"):
        row = comp[(comp["label"] == lab) & (comp["role"] == "best")].iloc[0]
        d = np.subtract(ACC[lab], ACC["top"])
        half = st.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))  # the t-interval, by hand
        assert row["versus"] == "top" and row["n_shared"] == 5
        assert row["diff"] == pytest.approx(d.mean())
        assert (row["lo"], row["hi"]) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))
        wins = sum((x > y) + 0.5 * (x == y) for x in ACC[lab] for y in ACC["top"])  # rliable's definition
        assert row["p_improve"] == pytest.approx(wins / 25)
    close = comp[(comp["label"] == "close") & (comp["versus"] == "top")].iloc[0]
    far = comp[(comp["label"] == "far") & (comp["versus"] == "top")].iloc[0]
    assert close["indistinguishable"] and close["lo"] < 0 < close["hi"]
    assert not far["indistinguishable"] and far["hi"] < 0
    # Against the chosen reference ("far"), the best is clearly ahead.
    ref = comp[(comp["label"] == "top") & (comp["role"] == "reference")].iloc[0]
    assert ref["versus"] == "far" and ref["lo"] > 0


def test_p_values_are_the_paired_t_tests_and_holm_adjusts_each_family():
    comp = stats.comparisons(_frame(_known()), "acc", reference="far")
    for _, row in comp.iterrows():
        x, y = ACC[row["label"]], ACC[row["versus"]]
        assert row["p"] == pytest.approx(st.ttest_rel(x, y).pvalue)
    # Holm by hand: the family against "top" holds close and far; the smaller p is doubled, the larger kept
    # (but never below the smaller's adjusted value).
    fam = comp[comp["versus"] == "top"].set_index("label")
    lo_lab, hi_lab = sorted(("close", "far"), key=lambda lab: fam.loc[lab, "p"])
    first = min(1.0, 2 * fam.loc[lo_lab, "p"])
    assert fam.loc[lo_lab, "p_holm"] == pytest.approx(first)
    assert fam.loc[hi_lab, "p_holm"] == pytest.approx(max(first, fam.loc[hi_lab, "p"]))
    assert list(stats.holm([0.01, float("nan"), 0.04, 0.03])[[0, 2, 3]]) == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(stats.holm([0.01, float("nan")])[1])
    assert stats.paired_p([3.0, 4.0], [1.0, 2.0]) == 0.0 and stats.paired_p([1.0, 2.0], [1.0, 2.0]) == 1.0
    assert math.isnan(stats.paired_p([1.0], [2.0]))
    page = html.comparison_table(comp[comp["role"] == "best"], "c0")
    assert "p (Holm)" in page and f"{fam.loc['close', 'p_holm']:.3f}" in page and "&lt;0.001" in page


def test_constant_difference_is_a_point_interval_and_one_seed_has_none():
    assert stats.paired_interval([3.0, 4.0], [1.0, 2.0]) == (2.0, 2.0, 2.0)
    diff, lo, hi = stats.paired_interval([3.0], [1.0])
    assert diff == 2.0 and math.isnan(lo) and math.isnan(hi)


def test_latex_and_html_mark_the_indistinguishable_not_only_the_best():
    df = _frame(_known())
    # The LaTeX tables rank the paper's methods only: the same numbers under paper methods' names.
    paper = {"top": "sd_lora", "close": "inflora", "far": "l2p"}
    latex = tables.main_table(_frame([_record(paper[m], "imagenet_r_5", s, v) for m, vals in ACC.items()
                                      for s, v in zip(SEEDS, vals)]))
    lines = {ln.split(" &")[0]: ln for ln in latex.splitlines() if " & " in ln}
    assert r"\textbf{81.00 (1.58)}" in lines["SD-LoRA"]  # 80..83,79: mean 81, sd 1.58 (rows by display name)
    assert r"\underline{80.50 (1.58)}" in lines["InfLoRA"]
    assert r"\underline" not in lines["L2P"] and r"\textbf" not in lines["L2P"]
    assert "underlined: not distinguishable from that best" in latex
    assert r"\textbf" not in tables.main_table(df)  # top, close, far: no paper rows, nothing ranked
    page = html.results_table(df, "t", "sd")
    assert 'col2 best" >81.00 ± 1.58</td>' in page and 'col2 tied" >80.50 ± 1.58</td>' in page
    assert "tied" in page.split("close")[1].split("</tr>")[0] and "tied" not in page.split("far")[1].split("</tr>")[0]


def test_stat_sd_and_se_by_hand_for_five_seeds():
    df = _frame(_known())
    vals = np.array(ACC["close"])
    sd, se = vals.std(ddof=1), vals.std(ddof=1) / math.sqrt(5)
    assert f"{sd:.2f}" != f"{se:.2f}"
    sd_line = next(ln for ln in tables.main_table(df, "sd").splitlines() if ln.startswith("close"))
    se_line = next(ln for ln in tables.main_table(df, "se").splitlines() if ln.startswith("close"))
    assert f"{vals.mean():.2f} ({sd:.2f})" in sd_line and f"{vals.mean():.2f} ({se:.2f})" in se_line
    assert "standard deviation" in tables.main_table(df, "sd") and "standard error" in tables.main_table(df, "se")
    with pytest.raises(ValueError, match="sd, se"):
        tables.main_table(df, "var")


# --- critical difference and byte-identical reports --------------------------------------------------------------

SEVEN = ("imagenet_r_5", "imagenet_r_10", "imagenet_r_20", "imagenet_a_10", "domainnet_5", "cifar100_10", "cub200_10")


def _seven_benchmarks() -> list[dict]:
    """4 methods x 7 benchmarks x 2 seeds; sd_lora first everywhere, simple_cil last, the middle two alternate."""
    base = {"sd_lora": 80.0, "inflora": 70.0, "l2p": 69.0, "simple_cil": 60.0}
    recs = []
    for i, bench in enumerate(SEVEN):
        for method, acc in base.items():
            swap = 2.0 if method == "l2p" and i % 2 else 0.0
            recs += [_record(method, bench, s, acc + swap + 0.1 * i + 0.3 * k) for k, s in enumerate(SEEDS[:2])]
    return recs


def test_critical_difference_diagram_and_report_are_byte_identical(tmp_path):
    recs = _seven_benchmarks()
    table = stats.rank_table(_frame(recs))
    assert table.shape == (7, 4)
    result = stats.friedman_nemenyi(table)
    assert result["ranks"]["sd_lora"] == 1.0 and result["ranks"]["simple_cil"] == 4.0
    assert result["statistic"] == pytest.approx(st.friedmanchisquare(*[table[c] for c in table.columns]).statistic)
    folder, outputs = _write(tmp_path, recs), []
    for _ in range(2):  # a second run over the same records
        outputs.append({p.relative_to(folder): p.read_bytes() for p in make_report(folder)})
    assert Path("figures/critical_difference.png") in outputs[0]
    assert outputs[0] == outputs[1]  # every table, figure and the report: same bytes


def test_no_critical_difference_below_three_benchmarks(tmp_path):
    assert stats.friedman_nemenyi(stats.rank_table(_frame(_known()))) is None
    _write(tmp_path, _known())
    assert cli_main(["--results-dir", str(tmp_path), "--matrix-job", "far__imagenet_r_5__s1995"]) == 0
    assert not (tmp_path / "figures" / "critical_difference.png").exists()
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "No critical-difference diagram" in page and "Accuracy matrix of far__imagenet_r_5__s1995" in page
    assert (tmp_path / "figures" / "acc_matrix__far__imagenet_r_5__s1995.png").is_file()
    bad = _write(tmp_path / "bad", _known())
    assert cli_main(["--results-dir", str(bad), "--matrix-job", "nope"]) == 2
    assert sorted(p.name for p in bad.iterdir()) == ["records"]  # nothing written


def test_report_says_where_the_errors_go_when_the_records_hold_task_confusion(tmp_path):
    """The per-benchmark "Where the errors go" table: seed means of task-id Acc and of the two ways images leave
    their task, computed from task_confusion; absent for records without it (made before it was recorded)."""
    recs = _known()
    plain = (_write(tmp_path / "plain", recs) / "report.html")
    make_report(plain.parent)
    assert "Where the errors go" not in plain.read_text(encoding="utf-8")
    for k, rec in enumerate(recs):  # two tasks: row j = task j's images, column = the task they were predicted into
        rec["task_confusion"] = [[90.0 - k, 10.0 + k], [40.0, 60.0]]
        rec["classes_per_task"], rec["metrics"]["task_id_acc"] = [2, 2], 75.0 - k
    page = _write(tmp_path / "tasks", recs) / "report.html"
    make_report(page.parent)
    text = page.read_text(encoding="utf-8")
    assert "Where the errors go" in text
    table = text.split('id="T_tasks0"')[1].split("</table>")[0]
    close = [k for k, r in enumerate(recs) if r["method"] == "close"]
    into_last = np.mean([10.0 + k for k in close])  # the first task's images into the last, over close's seeds
    task_id = np.mean([75.0 - k for k in close])
    row = table.split(">close<")[1].split("</tr>")[0]
    assert f">{task_id:.2f} ± " in row and f">{into_last:.2f} ± " in row
    assert ">40.00 ± 0.00<" in row  # the last task's images into earlier tasks: 100 - 60 at every seed


def test_task_errors_of_one_task_have_no_old_tasks_and_skip_records_without_confusion():
    from analysis.records import task_errors

    one, old = _record("close", "imagenet_r_5", 1993, 80.0), _record("far", "imagenet_r_5", 1993, 70.0)
    one["task_confusion"], one["metrics"]["task_id_acc"] = [[100.0]], 100.0
    frame = task_errors(_frame([one, old]))  # old: made before task_confusion was recorded
    assert list(frame["method"]) == ["close"]
    assert math.isnan(frame["into_last"].iloc[0]) and frame["last_into_earlier"].iloc[0] == 0.0


# --- compare ------------------------------------------------------------------------------------------------------


def test_compare_identical_folders_reports_no_change(tmp_path, capsys):
    recs = _known() + _known("cifar100_10")
    a, b = _write(tmp_path / "a", recs), _write(tmp_path / "b", recs)
    table, _ = compare_dirs(a, b)
    assert len(table) == 6 and not table["changed"].any() and (table["diff"] == 0).all()
    assert cli_main(["compare", str(a), str(b)]) == 0
    assert "0 of 6 method x benchmark cells changed" in capsys.readouterr().out


def test_compare_flags_exactly_the_shifted_method(tmp_path, capsys):
    recs = _known() + _known("cifar100_10")
    shifted = [_record(r["method"], r["benchmark"], r["seed"], r["metrics"]["acc"] + (5.0 if r["method"] == "close"
                                                                                      else 0.0)) for r in recs]
    table, text = compare_dirs(_write(tmp_path / "a", recs), _write(tmp_path / "b", shifted))
    flagged = table[table["changed"]]
    assert sorted(flagged["label"]) == ["close", "close"] and list(flagged["diff"]) == pytest.approx([5.0, 5.0])
    assert text.count("CHANGED") == 2
    assert cli_main(["compare", str(tmp_path / "a"), str(tmp_path / "missing")]) == 2


def test_compare_puts_every_column_over_the_shared_seeds(tmp_path):
    """B ran two more seeds than A: its column must not mix them into the mean beside a difference without them."""
    recs = _known()
    extra = [_record("top", "imagenet_r_5", s, 99.0) for s in (2001, 2002)]
    a = _write(tmp_path / "a", [r for r in recs if r["seed"] != SEEDS[-1]])
    table, text = compare_dirs(a, _write(tmp_path / "b", recs + extra))
    top = table[table["label"] == "top"].iloc[0]
    assert top["n_shared"] == 4 and top["a_mean"] == top["b_mean"] == pytest.approx(np.mean(ACC["top"][:4]))
    assert top["diff"] == 0.0 and not top["changed"] and "seeds both ran" in text


# --- several results folders -------------------------------------------------------------------------------------


def test_new_method_beside_the_committed_quick_records(tmp_path, capsys):
    new = [_record("my_method", "split_fmnist", s, 70.0 + k) for k, s in enumerate((1993, 1994, 1995))]
    for rec in new:
        rec["backbone"] = load_records(QUICK)["backbone"].iloc[0]  # same backbone: no "(backbone)" suffix
    mine = _write(tmp_path / "mine", new)
    out = tmp_path / "out"
    before = {p: p.read_bytes() for p in QUICK.rglob("*") if p.is_file()}
    assert cli_main(["--results-dir", str(QUICK), "--results-dir", str(mine), "--out", str(out)]) == 0
    main = (out / "tables" / "main.tex").read_text(encoding="utf-8")
    quick_methods = set(load_records(QUICK)["method"])
    for method in quick_methods | {"my_method"}:
        assert (display_name(method) or method).replace("_", r"\_") + " &" in main, method
    assert "my_method" in (out / "report.html").read_text(encoding="utf-8")
    assert {p: p.read_bytes() for p in QUICK.rglob("*") if p.is_file()} == before  # sources are only read
    capsys.readouterr()
    # Without --out, or with one job in two folders: one line naming the fix, exit 2, nothing written.
    assert cli_main(["--results-dir", str(QUICK), "--results-dir", str(mine)]) == 2
    assert "--out" in capsys.readouterr().err
    assert cli_main(["--results-dir", str(mine), "--results-dir", str(mine), "--out", str(tmp_path / "x")]) == 2
    assert "in both" in capsys.readouterr().err and not (tmp_path / "x").exists()


# --- the report in a real browser --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    path = cdp.find_browser()
    if path is None:
        pytest.skip("no Chromium-family browser on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    return path


def test_report_loads_in_a_browser_without_errors_and_shows_every_method(browser, tmp_path):
    shutil.copytree(QUICK / "records", tmp_path / "quick" / "records")
    make_report(tmp_path / "quick")
    page = cdp.load_page(browser, tmp_path / "quick" / "report.html", tmp_path / "profile")
    assert page["errors"] == []
    for method in sorted(set(load_records(QUICK)["method"])):
        assert method in page["text"], method
    image = Image.open(io.BytesIO(page["screenshot"])).convert("L")
    assert image.size[0] >= 800 and len(image.getcolors(256)) > 16  # not blank: text, tables, figures
    # The sort script ran: rows ordered by the clicked numeric column (Acc, ascending).
    assert page["sorted"][0] != page["sorted"][-1] and len(page["sorted"]) == len(set(load_records(QUICK)["label"]))


def test_browser_check_catches_console_errors(browser, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><table class='sortable'><thead><tr><th>a</th><th>b</th><th>c</th></tr></thead>"
                   "<tbody><tr><td>x</td><td>1</td><td>2</td></tr></tbody></table>"
                   "<script>console.error('boom'); undefined_function();</script></body></html>", encoding="utf-8")
    page = cdp.load_page(browser, bad, tmp_path / "profile")
    assert len(page["errors"]) >= 2 and any("boom" in e for e in page["errors"])


def test_report_lists_failed_jobs_with_error_and_rerun_command(tmp_path):
    make_report(make.write_records(tmp_path))  # the fixture: one failed sd_lora record among done ones
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    problems = page.split('id="problems"')[1]
    assert "sd_lora__cifar100_10__s1996" in problems and "RuntimeError: fixture failure" in problems
    assert "--methods sd_lora --benchmarks cifar100_10 --seeds 1996 --retry-failed" in problems
    assert "99.99" not in page  # its numbers are in no table


def test_smoke_records_say_so_in_every_caption_and_on_the_page(tmp_path):
    """``--smoke`` numbers (stand-ins, a random tiny ViT) are set beside the paper's to test the wiring: every table
    and the page must say they are not results; real records' outputs carry no such line."""
    recs = _known()
    for rec in recs[:2]:
        rec["config"]["runtime"] = {**(rec["config"].get("runtime") or {}), "smoke_of": "vit_base_patch16_224"}
    folder = _write(tmp_path / "smoke", recs)
    paths = make_report(folder, ROOT / "results" / "reference" / "paper_results.csv")
    texts = [p.read_text(encoding="utf-8") for p in paths if p.suffix == ".tex"]
    assert texts and all(r"\caption{\textbf{SMOKE RUN: 2 of these records ran on stand-ins" in t for t in texts)
    assert "SMOKE RUN: 2 of these records" in (folder / "report.html").read_text(encoding="utf-8")
    real = _write(tmp_path / "real", _known())
    make_report(real, None)
    assert "SMOKE" not in (real / "tables" / "main.tex").read_text(encoding="utf-8")
    assert "SMOKE" not in (real / "report.html").read_text(encoding="utf-8")
