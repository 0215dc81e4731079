"""One call from results folders to every table, figure and the one-page report: ``make_report``.

Writes ``<out>/tables/`` (``main.tex``, the paper tables that have data, ``extended.tex``, ``reference.tex``,
``summary.csv``),
``<out>/figures/`` (accuracy curves, SD-LoRA mechanism figures, the critical-difference diagram when at least 3
benchmarks x 3 methods have results, one accuracy-matrix heatmap per benchmark) and ``<out>/report.html``
(:mod:`analysis.html`). ``<out>`` is the results folder; with several folders (records of a new method beside
committed ones) the caller names it. The interpolation and proximity figures need model weights, so they are drawn
by whoever computes them (``analysis.figures``), not here.
"""

from __future__ import annotations

from pathlib import Path

from analysis import figures, html, stats, tables
from analysis.records import benchmark_order, done, load_records, records_frame, smoke_count, summary
from core.errors import UserError

# File stems of the record-based figures (the defaults of the drawing functions), for removing stale ones.
FIGURE_NAMES = ("accuracy", "magnitudes", "residuals", "critical_difference")
FIGURE_TITLES = {
    "accuracy": "Accuracy after each task",
    "magnitudes": "SD-LoRA: learned magnitudes",
    "residuals": "SD-LoRA: residual of the new direction on the old ones",
    "critical_difference": "Average rank across benchmarks (critical-difference diagram)",
}
MATRIX_PREFIX = "acc_matrix__"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # newline="\n": the same bytes on every platform, so a diff of an artefact means a change of result.
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    return path


def write_tables(df, tables_dir: Path, reference_csv: Path | None = None, stat: str = "sd") -> list[Path]:
    """Write ``main.tex``, ``table<N>.tex`` (only tables with data), ``extended.tex``, ``reference.tex`` and
    ``summary.csv``.

    Args:
        df: Frame from :func:`analysis.records.load_records`.
        tables_dir: Output folder.
        reference_csv: The paper's numbers (``results/reference/paper_results.csv``); None skips ``reference.tex``
            (the paper tables then take the methods the paper reports in each table from the committed CSV).
        stat: ``sd`` or ``se`` beside each mean.

    Returns:
        Paths written.
    """
    n_smoke = smoke_count(df)  # stand-in numbers say so in every caption

    def write(name: str, latex: str) -> Path:
        return _write(tables_dir / name, tables.mark_smoke(latex, n_smoke))

    written = [write("main.tex", tables.main_table(df, stat))]
    for table_id in tables.PAPER_TABLE_IDS:
        latex = tables.paper_table(df, table_id, stat, reference_csv or tables.PAPER_RESULTS)
        if latex is not None:
            written.append(write(f"table{table_id}.tex", latex))
    latex = tables.extended_table(df, stat)
    if latex is not None:
        written.append(write("extended.tex", latex))
    if reference_csv is not None:
        latex = tables.reference_table(df, reference_csv)
        if latex is not None:
            written.append(write("reference.tex", latex))
    csv = summary(df).to_csv(index=False, float_format="%.4f", lineterminator="\n")
    written.append(_write(tables_dir / "summary.csv", csv))
    return written


def write_figures(df, figures_dir: Path) -> list[Path]:
    """Draw every record-based figure that has data; return the PNG and PDF paths written."""
    written = []
    for draw in (figures.accuracy_curves, figures.magnitude_plot, figures.residual_plot):
        paths = draw(df, figures_dir)
        written.extend(paths or [])
    written.extend(figures.critical_difference_plot(stats.friedman_nemenyi(stats.rank_table(df)), figures_dir) or [])
    return written


def matrix_job(sub, reference: str, chosen: tuple[str, ...] = ()) -> dict:
    """The run whose accuracy matrix a benchmark shows: a chosen job of it, else the reference method's lowest seed,
    else its first run."""
    for pick in (sub[sub["job_id"].isin(chosen)], sub[sub["method"] == reference], sub):
        if len(pick):
            return pick.sort_values(["seed", "job_id"]).iloc[0]["record"]
    raise ValueError("no run to show")


def write_matrices(df, figures_dir: Path, reference: str, chosen: tuple[str, ...] = ()) -> dict[str, tuple[str, Path]]:
    """One accuracy-matrix heatmap per benchmark; benchmark -> (job id, PNG path)."""
    d, out = done(df), {}
    for bench in benchmark_order(d):
        rec = matrix_job(d[d["benchmark"] == bench], reference, chosen)
        paths = figures.accuracy_matrix_plot(rec, figures_dir, f"{MATRIX_PREFIX}{rec['job_id']}")
        if paths:
            out[bench] = (rec["job_id"], paths[0])
    return out


def load_folders(results_dirs: list[Path]):
    """Records of several results folders as one frame, and job id -> its folder.

    Raises:
        UserError: When one job id has records in two folders (which one counts would be a guess).
    """
    frames, folder_of = [], {}
    for folder in results_dirs:
        frame = load_records(folder)
        for job in frame["job_id"]:
            if job in folder_of:
                raise UserError(f"job {job} has a record in both {folder_of[job]} and {folder}; pass each job's "
                                "folder once (remove or move one of the two records)")
            folder_of[job] = folder
        frames.append(frame.drop(columns="label"))
    rows = [row for frame in frames for row in frame.to_dict("records")]
    return records_frame(rows), folder_of


def _remove_stale(folder: Path, patterns: tuple[str, ...], keep: list[Path]) -> None:
    """Delete artefacts of an earlier report that this one did not rewrite (e.g. a table whose runs were removed).

    Only this module's own file names are touched, so hand-made files in the folder survive.
    """
    keep_set = {p.resolve() for p in keep}
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            if path.resolve() not in keep_set:
                path.unlink()


def make_report(results_dirs, reference_csv: Path | None = None, stat: str = "sd", out_dir: Path | None = None,
                reference: str | None = None, stale: dict[str, str] | None = None,
                matrix_jobs: tuple[str, ...] = ()) -> list[Path]:
    """Turn ``<results_dir>/records/*.json`` of one or several folders into tables, figures and ``report.html``.

    Args:
        results_dirs: A results folder holding ``records/``, or a list of them (their records form one table).
        reference_csv: Optional CSV of the paper's numbers for ``tables/reference.tex``.
        stat: ``sd`` (default, the paper's +-) or ``se`` beside each mean.
        out_dir: Where ``tables/``, ``figures/`` and ``report.html`` go; default the (single) results folder.
        reference: Method every other one is compared with in the report, besides the best (None: ``sd_lora``,
            where it ran; a method named here must have a done record).
        stale: Job id -> why its record is stale, from the runner's status (listed in the report).
        matrix_jobs: Jobs whose accuracy matrix the report shows (per benchmark; default the reference's lowest seed).

    Returns:
        The written paths, sorted.

    Raises:
        FileNotFoundError: When ``records/`` or ``reference_csv`` does not exist.
        ValueError: When there is no finished record to report on, or ``stat`` is unknown.
        UserError: When several folders are given without ``out_dir``, one job is in two folders, or ``reference``
            or a ``matrix_jobs`` entry names no done record.
    """
    dirs = [Path(d) for d in ([results_dirs] if isinstance(results_dirs, (str, Path)) else results_dirs)]
    if len(dirs) > 1 and out_dir is None:
        raise UserError("several --results-dir folders need --out DIR for the tables and report (e.g. --out "
                        "results/compare), so no source folder is written into")
    out = Path(out_dir) if out_dir is not None else dirs[0]
    tables.check_stat(stat)
    if reference_csv is not None and not Path(reference_csv).is_file():
        raise FileNotFoundError(f"reference csv {reference_csv} not found; see results/reference/")
    df, folder_of = load_folders(dirs)
    if done(df).empty:
        raise ValueError(f"no record with status 'done' under {', '.join(str(d / 'records') for d in dirs)}; "
                         "nothing to report")
    ran = sorted(set(done(df)["method"]))
    if reference is not None and reference not in ran:
        raise UserError(f"--reference-method {reference} has no done record; pick one of {', '.join(ran)}")
    reference = reference or "sd_lora"
    unknown = sorted(set(matrix_jobs) - set(done(df)["job_id"]))
    if unknown:  # checked before anything is written
        raise UserError(f"--matrix-job {unknown[0]} has no done record; pick a job id from records/*.json")
    written = write_tables(df, out / "tables", reference_csv, stat)
    written += write_figures(df, out / "figures")
    matrices = write_matrices(df, out / "figures", reference, tuple(matrix_jobs))
    written += [p.with_suffix(s) for _, p in matrices.values() for s in (".png", ".pdf")]
    _remove_stale(out / "tables", ("table[0-9].tex", "extended.tex", "reference.tex"), written)
    _remove_stale(out / "figures", tuple(f"{n}.{ext}" for n in FIGURE_NAMES for ext in ("png", "pdf"))
                  + (f"{MATRIX_PREFIX}*.png", f"{MATRIX_PREFIX}*.pdf"), written)
    shown = {FIGURE_TITLES[p.stem]: p for p in written if p.suffix == ".png" and p.stem in FIGURE_TITLES}
    ranked = stats.rank_table(df)
    cd_note = "" if "critical_difference" in {p.stem for p in written} else (
        f"No critical-difference diagram: it needs at least {stats.MIN_CD_BENCHMARKS} benchmarks and "
        f"{stats.MIN_CD_METHODS} methods with results on all of them (here {ranked.shape[0]} x {ranked.shape[1]}).")
    page = html.render_report(df, dirs, shown, matrices, stat, reference, folder_of, stale, cd_note)
    written.append(_write(out / "report.html", page))
    return sorted(written)
