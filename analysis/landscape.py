"""2-D loss landscapes around a saved task solution (beyond the paper, which shows 1-D paths only: docs/sdlora.md
section 9, Fig. 4).

The origin is always the job's solution after task T (``analysis.solutions``: LoRA updates merged, one plain ViT).
Two kinds of plane through it:

* ``random``: two filter-normalised random directions (Li et al., "Visualizing the Loss Landscape of Neural Nets",
  NeurIPS 2018, section 4). Each direction is Gaussian, then every row of every tensor (an output neuron; for the
  patch-embedding convolution a filter) is rescaled to the norm of the same row of the weights, so the picture does
  not depend on the scale of each neuron. 1-D tensors (biases, LayerNorm) get a zero direction, as Li et al. do
  for biases and batch norm. Coordinates ``alpha, beta`` in ``[-span, span]``: 1 moves every row by its own norm.
* ``plane``: the plane through the solutions after tasks T-2, T-1 and T: origin at W_T, first axis along
  W_{T-1} - W_T, second axis the Gram-Schmidt remainder of W_{T-2} - W_T; both unit Frobenius norm, so
  coordinates are distances in weight space and the figure keeps the true geometry (equal aspect). The grid covers
  the three points padded on each side by ``span / 2`` times their largest pairwise distance.

Perturbed tensors (``params``): ``adapted`` (default) = what the method changes, i.e. for LoRA methods the merged
``qkv`` weight of every block (the whole fused matrix that the merged evaluation uses, all of q, k, v) and for full
fine-tuning every backbone tensor; ``backbone`` = every backbone tensor. The head stays at W_T's everywhere: its
rows for old classes equal the earlier solutions' under old-logit masking, and perturbing the classifier would mix
class-bias effects into a picture of the representation.

Losses: cross-entropy over every class seen at T, evaluated separately on the old tasks' test samples (tasks < T,
pooled) and on the new task's (T); accuracies are recorded beside them. Each grid point sees the same fixed-seed
subset of at most ``max_samples`` test samples (half old, half new), so the surface is smooth.

Cost: ``resolution**2 * max_samples`` forward passes. Defaults (21 x 21, 500 samples) on the quick suite's tiny ViT:
about 75 s on one free CPU core, 194 s measured on a busy 2-core machine (docs/analysis.md); ViT-B/16 needs a GPU.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from analysis.figures import save_figure
from analysis.solutions import (
    Solution,
    accuracy,
    job_solutions,
    load_solution,
    load_test_samples,
    mean_loss,
    plain_model,
    predict,
)
from core.config import check
from core.errors import UserError
from runner.env import resolve_device
from runner.reload import method_fields

MODES = ("random", "plane")
PARAMS = ("adapted", "backbone")
_RC = {"font.size": 8, "axes.titlesize": 8, "legend.fontsize": 7, "svg.hashsalt": "sdlora"}


@dataclass(frozen=True)
class LandscapeOptions:
    """Attributes:
    mode: ``random`` (filter-normalised directions) or ``plane`` (through the solutions after T-2, T-1, T).
    resolution: grid points per axis (odd in random mode puts the solution itself on the grid).
    span: random: half-width of the grid in direction units; plane: padding in units of half the largest distance
        between the three solutions.
    max_samples: test samples per grid point (old and new tasks share it evenly); None: all (slow).
    params: ``adapted`` (what the method changes) or ``backbone`` (every backbone tensor).
    seed: seed of the random directions and of the test-sample subset.
    batch_size: evaluation batch size.
    device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``.
    """

    mode: str = "random"
    resolution: int = 21
    span: float = 1.0
    max_samples: int | None = 500
    params: str = "adapted"
    seed: int = 0
    batch_size: int = 500
    device: str = "auto"

    def __post_init__(self) -> None:
        check(self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        check(self.params in PARAMS, f"params must be one of {', '.join(PARAMS)}, got {self.params!r}")
        check(self.resolution >= 3, f"resolution must be >= 3, got {self.resolution}")
        check(self.span > 0, f"span must be > 0, got {self.span}")
        check(self.max_samples is None or self.max_samples >= 2, "max_samples must be >= 2 (or None for all)")
        check(self.batch_size >= 1, "batch_size must be >= 1")


# ---------------------------------------------------------------------------------------------- directions
def filter_normalized_direction(weights: Mapping[str, torch.Tensor], generator: torch.Generator) -> Solution:
    """A Gaussian direction with every row's norm set to the norm of the same row of ``weights`` (Li et al. 2018).

    Rows are along the first dimension (output neurons, conv filters); 1-D tensors get zeros. Drawn on the CPU in
    sorted key order, so a seed gives the same direction on every device.
    """
    out = {}
    for key in sorted(weights):
        w = weights[key].detach().cpu().float()
        if w.dim() < 2:
            out[key] = torch.zeros_like(w)
            continue
        d = torch.randn(w.shape, generator=generator).reshape(w.shape[0], -1)
        rows = w.reshape(w.shape[0], -1)
        d = d * (rows.norm(dim=1, keepdim=True) / d.norm(dim=1, keepdim=True).clamp_min(1e-12))
        out[key] = d.reshape(w.shape)
    return out


def random_directions(center: Mapping[str, torch.Tensor], seed: int = 0) -> tuple[Solution, Solution]:
    """Two filter-normalised directions around ``center`` from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return filter_normalized_direction(center, g), filter_normalized_direction(center, g)


def _dot(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    return float(sum((a[k].double() * b[k].double()).sum() for k in a))


def _combine(terms: list[tuple[float, Mapping[str, torch.Tensor]]]) -> Solution:
    """sum_i c_i * W_i over the keys of the first term, in float64."""
    keys = list(terms[0][1])
    return {k: sum(c * w[k].double() for c, w in terms) for k in keys}


def plane_basis(origin: Mapping[str, torch.Tensor], p1: Mapping[str, torch.Tensor],
                p2: Mapping[str, torch.Tensor]) -> tuple[Solution, Solution, list[tuple[float, float]]]:
    """Orthonormal axes (u, v) of the plane through three solutions, and their coordinates in it.

    ``u = (p1 - origin) / ||p1 - origin||``, ``v`` = Gram-Schmidt remainder of ``p2 - origin``, normalised (Frobenius
    norm over all tensors together, in float64). ``origin + x u + y v`` reconstructs each point at its coordinates.

    Returns:
        ``(u, v, [(0, 0), (x1, 0), (x2, y2)])`` with u and v as float32 tensors.

    Raises:
        ValueError: When the points coincide or are collinear (no plane).
    """
    a = _combine([(1.0, p1), (-1.0, origin)])
    b = _combine([(1.0, p2), (-1.0, origin)])
    norm_a = math.sqrt(_dot(a, a))
    if norm_a == 0:
        raise ValueError("the solutions after T-1 and T coincide: no plane through them")
    u = {k: t / norm_a for k, t in a.items()}
    bu = _dot(b, u)
    rest = _combine([(1.0, b), (-bu, u)])
    norm_rest = math.sqrt(_dot(rest, rest))
    # Relative to float32 rounding of the inputs: a remainder this small is noise, not a second direction.
    if norm_rest <= 1e-5 * math.sqrt(_dot(b, b)):
        raise ValueError("the three solutions are collinear: no unique plane through them")
    v = {k: t / norm_rest for k, t in rest.items()}
    coords = [(0.0, 0.0), (norm_a, 0.0), (bu, norm_rest)]
    return {k: t.float() for k, t in u.items()}, {k: t.float() for k, t in v.items()}, coords


def grid_axes(opts: LandscapeOptions, coords: list[tuple[float, float]] | None = None):
    """(x values, y values) of the grid: ``[-span, span]`` (random; 0 exactly on it for odd resolutions) or the
    padded box around the plane's points."""
    n = opts.resolution
    if coords is None:
        xs = np.linspace(-opts.span, opts.span, n)
        if n % 2:
            xs[n // 2] = 0.0
        return xs, xs.copy()
    pts = np.asarray(coords)
    largest = max(np.linalg.norm(p - q) for p in pts for q in pts)
    pad = 0.5 * opts.span * largest
    lo, hi = pts.min(axis=0) - pad, pts.max(axis=0) + pad
    return np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)


# ---------------------------------------------------------------------------------------------- evaluation
def landscape_samples(bench, task: int, max_samples: int | None, seed: int = 0) -> dict[str, tuple]:
    """``{"old": (x, y), "new": (x, y)}`` test samples (old: tasks < task, pooled; absent for task 0), at most
    ``max_samples`` together: half for the new task, the rest (at least half) for the old ones."""
    n_new = len(bench.scenario.test_stream[task].dataset)
    cap_new = None if max_samples is None else min(n_new, max_samples // 2 if task else max_samples)
    groups = {"new": load_test_samples(bench, [task], cap_new, seed)}
    if task:
        cap_old = None if max_samples is None else max_samples - len(groups["new"][1])
        groups = {"old": load_test_samples(bench, list(range(task)), cap_old, seed), **groups}
    return groups


class _Grid:
    """The plain model, its perturbed tensors and the samples, on one device: ``evaluate(x, y)`` sets
    ``center + x d1 + y d2`` and returns loss and accuracy per sample group."""

    def __init__(self, model, center: Solution, d1: Solution, d2: Solution, groups: dict, batch: int, amp: str):
        self.device = next(model.parameters()).device
        self.model, self.batch, self.amp = model, batch, amp
        self.params = {k: v for k, v in model.state_dict().items() if k in center}
        self.center = {k: v.to(self.device) for k, v in center.items()}
        self.d1 = {k: v.to(self.device) for k, v in d1.items()}
        self.d2 = {k: v.to(self.device) for k, v in d2.items()}
        self.x = torch.cat([g[0] for g in groups.values()]).to(self.device)
        self.y = torch.cat([g[1] for g in groups.values()]).to(self.device)
        bounds = np.cumsum([0] + [len(g[1]) for g in groups.values()])
        self.slices = {name: slice(int(lo), int(hi)) for name, lo, hi in zip(groups, bounds[:-1], bounds[1:])}

    @torch.no_grad()
    def evaluate(self, x: float, y: float) -> dict[str, float]:
        for key, param in self.params.items():
            param.copy_(self.center[key] + x * self.d1[key] + y * self.d2[key])  # (0, 0): the center bit for bit
        logits = predict(self.model, self.x, self.batch, self.amp)
        out = {}
        for name, sl in self.slices.items():
            out[f"loss_{name}"] = mean_loss(logits[sl], self.y[sl])
            out[f"acc_{name}"] = accuracy(logits[sl], self.y[sl])
        return out


def compute_landscape(record: Mapping[str, Any], results_dir, task: int | None = None,
                      opts: LandscapeOptions = LandscapeOptions()) -> dict[str, Any]:
    """Loss and accuracy of old and new tasks on a 2-D grid around the job's solution after ``task``.

    Args:
        record: The job's record (``runner.reload.load_record``); checkpoints after ``task`` (and, in plane mode,
            after ``task - 1`` and ``task - 2``) must exist.
        results_dir: Results directory holding the checkpoints.
        task: 0-based task of the origin (default: the last).
        opts: Mode, grid and budget (see :class:`LandscapeOptions`).

    Returns:
        A JSON-ready dict: ``x``, ``y`` (axes), ``loss_old``/``loss_new``/``acc_old``/``acc_new`` as lists of rows
        (row i = ``y[i]``; the ``old`` entries are absent for task 0), ``points`` (the solutions shown, with their
        coordinates and values), ``keys`` (perturbed tensors), ``n_samples`` and the options.
    """
    task = record["n_tasks"] - 1 if task is None else task
    if opts.mode == "plane" and task < 2:
        raise UserError(f"plane mode needs the solutions after tasks T-2, T-1, T: --task must be >= 2, got {task}")
    tasks = [task - 2, task - 1, task] if opts.mode == "plane" else [task]
    states, changeable, bench = job_solutions(record, results_dir, tasks)
    origin = states[-1]
    keys = sorted(k for k in (changeable if opts.params == "adapted" else origin) if k.startswith("backbone."))
    center = {k: origin[k] for k in keys}
    if opts.mode == "random":
        d1, d2 = random_directions(center, opts.seed)
        coords, labels = [(0.0, 0.0)], [task]
    else:
        d1, d2, coords = plane_basis(center, {k: states[1][k] for k in keys}, {k: states[0][k] for k in keys})
        labels = [task, task - 1, task - 2]
    device = resolve_device(opts.device)
    model = plain_model(record, origin["head.weight"].shape[0], device)
    load_solution(model, origin)
    groups = landscape_samples(bench, task, opts.max_samples, opts.seed)
    grid = _Grid(model, center, d1, d2, groups, opts.batch_size, method_fields(record).get("amp", "none"))
    xs, ys = grid_axes(opts, None if opts.mode == "random" else coords)
    values = [[grid.evaluate(float(x), float(y)) for x in xs] for y in ys]
    out = {"job_id": record["job_id"], "method": record["method"], "benchmark": record["benchmark"], "task": task,
           "keys": keys, "n_perturbed": int(sum(center[k].numel() for k in keys)),
           "n_samples": {name: len(g[1]) for name, g in groups.items()}, "options": asdict(opts),
           "x": [float(x) for x in xs], "y": [float(y) for y in ys]}
    for name in values[0][0]:
        out[name] = [[row[i][name] for i in range(len(xs))] for row in values]
    out["points"] = [{"task": t, "x": float(x), "y": float(y), **grid.evaluate(x, y)} for t, (x, y) in zip(labels, coords)]
    return out


# ---------------------------------------------------------------------------------------------- figure
def _levels(z: np.ndarray) -> np.ndarray:
    lo, hi = float(np.nanmin(z)), float(np.nanmax(z))
    lo = max(lo, 1e-6)
    if hi <= lo * (1 + 1e-6):
        return np.array([lo * 0.99, lo * 1.01])
    return np.geomspace(lo, hi, 16)


def landscape_plot(result: Mapping[str, Any], out_dir: Path | str, name: str | None = None) -> list[Path]:
    """Filled contours of the loss on old tasks and on the new task (one panel each, log colour scale).

    The solutions are marked (star: the origin, after task T; dots: after T-1, T-2 in plane mode), tasks 1-based.

    Returns:
        ``[png, pdf]`` written by :func:`analysis.figures.save_figure`.
    """
    mode, task = result["options"]["mode"], result["task"]
    panels = [(k, t) for k, t in (("old", f"old tasks 1-{task}"), ("new", f"new task {task + 1}")) if f"loss_{k}" in result]
    xs, ys = np.asarray(result["x"]), np.asarray(result["y"])
    if mode == "random":
        xlabel, ylabel = r"$\alpha$ (filter-normalised direction 1)", r"$\beta$ (direction 2)"
    else:
        xlabel = rf"along $W_{{{task}}} - W_{{{task + 1}}}$ (Frobenius)"
        ylabel = rf"orthogonal, towards $W_{{{task - 1}}}$"
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(3.6 * len(panels), 3.2), layout="constrained")
        for i, (group, title) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), i + 1)
            z = np.asarray(result[f"loss_{group}"], dtype=float)
            levels = _levels(z)
            filled = ax.contourf(xs, ys, z, levels=levels, norm=LogNorm(levels[0], levels[-1]), cmap="viridis")
            ax.contour(xs, ys, z, levels=levels, colors="white", linewidths=0.3)
            fig.colorbar(filled, ax=ax, label="cross-entropy (log scale)", format="%.3g")
            for p in result["points"]:
                star = p["task"] == task
                ax.plot(p["x"], p["y"], marker="*" if star else "o", markersize=9 if star else 5, color="red",
                        markeredgecolor="black", linestyle="none")
                ax.annotate(f"after T{p['task'] + 1}", (p["x"], p["y"]), textcoords="offset points", xytext=(4, 4),
                            color="black", fontsize=7)
            if mode == "plane":
                ax.set_aspect("equal")
            ax.set(title=f"{result['method']}, {result['benchmark']}: {title}", xlabel=xlabel, ylabel=ylabel)
        return save_figure(fig, out_dir, name or default_name(result))


def default_name(result: Mapping[str, Any]) -> str:
    """File stem ``landscape_<mode>__<job_id>__task<T>`` (the task 0-based, as the checkpoint files)."""
    return f"landscape_{result['options']['mode']}__{result['job_id']}__task{result['task']}"


def write_landscape(result: Mapping[str, Any], out_dir: Path | str) -> list[Path]:
    """Write the figure (PNG, PDF) and the grid as JSON (sorted keys), all named :func:`default_name`."""
    paths = landscape_plot(result, out_dir)
    path = Path(out_dir) / f"{default_name(result)}.json"
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return [*paths, path]
