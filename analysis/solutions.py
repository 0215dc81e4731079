"""Task solutions in weight space: 1-D interpolation (paper Fig. 4) and weight proximity (paper Fig. 2a).

A *solution* is the function a job's model computes after a task, written as plain weights: a dict
``{"backbone.<timm key>": tensor, "head.weight": ..., "head.bias": ...}`` whose backbone keys are those of an
unwrapped timm ViT. LoRA-style methods (SD-LoRA, sequential LoRA, InfLoRA: every
:class:`methods.lowrank.LowRankQKV`) contribute their merged ``qkv`` weight (``effective_weight()``), exactly the
weight their merged evaluation uses; fully fine-tuned methods contribute their backbone parameters. Such a dict
loads into one plain model (:func:`plain_model`), so every analysis here evaluates one ordinary ViT pass.

Methods whose function is not "backbone weights + linear head" (prompt methods, SimpleCIL's prototypes) have no
solution in this sense and are rejected with a one-line error.

Data flow: record + per-task checkpoints (``runner.reload``) -> :func:`effective_state` -> solutions ->
:func:`interpolate` / :func:`proximity` -> ``analysis.figures.interpolation_plot`` / ``proximity_heatmap``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Subset

from core.errors import UserError
from runner.env import seed_everything
from runner.metrics import silent_evaluator
from runner.reload import checkpoint_path, load_strategy, method_fields

Solution = dict[str, torch.Tensor]
DEFAULT_LAMBDAS = tuple(i / 10 for i in range(11))  # paper Fig. 4: lambda in {0, 0.1, ..., 1}
# Training fields every method config has; a separately trained method inherits these from the job it studies
# (its optimizer and learning rate stay the method's own defaults, which differ between methods).
SHARED_TRAINING_FIELDS = ("epochs", "init_epochs", "batch_size", "eval_batch_size", "amp", "num_workers")


# ---------------------------------------------------------------------------------------------- weights
def _check_weight_space(strategy) -> None:
    from methods.base import CILModel, IncrementalHead

    model = strategy.model
    if type(model) is not CILModel or type(model.head) is not IncrementalHead:
        raise UserError(f"{type(strategy).__name__}: the model is not a backbone plus a linear head (prompts or "
                        "prototypes), so it has no weight-space solution; use a LoRA or fine-tuning method")


def _effective(strategy) -> tuple[Solution, set[str]]:
    """(full plain state of backbone and head, keys the method itself can change)."""
    from methods.lowrank import LowRankQKV

    _check_weight_space(strategy)
    model = strategy.model
    backbone = model.backbone
    lowrank = {name: m for name, m in backbone.named_modules() if isinstance(m, LowRankQKV)}
    prefixes = tuple(f"{name}." for name in lowrank)
    trained = {n for n, p in backbone.named_parameters() if p.requires_grad and not n.startswith(prefixes)}
    state: Solution = {}
    with torch.no_grad():
        for key, value in backbone.state_dict().items():
            if not key.startswith(prefixes):
                state[f"backbone.{key}"] = value
        for name, layer in lowrank.items():
            state[f"backbone.{name}.weight"] = layer.effective_weight()
            if layer.base.bias is not None:
                state[f"backbone.{name}.bias"] = layer.base.bias
        state["head.weight"], state["head.bias"] = model.head.weight, model.head.bias
    changeable = {f"backbone.{n}" for n in trained} | {f"backbone.{n}.weight" for n in lowrank}
    return {k: state[k].detach().to("cpu", copy=True) for k in sorted(state)}, changeable | {"head.weight", "head.bias"}


def effective_state(strategy) -> Solution:
    """Every backbone weight (timm keys, LoRA updates merged) and the head of a strategy, on the CPU.

    Args:
        strategy: A :class:`methods.base.CILStrategy` whose model is a backbone plus an incremental head.

    Returns:
        ``{"backbone.<key>": tensor, "head.weight": ..., "head.bias": ...}``, sorted by key.

    Raises:
        UserError: For prompt or prototype models.
    """
    return _effective(strategy)[0]


def task_solution(strategy, w0: Mapping[str, torch.Tensor] | None = None) -> Solution:
    """The weights that define the solution after a task: what differs from the pretrained backbone, plus the head.

    Args:
        strategy: A strategy restored after a task (``runner.reload.load_strategy``).
        w0: Pretrained weights (:func:`pretrained_state`). Given: keep every backbone tensor that differs from it.
            None: keep what the method can change, i.e. the merged ``qkv`` weight of every LoRA layer and every
            backbone parameter with ``requires_grad`` (full fine-tuning: all of them).

    Returns:
        ``{key: tensor}`` with ``head.weight`` and ``head.bias`` always included.
    """
    state, changeable = _effective(strategy)
    if w0 is None:
        return {k: v for k, v in state.items() if k in changeable}
    return {k: v for k, v in state.items() if k.startswith("head.") or k not in w0 or not torch.equal(v, w0[k])}


def _config(source: Any) -> dict[str, Any]:
    """The job config (``benchmark_name``, ``benchmark``, ``backbone``, ``method_name``, ``method``, ``seed``) of a
    record, a ``runner.jobs.Job`` or such a config itself."""
    if hasattr(source, "config") and callable(source.config):
        return source.config()
    if "config" in source:  # a record: an older one's boolean amp becomes the precision it ran
        return {**source["config"], "method": method_fields(source)}
    return source


def build_backbone_of(source: Any) -> nn.Module:
    """The job's pretrained backbone, built exactly as the job built it (same seed before building, so a randomly
    initialised test backbone is the same one)."""
    from benchmarks.backbones import BackboneConfig, build_backbone

    cfg = _config(source)
    seed_everything(cfg["seed"])
    backbone, _ = build_backbone(BackboneConfig.from_dict(cfg["backbone"]))
    return backbone


def build_benchmark_of(source: Any):
    """The job's benchmark (same class order as the job)."""
    from benchmarks import BENCHMARKS

    cfg = _config(source)
    bench_cfg = BENCHMARKS.make_config(cfg["benchmark_name"], cfg["benchmark"])
    return BENCHMARKS.get(cfg["benchmark_name"]).obj(bench_cfg, cfg["seed"])


def pretrained_state(source: Any) -> Solution:
    """W0: the job's pretrained backbone weights as ``{"backbone.<key>": tensor}``."""
    return {f"backbone.{k}": v.detach().cpu().clone() for k, v in build_backbone_of(source).state_dict().items()}


def plain_model(source: Any, n_classes: int, device: str | torch.device = "cpu") -> nn.Module:
    """An unwrapped ViT plus a linear head of ``n_classes`` rows, frozen and in eval mode; load a solution into it."""
    from methods.base import CILModel

    model = CILModel(build_backbone_of(source))
    model.head.grow(n_classes)
    model.requires_grad_(False)
    return model.to(device).eval()


def load_solution(model: nn.Module, solution: Mapping[str, torch.Tensor]) -> None:
    """Copy ``solution`` into ``model`` in place (keys it lacks keep their values, e.g. W0's).

    Raises:
        ValueError: When a key is not in the model or a shape differs.
    """
    state = model.state_dict()
    for key, value in solution.items():
        if key not in state or state[key].shape != value.shape:
            raise ValueError(f"solution tensor {key} {tuple(value.shape)} does not fit the model "
                             f"({tuple(state[key].shape) if key in state else 'no such key'})")
    with torch.no_grad():
        for key, value in solution.items():
            state[key].copy_(value)


def job_solutions(record: Mapping[str, Any], results_dir, tasks: Sequence[int], device: str = "cpu"):
    """(full effective state after each task in ``tasks``, changeable keys, the benchmark) of a job.

    Raises:
        UserError: When a checkpoint is missing or the method has no weight-space solution.
    """
    for t in tasks:
        if not 0 <= t < record["n_tasks"]:
            raise UserError(f"task {t} out of range for {record['job_id']} (0..{record['n_tasks'] - 1})")
        checkpoint_path(results_dir, record["job_id"], t)  # one clear error before any model is built
    states, bench, changeable = [], None, set()
    for t in tasks:
        strategy, bench = load_strategy(dict(record), results_dir, t, device=device)
        state, changeable = _effective(strategy)
        states.append(state)
    return states, changeable, bench


# ---------------------------------------------------------------------------------------------- evaluation
def load_test_samples(bench, tasks: Sequence[int], max_samples: int | None = None, seed: int = 0):
    """Test images and labels of ``tasks`` pooled, as tensors; at most ``max_samples`` of them.

    The subset is a fixed-seed random choice (sorted), so every call with the same arguments returns the same
    samples, and the loss surface evaluated on it is smooth (one fixed sample, not one per grid point).
    """
    dataset = ConcatDataset([bench.scenario.test_stream[j].dataset.eval() for j in tasks])
    n = len(dataset)
    if max_samples is not None and max_samples < n:
        g = torch.Generator().manual_seed(seed)
        dataset = Subset(dataset, torch.randperm(n, generator=g)[:max_samples].sort().values.tolist())
    xs, ys = [], []
    for batch in DataLoader(dataset, batch_size=256, shuffle=False, num_workers=0):
        xs.append(batch[0])
        ys.append(torch.as_tensor(batch[1]))
    return torch.cat(xs), torch.cat(ys).long()


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256, amp: str = "none") -> torch.Tensor:
    """Logits of ``model`` on ``x`` in batches, as float32 on the model's device.

    ``amp="bf16"`` uses bf16 autocast on the model's device, as the jobs' own evaluation does (``MethodConfig.amp``).
    """
    device = next(model.parameters()).device
    outs = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device, non_blocking=True)
        if amp == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                outs.append(model(xb).float())
        else:
            outs.append(model(xb).float())
    return torch.cat(outs)


def accuracy(logits: torch.Tensor, y: torch.Tensor, lo: int | None = None, hi: int | None = None) -> float:
    """Accuracy (%) with argmax over all logits (class-incremental) or over classes ``[lo, hi)`` (task-incremental),
    computed as ``runner.metrics.AccuracyCollector`` does, so equal predictions give the identical float."""
    y = y.to(logits.device)
    pred = logits.argmax(1) if lo is None else logits[:, lo:hi].argmax(1) + lo
    return 100.0 * int((pred == y).sum()) / len(y)


def mean_loss(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Cross-entropy over all logits (every class seen so far), averaged over samples."""
    return float(F.cross_entropy(logits, y.to(logits.device)))


# ---------------------------------------------------------------------------------------------- Fig. 4
def _pad_head(sol_a: Solution, sol_b: Solution) -> Solution:
    """W_a with its head completed by W_b's rows for the classes W_a has not seen."""
    out = dict(sol_a)
    for key in ("head.weight", "head.bias"):
        n_a = sol_a[key].shape[0]
        out[key] = torch.cat([sol_a[key], sol_b[key][n_a:]])
    return out


def interpolate(record: Mapping[str, Any], results_dir, t_a: int = 0, t_b: int = 1,
                lambdas: Sequence[float] = DEFAULT_LAMBDAS, device: str = "cpu",
                max_samples: int | None = None) -> dict[str, Any]:
    """Accuracy on task a's and task b's test samples along W(lambda) = (1 - lambda) W_a + lambda W_b (paper Fig. 4).

    W_a and W_b are the job's solutions after tasks ``t_a`` < ``t_b`` (backbone with LoRA updates merged, and head).
    Head: the head grows between tasks, so W_a's head is completed with W_b's rows for the classes first seen after
    ``t_a``, and the whole head is interpolated with the rest. Under old-logit masking (the default of every method)
    the old rows get no gradient, so W_b's old rows equal W_a's and the head is simply W_b's at every lambda: only
    the backbone moves along the path. Accuracy is class-incremental over every class seen at ``t_b`` (argmax over
    all head rows), the same rule as the record's ``acc_matrix``; task-incremental accuracy is returned beside it.
    So at lambda = 1 the values equal ``acc_matrix[t_b][t_a]`` and ``acc_matrix[t_b][t_b]``, and at lambda = 0 the
    task-incremental accuracy on task a equals ``til_matrix[t_a][t_a]`` and the accuracy on task a with argmax over
    the classes seen at ``t_a`` (``t1_seen_a``, W_a's own head) equals ``acc_matrix[t_a][t_a]``.

    Args:
        record: The job's record (``runner.reload.load_record``); per-task checkpoints must exist.
        results_dir: Results directory holding ``checkpoints/<job_id>/task<t>.pt``.
        t_a: Earlier task (0-based).
        t_b: Later task (0-based).
        lambdas: Points of the path.
        device: Where the model runs.
        max_samples: At most this many test samples per task (fixed-seed subset); None: all.

    Returns:
        ``{"job_id", "method", "tasks", "lambda", "t1", "t2", "t1_til", "t2_til", "t1_seen_a", "n_samples"}`` with
        ``t1``/``t2``
        the accuracies (%) on task a / task b, the keys ``analysis.figures.interpolation_plot`` reads.
    """
    if not t_a < t_b:
        raise UserError(f"interpolation needs t_a < t_b, got {t_a}, {t_b}")
    (sol_a, sol_b), changeable, bench = job_solutions(record, results_dir, [t_a, t_b])
    sol_a = _pad_head(sol_a, sol_b)
    keys = sorted(k for k in changeable if k in sol_b)
    model = plain_model(record, sol_b["head.weight"].shape[0], device)
    load_solution(model, sol_b)  # every key; the path then only rewrites the changeable ones
    method_cfg = _config(record)["method"]
    amp, batch = method_cfg.get("amp", "none"), int(method_cfg.get("eval_batch_size", 256))
    offsets = np.concatenate([[0], np.cumsum(bench.classes_per_task)]).tolist()
    data = {t: load_test_samples(bench, [t], max_samples) for t in (t_a, t_b)}
    out = {"job_id": record["job_id"], "method": record["method"], "tasks": [t_a, t_b],
           "lambda": [float(v) for v in lambdas], "t1": [], "t2": [], "t1_til": [], "t2_til": [], "t1_seen_a": [],
           "n_samples": [len(data[t_a][1]), len(data[t_b][1])]}
    for lam in lambdas:
        # (1 - lam) a + lam b, not torch.lerp: at lam = 0 and 1 this gives W_a and W_b bit for bit.
        load_solution(model, {k: (1 - lam) * sol_a[k] + lam * sol_b[k] for k in keys})
        for name, t in (("t1", t_a), ("t2", t_b)):
            x, y = data[t]
            logits = predict(model, x, batch, amp)
            out[name].append(accuracy(logits, y))
            out[f"{name}_til"].append(accuracy(logits, y, offsets[t], offsets[t + 1]))
            if t == t_a:
                out["t1_seen_a"].append(accuracy(logits[:, : offsets[t_a + 1]], y))
    return out


# ---------------------------------------------------------------------------------------------- Fig. 2a
def proximity(solutions: Sequence[Mapping[str, torch.Tensor]], w0: Mapping[str, torch.Tensor],
              keys: Sequence[str] | None = None) -> np.ndarray:
    """Relative distances ``||W_i - W_j||_F / ||W_i - W_0||_F`` between solutions (paper Fig. 2a).

    The paper gives no formula; this one (row i, column j; not symmetric) is an assumption, stated in the figure.
    Norms are over all compared tensors together, accumulated in float64 one tensor at a time (ViT-B fits).

    Args:
        solutions: Solutions (:func:`task_solution`, :func:`separate_task_solutions`), e.g. one per task.
        w0: Pretrained weights (:func:`pretrained_state`).
        keys: Tensors compared; default: the backbone keys all solutions share (the head is left out: its rows
            differ in number and meaning between tasks).

    Returns:
        ``(n, n)`` array, zero on the diagonal.

    Raises:
        ValueError: When a key is missing from W0 or a solution equals W0 (zero denominator).
    """
    if keys is None:
        shared = set.intersection(*(set(s) for s in solutions)) if solutions else set()
        keys = sorted(k for k in shared if not k.startswith("head."))
    missing = [k for k in keys if k not in w0]
    if missing or not keys:
        raise ValueError(f"no comparable tensors (missing from W0: {missing[:3]})")
    n = len(solutions)
    sq = np.zeros((n, n))
    to_w0 = np.zeros(n)
    for key in keys:
        vals = [s[key].detach().double().cpu() for s in solutions]
        base = w0[key].detach().double().cpu()
        for i in range(n):
            to_w0[i] += float((vals[i] - base).pow(2).sum())
            for j in range(i + 1, n):
                sq[i, j] += float((vals[i] - vals[j]).pow(2).sum())
    if np.any(to_w0 == 0):
        raise ValueError(f"solution(s) {np.flatnonzero(to_w0 == 0).tolist()} equal W0: relative distance undefined")
    dist = np.sqrt(sq + sq.T)
    return dist / np.sqrt(to_w0)[:, None]


def _separate_config(source: Any, method: str, epochs: int | None, overrides: Mapping[str, Any] | None):
    from methods import METHODS

    cfg = _config(source)
    if method == cfg.get("method_name"):
        fields = dict(cfg["method"])
    else:
        valid = set(METHODS.get(method).config_cls.field_names())
        fields = {k: cfg["method"][k] for k in SHARED_TRAINING_FIELDS if k in cfg.get("method", {}) and k in valid}
    if epochs is not None:
        fields.update(epochs=epochs, init_epochs=None)
    fields.update(overrides or {})
    return METHODS.make_config(method, fields)


def separate_task_solutions(source: Any, method: str = "full_ft", epochs: int | None = None,
                            tasks: Sequence[int] | None = None, device: str = "cpu",
                            overrides: Mapping[str, Any] | None = None,
                            w0: Mapping[str, torch.Tensor] | None = None) -> list[Solution]:
    """The paper's per-task optima W*_t (Fig. 2a): ``method`` trained on each task on its own, from W0 every time.

    Each task is trained as a first task: a fresh backbone (the job's) and a fresh strategy, the same seed, one
    experience, the task's own classes only (the head rows of other tasks' classes are masked out of the loss,
    the base strategy's old-logit masking). Benchmark, backbone and seed come from ``source``; the method config is
    the job's own when ``method`` is the job's method, else the method's defaults with the job's shared training
    fields (epochs, batch sizes, amp).

    Args:
        source: A record, a ``runner.jobs.Job`` or a job config (``Job.config()``).
        method: Registered method, e.g. ``full_ft`` (full fine-tuning) or ``seq_lora`` (one LoRA).
        epochs: Epochs per task (None: from the config).
        tasks: Tasks to train on (default: all).
        device: Training device.
        overrides: Further method config fields.
        w0: Passed to :func:`task_solution` (None: keep what the method can change).

    Returns:
        One solution per task, in order.
    """
    from methods import METHODS

    cfg = _config(source)
    method_cfg = _separate_config(source, method, epochs, overrides)
    seed_everything(cfg["seed"])
    bench = build_benchmark_of(source)
    offsets = np.concatenate([[0], np.cumsum(bench.classes_per_task)]).tolist()
    out = []
    for t in range(bench.n_tasks) if tasks is None else tasks:
        backbone = build_backbone_of(source)
        strategy = METHODS.get(method).obj(cfg=method_cfg, backbone=backbone, device=device,
                                           evaluator=silent_evaluator())
        strategy.seen = offsets[t]  # this task's classes start here; the earlier rows are masked, never trained
        seed_everything(cfg["seed"])  # every task starts from the same state: the solutions differ by data only
        strategy.train(bench.scenario.train_stream[t], eval_streams=[], num_workers=0)
        out.append(task_solution(strategy, w0))
    return out
