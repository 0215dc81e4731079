"""LaTeX tables from the records frame (pandas ``Styler.to_latex`` with booktabs rules).

Every cell is ``mean (s)`` over seeds, s the chosen statistic (``sd`` = std(ddof=1), the default, or
``se`` = sd / sqrt(n); left out when n = 1), two decimals, and every caption names it; a cell without done records
is ``--``, never a number from elsewhere. Same records -> same bytes: rows, columns and numbers are all in a fixed
order and precision. Labels are escaped by pandas (``Styler.format_index(escape="latex")``).

Rows come in two blocks, decided from the registry (``methods.base.MethodInfo``), never from names listed here:

* **the paper's rows**, in the paper's order: methods with a ``paper_key`` that the paper reports in that table
  (for the paper layouts, a row of that table in the reference CSV; for the main table, any paper row);
* **Extended**, below a ``\\midrule`` and an italic header row: everything else the records hold (SimpleCIL,
  sequential LoRA, plugins, a method the paper leaves out of that table such as HiDe-Prompt in Table 6, the
  "as released" twins of ``MethodInfo.released_of``, labelled ``<method> (as released)``, and the upper bound
  ``joint`` last).

Marks rank the paper's rows only: the best mean of a column among them is bold (ties at the printed precision are
all bold), and one the seeds cannot tell from the best (the 95% paired t-interval of its difference to the best
contains 0, :mod:`analysis.stats`) is underlined. An extended row is never marked, nor, in the tables of every
method (:func:`main_table`, :func:`extended_table`), an ablation of SD-LoRA (the paper ranks those in its Table 4
only, as :func:`paper_table` 4 does).

Layouts: :func:`main_table` (every method x benchmark), :func:`paper_table` (the paper's Tables 2-6),
:func:`extended_table` (per benchmark, both readings of Acc: pooled and the per-task mean) and
:func:`reference_table` (ours beside the paper's numbers). Wide tabulars shrink to the line width
(``\\resizebox``), and a main table of more than :data:`PORTRAIT_BENCHMARKS` benchmarks is a ``sidewaystable``:
compiling needs ``booktabs``, ``graphicx`` and ``rotating``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.records import (
    PAPER_RESULTS,
    SMOKE_TEXT,
    STATISTICS,
    ablation_methods,
    aggregate,
    benchmark_order,
    display_name,
    diverged_seeds,
    done,
    ordered_labels,
    paper_names,
    paper_rows,
)
from analysis.stats import indistinguishable

DECIMALS = 2
MISSING = "--"
STAT_TEXT = {"sd": "standard deviation", "se": "standard error, sd/$\\sqrt{n}$"}
MARKS_TEXT = (
    "Bold: best mean of the paper's methods; underlined: not distinguishable from that best (the 95\\% paired "
    "t-interval of the difference over shared seeds contains 0)."
)
DIVERGED_TEXT = (r"($k^\dagger$): $k$ of the row's runs diverged (a non-finite mean training loss, the record's "
                 r"\texttt{nonfinite\_loss}); their numbers are a diverged network's.")
ABLATION_TEXT = "SD-LoRA's ablations (the paper's Table 4) are not marked."
EXTENDED_TEXT = "Rows under Extended are not in the paper's table (joint training: an upper bound) and are never marked."
EXTENDED_HEADER = r"\textit{Extended (not in the paper's table)}"
# A main table of more benchmarks than this is set in landscape (sidewaystable); every table shrinks to fit.
PORTRAIT_BENCHMARKS = 3


@dataclass(frozen=True)
class Stat:
    """Mean, standard deviation and number of seeds of one cell (from :func:`analysis.records.aggregate`)."""

    mean: float
    sd: float
    n: int

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(self.n) if self.n > 1 else math.nan

    def spread(self, stat: str) -> float:
        """The statistic printed beside the mean: ``sd`` or ``se``."""
        return self.se if stat == "se" else self.sd

    @property
    def rounded(self) -> float:
        """The mean at printed precision: ranking on it makes bold agree with what the reader sees."""
        return round(self.mean, DECIMALS) if self.n else math.nan


EMPTY = Stat(math.nan, math.nan, 0)


def check_stat(stat: str) -> str:
    """``stat`` if it is a known statistic, else ValueError naming the choices."""
    if stat not in STATISTICS:
        raise ValueError(f"unknown statistic {stat!r}; choose one of {', '.join(STATISTICS)}")
    return stat


def cell_stats(frame: pd.DataFrame, value: str, by: str = "label") -> dict[str, Stat]:
    """:class:`Stat` of ``value`` per ``by`` group of ``frame``."""
    if frame.empty:
        return {}
    agg = aggregate(frame, [by], [value])
    return {
        row[by]: Stat(float(row[f"{value}_mean"]), float(row[f"{value}_sd"]), int(row[f"{value}_n"]))
        for _, row in agg.iterrows()
        if row[f"{value}_n"] > 0
    }


def stat_caption(stat: str) -> str:
    """Caption words naming the statistic of the cells."""
    return f"mean ({STAT_TEXT[check_stat(stat)]}) over seeds, omitted for one seed"


def format_stat(stat: Stat, bold: bool = False, show_se: bool = True, kind: str = "sd", tied: bool = False) -> str:
    """``mean (s)`` with fixed decimals, s the statistic ``kind``; ``mean`` alone when n = 1 or ``show_se`` is False.

    ``--`` when n = 0; bold for a best cell, underlined for one indistinguishable from the best (``tied``).
    """
    if stat.n == 0 or math.isnan(stat.mean):
        return MISSING
    text = f"{stat.mean:.{DECIMALS}f}"
    spread = stat.spread(kind)
    if show_se and stat.n > 1 and not math.isnan(spread):
        text += f" ({spread:.{DECIMALS}f})"
    if bold:
        return rf"\textbf{{{text}}}"
    return rf"\underline{{{text}}}" if tied else text


def best_rows(stats: dict[str, Stat], ranked: list[str], higher: bool = True) -> set[str]:
    """Labels whose rounded mean is the best among ``ranked`` (all ties); empty unless two values differ.

    A single value, or a column where every value ties, has nothing to beat: bolding it would claim a comparison
    that was not made.
    """
    values = {lab: stats[lab].rounded for lab in ranked if lab in stats and stats[lab].n}
    if len(set(values.values())) < 2:
        return set()
    target = max(values.values()) if higher else min(values.values())
    return {lab for lab, v in values.items() if v == target}


def seeds_text(counts) -> str:
    """Seed count of a row: ``3``, or ``1--3`` when cells differ, ``--`` when the row has no data."""
    counts = sorted({int(c) for c in counts if c})
    if not counts:
        return MISSING
    return str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}--{counts[-1]}"


def seeds_cells(d: pd.DataFrame, labels: list[str], counts: dict[str, list[int]]) -> tuple[list[str], str]:
    r"""The ``Seeds`` cells of ``labels`` (:func:`seeds_text`), each followed by ``(k$^\dagger$)`` when k of the
    row's runs (over every column of the table) diverged (:func:`analysis.records.diverged_seeds`), and the caption's note for the mark (empty
    when no row has it)."""
    marks = {lab: diverged_seeds(d, lab) for lab in labels}
    cells = [seeds_text(counts[lab]) + (f" ({marks[lab]}$^\\dagger$)" if marks[lab] else "") for lab in labels]
    return cells, (" " + DIVERGED_TEXT if any(marks.values()) else "")


def row_blocks(d: pd.DataFrame, labels: list[str], keys=None) -> tuple[list[str], list[str]]:
    """Split row labels into the paper's rows (in the paper's order) and the extended rows (in ``labels``' order).

    Args:
        d: Frame whose ``label`` and ``method`` columns map each label to its method (a label absent from it is
            its own method, e.g. a fixed row of Table 4 without runs).
        labels: Row labels in preferred order (:func:`analysis.records.ordered_labels`).
        keys: The reference CSV's method names of the paper table, or None (every method with a paper key).

    Returns:
        ``(paper, extended)``: a label is a paper row when its method is (:func:`analysis.records.paper_rows`).
    """
    method_of = dict(zip(d["label"], d["method"]))
    methods = [method_of.get(lab, lab) for lab in labels]
    rank = {m: i for i, m in enumerate(paper_rows(methods, keys))}
    paper = sorted((lab for lab, m in zip(labels, methods) if m in rank), key=lambda lab: (rank[method_of.get(lab, lab)], lab))
    return paper, [lab for lab, m in zip(labels, methods) if m not in rank]


def compared_rows(d: pd.DataFrame, paper: list[str]) -> tuple[list[str], str]:
    """(the paper rows that marks rank, the caption's sentence on the others): the paper's ablations of SD-LoRA
    (its Table 4, ``MethodInfo.group == "ablation"``) sit among the paper's rows of a table of every method but are
    not methods the paper compares, so they are never marked there (:func:`paper_table` 4 ranks them)."""
    method_of = dict(zip(d["label"], d["method"]))
    ablations = set(ablation_methods())
    ranked = [lab for lab in paper if method_of.get(lab, lab) not in ablations]
    return ranked, (f" {ABLATION_TEXT}" if len(ranked) < len(paper) else "")


def row_names(d: pd.DataFrame, labels: list[str]) -> list[str]:
    """Printed row names, as the paper names its rows: the method's display name (``MethodInfo.display``: "SD-LoRA",
    "CODA-Prompt", "L2P (as released)") followed by whatever the label adds to the method's name (a backbone
    suffix); a label whose method registers no display name (an Avalanche strategy's label, a plugin) as it is."""
    method_of = dict(zip(d["label"], d["method"]))
    out = []
    for lab in labels:
        method = method_of.get(lab, lab)
        shown = display_name(method)
        out.append(shown + lab[len(method):] if shown and lab.startswith(method) else lab)
    return out


def _add_rules(latex: str, columns: pd.Index, n_reference: int, first_col: int, extended: int = 0) -> str:
    """Add ``\\cmidrule`` under grouped headers, a ``\\midrule`` above the last ``n_reference`` rows and the
    Extended header row (after a ``\\midrule`` unless it opens the body) above the last ``extended`` rows.

    Styler has no per-row rules, so they are inserted into its output; every row is one line, so positions are exact.
    """
    lines = latex.split("\n")
    top = lines.index(r"\toprule")
    if isinstance(columns, pd.MultiIndex):
        spans, start = [], first_col
        level0 = list(columns.get_level_values(0))
        i = 0
        while i < len(level0):
            width = 1
            while i + width < len(level0) and level0[i + width] == level0[i]:
                width += 1
            if width > 1:
                spans.append(rf"\cmidrule(lr){{{start + i}-{start + i + width - 1}}}")
            i += width
        if spans:
            lines.insert(top + 2, " ".join(spans))
    if n_reference:
        bottom = lines.index(r"\bottomrule")
        lines.insert(bottom - n_reference, r"\midrule")
    if extended:
        at = lines.index(r"\bottomrule") - extended
        width = first_col - 1 + len(columns)
        lines.insert(at, rf"\multicolumn{{{width}}}{{l}}{{{EXTENDED_HEADER}}} \\")
        if lines[at - 1] != r"\midrule":
            lines.insert(at, r"\midrule")
    return "\n".join(lines)


def _fit(latex: str, landscape: bool) -> str:
    """Shrink the tabular to the line width when it is wider (never enlarge it); ``landscape``: a sidewaystable."""
    begin = latex.index(r"\begin{tabular}")
    end = latex.index(r"\end{tabular}") + len(r"\end{tabular}")
    box = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"
    latex = latex[:begin] + box + "\n" + latex[begin:end] + "%\n}" + latex[end:]
    if landscape:
        latex = latex.replace(r"\begin{table}", r"\begin{sidewaystable}", 1).replace(r"\end{table}", r"\end{sidewaystable}", 1)
    return latex


def mark_smoke(latex: str, n: int) -> str:
    """``latex`` (a :func:`render` float) with the smoke warning first in its caption when ``n`` of its records are
    ``--smoke`` stand-ins (:data:`analysis.records.SMOKE_TEXT`); unchanged when ``n`` is 0."""
    if not n:
        return latex
    return latex.replace("\\caption{", "\\caption{\\textbf{" + SMOKE_TEXT.format(n=n) + ".} ", 1)


def render(
    cells: pd.DataFrame,
    caption: str,
    label: str,
    n_reference: int = 0,
    show_index: bool = True,
    n_text_cols: int = 0,
    escape_header: bool = False,
    align: str = "r",
    size: str = "small",
    colsep: str = "4pt",
    extended: int = 0,
    fit: bool = False,
    landscape: bool = False,
) -> str:
    """Render a frame of LaTeX cell strings with booktabs rules.

    Args:
        cells: Frame of formatted cell strings (LaTeX, not escaped again); the index holds plain row labels, which
            pandas escapes.
        caption: LaTeX caption text.
        label: LaTeX ``\\label`` key.
        n_reference: Number of final rows (reference rows such as ``joint``) to set off by a midrule.
        show_index: Whether the index is printed as the first column.
        n_text_cols: Leading columns of ``cells`` that hold plain text (left-aligned, escaped for LaTeX).
        escape_header: Escape the top level of the column headers (benchmark labels) for LaTeX.
        align: Alignment of the other columns (``r`` for numbers, ``c`` for ``Acc / AAA`` pairs).
        size: LaTeX font size command (without backslash) set inside the float.
        colsep: ``\\tabcolsep`` inside the float.
        extended: Number of final rows under the Extended header row (not in the paper's table).
        fit: Shrink the tabular to the line width when wider (needs ``graphicx``).
        landscape: Set the float as a ``sidewaystable`` (needs ``rotating``).

    Returns:
        The LaTeX fragment (a ``table`` float), ending with a newline.
    """
    styler = cells.style.hide(names=True, axis="index").format_index(escape="latex", axis=0)
    if escape_header:
        styler = styler.format_index(escape="latex", axis=1, level=0)
    if n_text_cols:
        styler = styler.format(escape="latex", subset=list(cells.columns[:n_text_cols]))
    if not show_index:
        styler = styler.hide(axis="index")
    latex = styler.to_latex(
        hrules=True,
        multicol_align="c",
        caption=caption,
        label=label,
        position_float="centering",
        column_format="l" * (int(show_index) + n_text_cols) + align * (cells.shape[1] - n_text_cols),
    )
    latex = _add_rules(latex, cells.columns, n_reference, first_col=2 if show_index else 1, extended=extended)
    if fit or landscape:
        latex = _fit(latex, landscape)
    # Smaller type and column gaps (plain LaTeX, scoped to the float) so a two-benchmark table fits a text width.
    latex = latex.replace("\\centering\n", f"\\centering\n\\{size}\n\\setlength{{\\tabcolsep}}{{{colsep}}}\n", 1)
    return latex if latex.endswith("\n") else latex + "\n"


def _marks(sub: pd.DataFrame, metric: str, stats: dict[str, Stat], ranked: list[str]) -> tuple[set[str], set[str]]:
    """Bold (best rounded mean) and underlined (indistinguishable from a best) labels of one column."""
    best = best_rows(stats, ranked)
    return best, indistinguishable(sub, metric, ranked, best) if best else set()


def _metric_columns(d: pd.DataFrame, labels: list[str], ranked: list[str], benches: list[str], metrics, stat: str):
    """Cells and seed counts per label: for each benchmark, each ``(metric, header)`` as ``mean (stat)``, marked."""
    cols, data, counts = [], {lab: [] for lab in labels}, {lab: [] for lab in labels}
    for bench in benches:
        sub = d[d["benchmark"] == bench]
        for metric, header in metrics:
            stats = cell_stats(sub, metric)
            best, tied = _marks(sub, metric, stats, ranked)
            cols.append((bench, header))
            for lab in labels:
                cell = stats.get(lab, EMPTY)
                data[lab].append(format_stat(cell, bold=lab in best, kind=stat, tied=lab in tied))
                counts[lab].append(cell.n)
    return cols, data, counts


def main_table(df: pd.DataFrame, stat: str = "sd") -> str:
    """Every method x benchmark: Acc and AAA as ``mean (stat)`` over seeds, with the marks of the module docstring.

    Args:
        df: Frame from :func:`analysis.records.load_records` (failed rows are ignored).
        stat: ``sd`` or ``se`` beside each mean.

    Returns:
        LaTeX ``table`` fragment (a ``sidewaystable`` beyond :data:`PORTRAIT_BENCHMARKS` benchmarks): the paper's
        rows, then the Extended block (``joint`` last), a ``Seeds`` column.
    """
    check_stat(stat)
    d = done(df)
    benches = benchmark_order(d)
    paper, extended = row_blocks(d, ordered_labels(d))
    labels = paper + extended
    ranked, ablation_note = compared_rows(d, paper)
    cols, data, counts = _metric_columns(d, labels, ranked, benches, (("acc", "Acc"), ("aaa", "AAA")), stat)
    cols.append(("Seeds", ""))
    seeds, note = seeds_cells(d, labels, counts)
    rows = [data[lab] + [n] for lab, n in zip(labels, seeds, strict=True)]
    cells = pd.DataFrame(rows, index=row_names(d, labels), columns=pd.MultiIndex.from_tuples(cols))
    caption = (
        f"Final accuracy (Acc) and average anytime accuracy (AAA), \\%, {stat_caption(stat)}. {MARKS_TEXT}"
        f"{ablation_note} {EXTENDED_TEXT} -- = no finished run.{note}"
    )
    return render(cells, caption, "tab:main", escape_header=True, extended=len(extended), fit=True,
                  landscape=len(benches) > PORTRAIT_BENCHMARKS)


def extended_table(df: pd.DataFrame, stat: str = "sd") -> str | None:
    """Per benchmark, every method with both readings of final accuracy and AAA (one ``table`` float each).

    Acc is the pooled accuracy after the last task (the record's ``acc``: correct / samples over every seen class,
    the code that produced the paper's numbers); Acc (task mean) is the mean over tasks of the last row of
    ``acc_matrix`` (the record's ``task_mean_acc``: the paper's wording, "average accuracy across all N tasks").
    They differ when the tasks' test sets differ in size (ImageNet-R, ImageNet-A). Rows and marks as in
    :func:`main_table`.

    Returns:
        LaTeX fragment (one float per benchmark), or None without done records.
    """
    check_stat(stat)
    d = done(df)
    floats = []
    metrics = (("acc", "Acc"), ("task_mean_acc", "Acc (task mean)"), ("aaa", "AAA"))
    for bench in benchmark_order(d):
        sub = d[d["benchmark"] == bench]
        paper, extended = row_blocks(sub, ordered_labels(sub))
        labels = paper + extended
        ranked, ablation_note = compared_rows(sub, paper)
        cols, data, counts = _metric_columns(sub, labels, ranked, [bench], metrics, stat)
        seeds, note = seeds_cells(sub, labels, counts)
        rows = [data[lab] + [n] for lab, n in zip(labels, seeds, strict=True)]
        cells = pd.DataFrame(rows, index=row_names(sub, labels), columns=[h for _, h in cols] + ["Seeds"])
        caption = (
            f"{_latex_text(bench)}: Acc = pooled accuracy after the last task (as the paper's code computes it), "
            "Acc (task mean) = mean over tasks of the accuracy on each task's test set after the last task (the "
            f"paper's wording), AAA; \\%, {stat_caption(stat)}. {MARKS_TEXT}{ablation_note} {EXTENDED_TEXT} -- = no "
            f"finished run.{note}"
        )
        floats.append(render(cells, caption, f"tab:extended:{bench}", extended=len(extended), fit=True))
    return "\n".join(floats) if floats else None


def _latex_text(text: str) -> str:
    """Plain text (a benchmark label) escaped for LaTeX."""
    for char in "_&%#$":
        text = text.replace(char, "\\" + char)
    return text


def _read_reference(reference_csv: Path | str, need=("table", "benchmark", "n_tasks", "method", "acc", "acc_sd",
                                                     "aaa", "aaa_sd")) -> pd.DataFrame:
    # the paper's +- are standard deviations (its first author, SD-Lora-CL#14); files made before that was known
    # call the columns *_se
    ref = pd.read_csv(reference_csv, comment="#").rename(columns={"acc_se": "acc_sd", "aaa_se": "aaa_sd"})
    if not set(need) <= set(ref.columns):
        raise ValueError(f"{reference_csv}: expected columns {sorted(need)}, found {sorted(ref.columns)}")
    return ref


def backbone_tag(rec: dict) -> str | None:
    """The timm tag a record's numbers stand for: the tag a ``--smoke`` stand-in replaced (``config.runtime.smoke_of``),
    else the configured one, else the provenance's; None when the record does not say (hand-made records)."""
    config = rec.get("config") or {}
    tag = (config.get("runtime") or {}).get("smoke_of") or (config.get("backbone") or {}).get("tag")
    return tag or (rec.get("provenance") or {}).get("backbone_tag")


def on_paper_backbone(d: pd.DataFrame, paper_backbone) -> pd.Series:
    """Rows of ``d`` whose backbone is the paper row's (a reference CSV's ``backbone`` column, a full timm tag).

    A paper number is set beside runs on its own backbone only (DINO runs are never compared with IN21K->IN1K
    cells); a CSV without the column, or a record that names no backbone, matches.
    """
    if not isinstance(paper_backbone, str) or not paper_backbone:
        return pd.Series(True, index=d.index)
    return pd.Series([backbone_tag(rec) in (None, paper_backbone) for rec in d["record"]], index=d.index, dtype=bool)


def _diff_cells(paper: float, paper_sd: float, ours: Stat) -> list[str]:
    """Paper, ours (both mean (standard deviation)), signed difference and whether |diff| <= the paper's standard
    deviation + 1 point (at printed precision)."""
    paper_txt = MISSING if math.isnan(paper) else f"{paper:.{DECIMALS}f}"
    if math.isnan(paper_sd) or math.isnan(paper):
        paper_cell = paper_txt
    else:
        paper_cell = f"{paper_txt} ({paper_sd:.{DECIMALS}f})"
    if ours.n == 0 or math.isnan(paper):
        return [paper_cell, format_stat(ours, kind="sd"), MISSING, MISSING]
    diff = round(ours.rounded - paper, DECIMALS)
    within = MISSING if math.isnan(paper_sd) else ("yes" if abs(diff) <= round(paper_sd + 1.0, DECIMALS) else "no")
    return [paper_cell, format_stat(ours, kind="sd"), f"{diff:+.{DECIMALS}f}", within]


def reference_table(df: pd.DataFrame, reference_csv: Path | str) -> str | None:
    """Ours beside the paper's numbers for every paper cell that has at least one finished run of ours.

    A paper row (table, benchmark, n_tasks, method, backbone) matches done records with that ``benchmark_name``,
    ``n_tasks``, method (the paper's names map to ours via each method's ``MethodInfo.paper_key``; a method's
    "as released" twin, ``MethodInfo.released_of``, matches its paper row too, on the line after it) and backbone
    (:func:`on_paper_backbone`). Each match gives two lines, Acc then AAA (a long layout: side by side they would
    not fit a page). Nothing is marked: the table compares with the paper and ranks nothing. Beside the paper's
    standard deviations ours are standard deviations too, whatever ``--stat`` the other tables use.

    Args:
        df: Frame from :func:`analysis.records.load_records`.
        reference_csv: CSV with columns table,benchmark,n_tasks,method,acc,acc_sd,aaa,aaa_sd[,backbone] (``#`` comments; the
            ``_sd`` columns hold the paper's +-, which its first author gives as standard deviations over 5 seeds;
            ``acc_se``/``aaa_se``, the names of older files, are read as these).

    Returns:
        LaTeX fragment, or None when no paper row matches.
    """
    ref, d, ours = _read_reference(reference_csv), done(df), paper_names()
    rows = []
    for r in ref.itertuples(index=False):
        methods = ours.get(r.method, (r.method,))
        sub = d[(d["benchmark_name"] == r.benchmark) & (d["n_tasks"] == int(r.n_tasks)) & d["method"].isin(methods)]
        sub = sub[on_paper_backbone(sub, getattr(r, "backbone", None))]
        labels = ordered_labels(sub)
        for lab, name in zip(labels, row_names(sub, labels)):
            g = sub[sub["label"] == lab]
            acc, aaa = cell_stats(g, "acc")[lab], cell_stats(g, "aaa")[lab]
            head = [f"T{int(r.table)} {r.benchmark} N={int(r.n_tasks)}", name]
            rows.append(head + ["Acc"] + _diff_cells(r.acc, r.acc_sd, acc) + [seeds_text([acc.n])])
            rows.append(["", "", "AAA"] + _diff_cells(r.aaa, r.aaa_sd, aaa) + [seeds_text([aaa.n])])
    if not rows:
        return None
    cols = ["Paper table, setting", "Method", "Metric", "Paper", "Ours", r"$\Delta$", "Within", "Seeds"]
    cells = pd.DataFrame(rows, columns=cols)
    caption = (
        f"Ours beside the paper (\\%). Paper: mean (its $\\pm$, standard deviation over 5 seeds); ours: "
        f"{stat_caption('sd')}. $\\Delta$ = ours $-$ paper; Within = $|\\Delta| \\le$ the paper's standard "
        "deviation + 1 point. A method's ``as released'' row (its authors' code as it ran) follows it. No marks: "
        "this table ranks nothing. -- = not reported or not run."
    )
    return render(cells, caption, "tab:reference", show_index=False, n_text_cols=3, size="footnotesize", colsep="3pt",
                  fit=True)


@dataclass(frozen=True)
class PaperColumn:
    """One column of a paper table: the runs with this registry benchmark name and number of tasks."""

    header: str
    benchmark_name: str
    n_tasks: int


@dataclass(frozen=True)
class PaperLayout:
    """A paper table: its columns and, for fixed layouts (Table 4), its rows in the paper's order."""

    caption: str
    columns: tuple[PaperColumn, ...]
    rows: tuple[str, ...] = ()
    # Methods of which at least one must have a run for the table to exist (Table 4 without ablations is empty).
    requires: tuple[str, ...] = ()


_CELL = "{cell}"  # filled per table by :func:`_cell_text` (the statistic and the marks)


def _cell_text(stat: str) -> str:
    return f"Each cell is Acc / AAA (\\%), {stat_caption(stat)}. {MARKS_TEXT} {EXTENDED_TEXT} -- = no finished run."
PAPER_TABLES = {
    2: PaperLayout(
        "ImageNet-R (paper Table 2). " + _CELL,
        tuple(PaperColumn(f"N={n}", "imagenet_r", n) for n in (5, 10, 20)),
    ),
    3: PaperLayout(
        "ImageNet-A and DomainNet (paper Table 3). " + _CELL,
        (PaperColumn("ImageNet-A (N=10)", "imagenet_a", 10), PaperColumn("DomainNet (N=5)", "domainnet", 5)),
    ),
    4: PaperLayout(
        "Ablation on ImageNet-R (paper Table 4): sd\\_lora\\_fixed\\_first = $W_0 + \\alpha \\bar{A}_1\\bar{B}_1$ "
        "(first direction fixed), sd\\_lora\\_single = $W_0 + \\alpha \\bar{A}\\bar{B}$ (one decoupled LoRA), "
        "sd\\_lora\\_no\\_rescale = old directions added with fixed weight. " + _CELL,
        tuple(PaperColumn(f"N={n}", "imagenet_r", n) for n in (5, 10)),
        rows=(*ablation_methods(), "sd_lora"),
        requires=ablation_methods(),
    ),
    6: PaperLayout(
        "CIFAR-100 and CUB-200 (paper Table 6). " + _CELL,
        (PaperColumn("CIFAR-100 (N=10)", "cifar100", 10), PaperColumn("CUB-200 (N=10)", "cub200", 10)),
    ),
}
EFFICIENCY_TABLE = 5
# Table 5 columns as the paper counts them: header, record `efficiency` key (then a fallback key for records written
# before it existed), divisor (parameters and features in millions), paper_efficiency.csv column.
EFFICIENCY_COLUMNS = (
    ("GFLOPs", ("gflops",), 1.0, "gflops"),
    ("Learnable w/o head (M)", ("learnable_params_excl_head",), 1e6, "learnable_params_m"),
    ("Stored features (M)", ("stored_features_paper", "stored_features"), 1e6, "stored_features_m"),
)
PAPER_EFFICIENCY_CSV = Path(__file__).resolve().parent.parent / "results" / "reference" / "paper_efficiency.csv"
PAPER_TABLE_IDS = tuple(sorted([*PAPER_TABLES, EFFICIENCY_TABLE]))


def paper_table_keys(reference_csv: Path | str | None, table_id: int) -> set[str] | None:
    """The reference CSV's method names of one paper table (the methods the paper reports there); None without a
    CSV (then every method with a ``paper_key`` counts as reported)."""
    if reference_csv is None:
        return None
    ref = _read_reference(reference_csv)
    return set(ref.loc[ref["table"] == table_id, "method"])


def _layout_labels(d: pd.DataFrame, layout: PaperLayout, keys: set[str] | None) -> tuple[list[str], list[str]]:
    """Paper rows and extended rows: the fixed rows (absent ones kept, shown as --) of a fixed layout, all paper
    rows; else every non-ablation label with data, split by :func:`row_blocks`."""
    if not layout.rows:
        return row_blocks(d, ordered_labels(d[~d["method"].isin(ablation_methods())]), keys)
    labels = []
    for method in layout.rows:
        found = sorted(set(d.loc[d["method"] == method, "label"]))
        labels.extend(found or [method])
    return labels, []


def _acc_aaa_table(df: pd.DataFrame, table_id: int, layout: PaperLayout, stat: str, keys: set[str] | None) -> str | None:
    d = done(df)
    subs = [d[(d["benchmark_name"] == c.benchmark_name) & (d["n_tasks"] == c.n_tasks)] for c in layout.columns]
    if all(s.empty for s in subs):
        return None
    if layout.requires and not any(s["method"].isin(layout.requires).any() for s in subs):
        return None
    paper, extended = _layout_labels(pd.concat(subs), layout, keys)
    labels = paper + extended
    data, counts = {lab: [] for lab in labels}, {lab: [] for lab in labels}
    for sub in subs:
        parts = []
        for metric in ("acc", "aaa"):
            stats = cell_stats(sub, metric)
            parts.append((stats, *_marks(sub, metric, stats, paper)))
        for lab in labels:
            a, b = (p[0].get(lab, EMPTY) for p in parts)
            cell = " / ".join(
                format_stat(p[0].get(lab, EMPTY), lab in p[1], kind=stat, tied=lab in p[2]) for p in parts
            )
            data[lab].append(MISSING if a.n == 0 and b.n == 0 else cell)
            counts[lab] += [a.n, b.n]
    headers = [c.header for c in layout.columns] + ["Seeds"]
    seeds, note = seeds_cells(pd.concat(subs), labels, counts)
    rows = [data[lab] + [n] for lab, n in zip(labels, seeds, strict=True)]
    cells = pd.DataFrame(rows, index=row_names(pd.concat(subs), labels), columns=headers)
    caption = layout.caption.replace(_CELL, _cell_text(stat)) + note
    return render(cells, caption, f"tab:paper{table_id}", align="c", extended=len(extended), fit=True)


def _paper_efficiency(d: pd.DataFrame, labels: list[str], ref: pd.DataFrame | None) -> dict[str, list[str]]:
    """Per label, the paper's Table 5 values (formatted; ``ref`` is the paper's Table 5, None: none), for labels on
    the paper's backbone with a paper row."""
    if ref is None:
        return {}
    ours = paper_names()
    out = {}
    for r in ref.to_dict("records"):
        methods = ours.get(r["method"], (r["method"],))
        for lab in labels:
            sub = d[(d["label"] == lab) & d["method"].isin(methods)]
            if not sub.empty and on_paper_backbone(sub, r.get("backbone")).all():
                out[lab] = [f"{float(r[c]):.{DECIMALS}f}" for *_, c in EFFICIENCY_COLUMNS]
    return out


def _efficiency_table(df: pd.DataFrame, stat: str, efficiency_csv: Path | str | None = PAPER_EFFICIENCY_CSV) -> str | None:
    d = done(df)
    d = d[(d["benchmark_name"] == "imagenet_r") & (d["n_tasks"] == 20) & ~d["method"].isin(ablation_methods())]
    if d.empty:
        return None
    # the paper's rows (its Table 5's methods), ranked; below the rule every other row, never marked (as Tables 2-6)
    ref = (_read_reference(efficiency_csv, need=("method", *(c for *_, c in EFFICIENCY_COLUMNS)))
           if efficiency_csv is not None and Path(efficiency_csv).exists() else None)
    ranked, extended = row_blocks(d, ordered_labels(d), None if ref is None else set(ref["method"]))
    labels = ranked + extended
    paper = _paper_efficiency(d, labels, ref)
    data, counts = {lab: [] for lab in labels}, {lab: [] for lab in labels}
    for i, (_, keys, scale, _) in enumerate(EFFICIENCY_COLUMNS):
        values = d.assign(_v=[_efficiency_value(rec, keys) / scale for rec in d["record"]])
        stats = cell_stats(values, "_v")
        best = best_rows(stats, ranked, higher=False)
        for lab in labels:
            cell = stats.get(lab, EMPTY)
            # These are properties of the configuration, identical across seeds; a spread of 0.00 would be noise.
            show_se = cell.n > 1 and not math.isnan(cell.sd) and cell.sd > 0
            data[lab].append(format_stat(cell, lab in best, show_se=show_se, kind=stat))
            data[lab].append(paper[lab][i] if lab in paper else MISSING)
            counts[lab].append(cell.n)
    if all(v == MISSING for row in data.values() for v in row[::2]):
        return None
    headers = [(h, who) for h, *_ in EFFICIENCY_COLUMNS for who in ("Ours", "Paper")] + [("Seeds", "")]
    rows = [data[lab] + [seeds_text(counts[lab])] for lab in labels]
    cells = pd.DataFrame(rows, index=row_names(d, labels), columns=pd.MultiIndex.from_tuples(headers))
    caption = (
        "Efficiency on ImageNet-R, N=20 (paper Table 5), counted as the paper counts: inference GFLOPs per image "
        "(attention included), learnable parameters of the last task without the classification head (millions) "
        f"and stored features (millions), mean ({STAT_TEXT[stat]} where seeds differ) over seeds, lowest of the "
        "paper's methods in bold; beside each, the paper's value (-- = not reported, or not on its backbone). "
        f"{EXTENDED_TEXT}" + _stored_note(d, labels)
    )
    return render(cells, caption, f"tab:paper{EFFICIENCY_TABLE}", extended=len(extended), fit=True)


def _stored_note(d: pd.DataFrame, labels: list[str]) -> str:
    """A footnote for methods that keep more than the paper's count of stored features (HiDe-Prompt: the paper
    counts one mean per class; the harness keeps every statistic of its ``storage`` setting, for TII and WTP)."""
    notes = []
    for lab in labels:
        recs = d.loc[d["label"] == lab, "record"]
        kept = [_efficiency_value(rec, ("stored_features",)) for rec in recs]
        counted = [_efficiency_value(rec, ("stored_features_paper",)) for rec in recs]
        if any(not math.isnan(k) and not math.isnan(c) and k != c for k, c in zip(kept, counted)):
            mean = sum(kept) / len(kept) / 1e6
            notes.append(lab.replace("_", r"\_") + f" {mean:.{DECIMALS}f}")
    if not notes:
        return ""
    return (" Stored features kept in all by the harness where they exceed the paper's count (HiDe-Prompt: the "
            "paper counts one mean per class; the harness also keeps its per-class statistics, by default 10 "
            "centroids with mean and variance, for task-identity inference and within-task prediction): "
            + ", ".join(notes) + " M.")


def _efficiency_value(rec: dict, keys: tuple[str, ...]) -> float:
    """The first of ``keys`` that the record's ``efficiency`` holds, as a float; NaN when none does."""
    eff = rec.get("efficiency") or {}
    for key in keys:
        value = eff.get(key)
        if value is not None and not isinstance(value, bool):
            return float(value)
    return math.nan


def paper_table(
    df: pd.DataFrame, table_id: int, stat: str = "sd", reference_csv: Path | str | None = PAPER_RESULTS,
    efficiency_csv: Path | str | None = PAPER_EFFICIENCY_CSV,
) -> str | None:
    """One of the paper's table layouts filled with our runs.

    Args:
        df: Frame from :func:`analysis.records.load_records`.
        table_id: 2 (ImageNet-R N=5/10/20), 3 (ImageNet-A N=10, DomainNet N=5), 4 (ablations on ImageNet-R
            N=5/10), 5 (efficiency on ImageNet-R N=20) or 6 (CIFAR-100 N=10, CUB-200 N=10).
        stat: ``sd`` or ``se`` beside each mean.
        reference_csv: The paper's numbers: a method is a paper row of Tables 2, 3 and 6 when the CSV has it in
            that table (default: the committed ``results/reference/paper_results.csv``; None: every method with a
            ``paper_key``). Table 4's rows are fixed (the ablations and SD-LoRA, as the paper's).
        efficiency_csv: The paper's Table 5 (``results/reference/paper_efficiency.csv``), set beside ours in
            Table 5; None leaves the paper's columns empty.

    Returns:
        LaTeX fragment, or None when no cell of the table has a finished run.

    Raises:
        ValueError: For an unknown ``table_id``.
    """
    check_stat(stat)
    if table_id == EFFICIENCY_TABLE:
        return _efficiency_table(df, stat, efficiency_csv)
    if table_id not in PAPER_TABLES:
        raise ValueError(f"unknown paper table {table_id!r}; valid ids are {list(PAPER_TABLE_IDS)}")
    return _acc_aaa_table(df, table_id, PAPER_TABLES[table_id], stat, paper_table_keys(reference_csv, table_id))
