"""One call from a results directory to every table and figure: ``make_report``.

Writes ``<results_dir>/tables/`` (``main.tex``, the paper tables that have data, ``reference.tex``, ``summary.csv``)
and ``<results_dir>/figures/`` (accuracy curves and SD-LoRA mechanism figures). The interpolation and proximity
figures need model weights, so they are drawn by whoever computes them (``analysis.figures``), not here.
"""

from __future__ import annotations

from pathlib import Path

from analysis import figures, tables
from analysis.records import done, load_records, summary

# File stems of the record-based figures (the defaults of the drawing functions), for removing stale ones.
FIGURE_NAMES = ("accuracy", "magnitudes", "residuals")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # newline="\n": the same bytes on every platform, so a diff of an artefact means a change of result.
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    return path


def write_tables(df, tables_dir: Path, reference_csv: Path | None = None) -> list[Path]:
    """Write ``main.tex``, ``table<N>.tex`` (only tables with data), ``reference.tex`` and ``summary.csv``.

    Args:
        df: Frame from :func:`analysis.records.load_records`.
        tables_dir: Output folder.
        reference_csv: The paper's numbers (``results/reference/paper_results.csv``); None skips ``reference.tex``.

    Returns:
        Paths written.
    """
    written = [_write(tables_dir / "main.tex", tables.main_table(df))]
    for table_id in tables.PAPER_TABLE_IDS:
        latex = tables.paper_table(df, table_id)
        if latex is not None:
            written.append(_write(tables_dir / f"table{table_id}.tex", latex))
    if reference_csv is not None:
        latex = tables.reference_table(df, reference_csv)
        if latex is not None:
            written.append(_write(tables_dir / "reference.tex", latex))
    csv = summary(df).to_csv(index=False, float_format="%.4f", lineterminator="\n")
    written.append(_write(tables_dir / "summary.csv", csv))
    return written


def write_figures(df, figures_dir: Path) -> list[Path]:
    """Draw every record-based figure that has data; return the PNG and PDF paths written."""
    written = []
    for draw in (figures.accuracy_curves, figures.magnitude_plot, figures.residual_plot):
        paths = draw(df, figures_dir)
        written.extend(paths or [])
    return written


def _remove_stale(folder: Path, patterns: tuple[str, ...], keep: list[Path]) -> None:
    """Delete artefacts of an earlier report that this one did not rewrite (e.g. a table whose runs were removed).

    Only this module's own file names are touched, so hand-made files in the folder survive.
    """
    keep_set = {p.resolve() for p in keep}
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            if path.resolve() not in keep_set:
                path.unlink()


def make_report(results_dir: Path, reference_csv: Path | None = None) -> list[Path]:
    """Turn ``<results_dir>/records/*.json`` into tables and figures.

    Args:
        results_dir: Results directory holding ``records/``.
        reference_csv: Optional CSV of the paper's numbers for ``tables/reference.tex``.

    Returns:
        The written paths, sorted.

    Raises:
        FileNotFoundError: When ``records/`` or ``reference_csv`` does not exist.
        ValueError: When there is no finished record to report on.
    """
    results_dir = Path(results_dir)
    if reference_csv is not None and not Path(reference_csv).is_file():
        raise FileNotFoundError(f"reference csv {reference_csv} not found; see results/reference/")
    df = load_records(results_dir)
    if done(df).empty:
        raise ValueError(f"no record with status 'done' under {results_dir / 'records'}; nothing to report")
    written = write_tables(df, results_dir / "tables", reference_csv)
    written += write_figures(df, results_dir / "figures")
    _remove_stale(results_dir / "tables", ("table[0-9].tex", "reference.tex"), written)
    _remove_stale(results_dir / "figures", tuple(f"{n}.{ext}" for n in FIGURE_NAMES for ext in ("png", "pdf")), written)
    return sorted(written)
