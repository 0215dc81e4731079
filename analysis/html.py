"""``report.html``: one self-contained page per results folder (jinja2 template + pandas ``Styler``).

Everything comes from the records frame: provenance, per-benchmark tables with the marks of :mod:`analysis.tables`,
paired comparisons (:mod:`analysis.stats`), figures embedded as base64 PNG (no network, opens from disk), the
efficiency table and the jobs that did not finish with the command that reruns them. No clock is read and every
figure has fixed bytes, so the same records give the same page.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

import jinja2
import pandas as pd
from pandas.io.formats.style import Styler

from analysis import stats
from analysis.records import (
    SMOKE_TEXT,
    TASK_ERRORS,
    ablation_methods,
    benchmark_order,
    done,
    ordered_labels,
    reference_methods,
    seed_count,
    smoke_count,
    task_errors,
)
from analysis.tables import DECIMALS, EMPTY, STAT_TEXT, Stat, best_rows, cell_stats, check_stat

TEMPLATE = "report.html.j2"
# Columns of a benchmark's results table: record metric, header; Acc and AAA carry the marks.
RESULT_COLUMNS = (("acc", "Acc"), ("aaa", "AAA"), ("forgetting", "Forgetting"), ("til_acc", "Task-incr. Acc"))
MARKED = ("acc", "aaa")
EFFICIENCY = (("gflops", "GFLOPs", 1.0), ("learnable_params", "Learnable (M)", 1e6),
              ("learnable_params_excl_head", "Learnable w/o head (M)", 1e6),
              ("stored_features", "Stored features (M)", 1e6))


def _html_table(frame: pd.DataFrame, uuid: str, classes: pd.DataFrame | None = None, sortable: bool = True) -> str:
    """A frame of text cells as an HTML table (escaped; fixed ids so the page has the same bytes every time)."""
    styler = Styler(frame, uuid=uuid, cell_ids=False).hide(axis="index").format(escape="html")
    if classes is not None:
        styler = styler.set_td_classes(classes)
    attrs = 'class="sortable"' if sortable else ""
    return styler.set_table_attributes(attrs).to_html()


def _cell(stat: Stat, kind: str) -> str:
    if stat.n == 0 or math.isnan(stat.mean):
        return "--"
    spread = stat.spread(kind)
    text = f"{stat.mean:.{DECIMALS}f}"
    return text if math.isnan(spread) else f"{text} ± {spread:.{DECIMALS}f}"


def results_table(sub: pd.DataFrame, uuid: str, stat: str) -> str:
    """One benchmark: label, seeds, each metric as ``mean ± stat``; Acc and AAA carry the bold/underline marks."""
    labels = ordered_labels(sub)
    unranked = set(sub.loc[sub["method"].isin(reference_methods() | set(ablation_methods())), "label"])
    ranked = [lab for lab in labels if lab not in unranked]  # neither an upper bound nor an ablation is marked
    cells = pd.DataFrame({"Method": labels, "Seeds": [seed_count(sub, lab) for lab in labels]})
    classes = pd.DataFrame("", index=cells.index, columns=cells.columns)
    for metric, header in RESULT_COLUMNS:
        per = cell_stats(sub, metric)
        cells[header] = [_cell(per.get(lab, EMPTY), stat) for lab in labels]
        classes[header] = ""
        if metric in MARKED:
            best = best_rows(per, ranked)
            tied = stats.indistinguishable(sub, metric, ranked, best) if best else set()
            classes[header] = ["best" if lab in best else "tied" if lab in tied else "" for lab in labels]
    return _html_table(cells, uuid, classes)


def task_table(sub: pd.DataFrame, uuid: str, stat: str) -> str:
    """One benchmark's rows that recorded ``task_confusion``: where their class-incremental errors go
    (:func:`analysis.records.task_errors`), each column as ``mean ± stat``; empty when no row recorded it."""
    frame = task_errors(sub)
    if frame.empty:
        return ""
    labels = ordered_labels(frame)
    cells = pd.DataFrame({"Method": labels, "Seeds": [str(int((frame["label"] == lab).sum())) for lab in labels]})
    for metric, header in TASK_ERRORS.items():
        per = cell_stats(frame, metric)
        cells[header] = [_cell(per.get(lab, EMPTY), stat) for lab in labels]
    return _html_table(cells, uuid)


def comparison_table(comp: pd.DataFrame, uuid: str) -> str:
    """Rows of :func:`analysis.stats.comparisons` for one benchmark as text."""
    cells = pd.DataFrame({
        "Method": comp["label"],
        "Versus": [f"{v} ({role})" for v, role in zip(comp["versus"], comp["role"])],
        "Shared seeds": comp["n_shared"].astype(str),
        "Difference": [f"{d:+.2f}" for d in comp["diff"]],
        "95% interval": [stats.interval_text(lo, hi) for lo, hi in zip(comp["lo"], comp["hi"])],
        "Distinguishable": ["no" if i else ("yes" if not math.isnan(lo) else "--")
                            for i, lo in zip(comp["indistinguishable"], comp["lo"])],
        "p": [_p_text(p) for p in comp["p"]],
        "p (Holm)": [_p_text(p) for p in comp["p_holm"]],
        "P(improve)": [f"{p:.2f}" for p in comp["p_improve"]],
    })
    return _html_table(cells.reset_index(drop=True), uuid)


def _p_text(p: float) -> str:
    """A p-value to three decimals; below 0.001 as ``<0.001``; ``--`` without one."""
    return "--" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _first(values) -> str:
    values = sorted({str(v) for v in values if v not in (None, "")})
    return ", ".join(values) if values else "--"


def provenance_table(df: pd.DataFrame, results_dirs: list[Path]) -> str:
    """Suite, folders, code, package versions, backbones and weight hashes, devices, wall time and GPU-hours."""
    recs = list(df["record"])
    prov = [r.get("provenance") or {} for r in recs]
    commits = _first(f"{p.get('git_commit', '')[:12]}{' (dirty)' if p.get('git_dirty') else ''}"
                     for p in prov if p.get("git_commit"))
    versions = _first(", ".join(f"{k} {v}" for k, v in sorted((p.get("versions") or {}).items())) for p in prov)
    weights = _first(f"{p.get('backbone_tag', '')}: sha256 {str(p.get('weights_sha256') or '--')[:16]}"
                     for p in prov if p.get("backbone_tag"))
    seconds = [float((r.get("timings") or {}).get("total_s") or 0.0) for r in recs]
    on_gpu = [s for s, p in zip(seconds, prov) if str(p.get("device", "")).startswith("cuda")]
    starts, ends = _first(p.get("started") for p in prov).split(", "), _first(p.get("finished") for p in prov)
    rows = [
        ("Suite", _first(r.get("suite") for r in recs)),
        ("Results folders", ", ".join(d.name for d in results_dirs)),
        ("Git commit", commits),
        ("Package versions", versions),
        ("Backbones", _first(df["backbone"])),
        ("Backbone weights", weights),
        ("Devices", _first(p.get("device") for p in prov)),
        ("Hosts", _first(p.get("hostname") for p in prov)),
        ("Runs started", f"{starts[0]} to {ends.split(', ')[-1]}" if starts[0] != "--" else "--"),
        ("Wall time, sum over jobs", f"{sum(seconds) / 3600:.2f} h ({sum(seconds):.0f} s)"),
        ("GPU-hours", f"{sum(on_gpu) / 3600:.2f}"),
    ]
    return _html_table(pd.DataFrame(rows, columns=["Item", "Value"]), "provenance", sortable=False)


def efficiency_table(df: pd.DataFrame) -> str:
    """Mean of the record's ``efficiency`` fields per label x benchmark (properties of a configuration)."""
    d = done(df)
    rows = []
    for bench in benchmark_order(d):
        sub = d[d["benchmark"] == bench]
        for lab in ordered_labels(sub):
            effs = [rec.get("efficiency") or {} for rec in sub.loc[sub["label"] == lab, "record"]]
            row = [lab, bench]
            for key, _, scale in EFFICIENCY:
                vals = [float(e[key]) / scale for e in effs if isinstance(e.get(key), (int, float))]
                row.append(f"{sum(vals) / len(vals):.{DECIMALS}f}" if vals else "--")
            rows.append(row)
    cols = ["Method", "Benchmark", *(h for _, h, _ in EFFICIENCY)]
    return _html_table(pd.DataFrame(rows, columns=cols), "efficiency")


def rerun_command(rec: dict, results_dir: Path, stale: bool) -> str:
    """The ``run_suite.py`` line that reruns exactly this job (``--retry-failed`` or, for a stale record, ``--force``)."""
    flag = "--force" if stale else "--retry-failed"
    return (f"python run_suite.py --suite {rec.get('suite', '?')} --results-dir {results_dir} "
            f"--methods {rec.get('method', '?')} --benchmarks {rec.get('benchmark', '?')} "
            f"--seeds {rec.get('seed', '?')} {flag}")


def problems_table(df: pd.DataFrame, folder_of: dict[str, Path], stale: dict[str, str]) -> str | None:
    """Jobs whose record is not done, and stale ones, with the first line of their error and the rerun command."""
    rows = []
    for r in df.itertuples(index=False):
        is_stale = r.job_id in stale
        if r.status == "done" and not is_stale:
            continue
        error = str(r.record.get("error") or "").strip().splitlines() or [""]
        # The first line of the error, unless it is a bare "Traceback ..." header: then the exception, its last line.
        why = stale.get(r.job_id) or (error[-1] if error[0].startswith("Traceback") else error[0])
        rows.append([r.job_id, "stale" if is_stale else r.status, why[:300],
                     rerun_command(r.record, folder_of.get(r.job_id, Path(".")), is_stale)])
    if not rows:
        return None
    return _html_table(pd.DataFrame(rows, columns=["Job", "Status", "Error", "Rerun with"]), "problems")


def _png(path: Path | None) -> str | None:
    return base64.b64encode(path.read_bytes()).decode("ascii") if path is not None and path.is_file() else None


def render_report(df: pd.DataFrame, results_dirs: list[Path], figure_paths: dict[str, Path], matrices: dict,
                  stat: str = "sd", reference: str = "sd_lora", folder_of: dict[str, Path] | None = None,
                  stale: dict[str, str] | None = None, cd_note: str = "") -> str:
    """The page as a string.

    Args:
        df: Frame of every record (done and not).
        results_dirs: The folders the records came from (named in the provenance).
        figure_paths: Title -> PNG path of each figure to embed, in display order.
        matrices: Benchmark -> (job id, PNG path) of the accuracy-matrix heatmap shown under its table.
        stat: ``sd`` or ``se`` beside each mean.
        reference: Method every other is compared with, besides the best.
        folder_of: Job id -> the folder of its record (for rerun commands).
        stale: Job id -> why its record is stale (made by other code), as the runner's status reports it.
        cd_note: Why there is no critical-difference diagram, when there is none.
    """
    check_stat(stat)
    d = done(df)
    comp = stats.comparisons(d, "acc", reference)
    benches = []
    for i, bench in enumerate(benchmark_order(d)):
        sub = d[d["benchmark"] == bench]
        c = comp[comp["benchmark"] == bench]
        job, png = matrices.get(bench, (None, None))
        benches.append({"name": bench, "table": results_table(sub, f"results{i}", stat),
                        "tasks": task_table(sub, f"tasks{i}", stat),
                        "comparisons": comparison_table(c, f"comparisons{i}") if len(c) else "",
                        "matrix": _png(png), "matrix_job": job})
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), keep_trailing_newline=True)
    suite = _first(r.get("suite") for r in df["record"])
    problems = problems_table(df, folder_of or {}, stale or {})
    page = env.get_template(TEMPLATE).render(
        title=f"sdlora-bench report: {suite}",
        n_records=len(df), n_done=len(d), n_other=len(df) - len(d),
        stat_text=STAT_TEXT[stat].split(",")[0], metric_name="Acc",
        provenance=_safe(provenance_table(df, results_dirs)),
        benchmarks=[{**b, "table": _safe(b["table"]), "tasks": _safe(b["tasks"]), "comparisons": _safe(b["comparisons"])}
                    for b in benches],
        figures=[{"title": t, "data": _png(p)} for t, p in figure_paths.items() if _png(p)],
        cd_note=cd_note, efficiency=_safe(efficiency_table(df)),
        problems=_safe(problems) if problems else "",
        stale_note="" if stale is not None else " (stale records are checked by the runner's status, not here)",
        smoke=SMOKE_TEXT.format(n=n_smoke) if (n_smoke := smoke_count(df)) else "",
    )
    return page


def _safe(html: str) -> jinja2.utils.markupsafe.Markup:
    """Mark Styler's already-escaped HTML as safe for the autoescaping template."""
    return jinja2.utils.markupsafe.Markup(html)
