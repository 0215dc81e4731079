"""Accuracy bookkeeping: a plugin that counts correct predictions per experience, and the summary metrics.

Definitions (docs/sdlora.md section 7):

* ``acc_matrix[t][j]``: accuracy after task t on task j's test samples, argmax over all seen classes.
* ``pooled_acc[t]``: accuracy after task t on the pooled test samples of all seen classes (weighted by
  samples, as the SD-LoRA code computes it). **Acc** = ``pooled_acc[-1]``; **AAA** = mean of ``pooled_acc``.
* ``task_mean_acc``: mean of the last row of ``acc_matrix`` (the "average over tasks" reading of the paper).
* ``forgetting``: mean over tasks j < N-1 of (best accuracy on j after any task t >= j, the last included) - (final
  accuracy on j), class-incremental, in points: each task's term is >= 0, as the SD-LoRA code (PILOT's trainer)
  computes it. Chaudhry et al. (ECCV 2018, "Riemannian Walk", their forgetting measure) take the best over
  t < N-1 only, which goes negative when a task recovers; the accuracy matrix in each record gives either.
* Task-incremental accuracy (argmax restricted to the sample's own task's classes) is a diagnostic reported
  beside the class-incremental numbers: it separates classifier bias from representation forgetting.
* ``task_confusion[j][k]``: after the last task, the percent of task j's test samples whose class-incremental
  prediction is one of task k's classes (each row sums to 100). ``task_id_acc``: the percent of all final test
  samples predicted into their own task's classes (its diagonal, pooled): the task-identity term of HiDe-Prompt's
  decomposition of class-incremental accuracy into within-task prediction and task-identity inference (Wang et
  al., NeurIPS 2023, arXiv 2310.07234; docs/baselines.md section 4), here read off every method's one argmax. Acc
  never exceeds it: a correct prediction lies in its own task. Whether a method loses accuracy within tasks
  (task-incremental accuracy) or between them (these two), the record says.
"""

from __future__ import annotations

import warnings
from collections import defaultdict

import numpy as np
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin


class AccuracyCollector(SupervisedPlugin):
    """Counts, per evaluated experience, class- and task-incremental correct predictions.

    Avalanche has no task-incremental accuracy nor an accuracy matrix; its class-incremental accuracy is kept out
    because it averages per-minibatch fractions (weighted by size), whose floats differ from correct/total in the
    last digits, and the records' numbers must not move.
    """

    def __init__(self, classes_per_task: list[int]):
        super().__init__()
        self.offsets = np.concatenate([[0], np.cumsum(classes_per_task)]).tolist()
        self.reset()

    def reset(self) -> None:
        self.counts: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])  # exp -> [cil, til, n]
        n_tasks = len(self.offsets) - 1
        # exp -> samples whose class-incremental prediction lies in each task's classes
        self.predicted_task: dict[int, np.ndarray] = defaultdict(lambda: np.zeros(n_tasks, dtype=np.int64))

    def after_eval_iteration(self, strategy, **kwargs):
        j = strategy.experience.current_experience
        lo, hi = self.offsets[j], self.offsets[j + 1]
        logits = strategy.mb_output.detach().float()
        y = strategy.mb_y
        seen = strategy.model.head.out_features
        pred = logits[:, :seen].argmax(1)
        cil = pred == y
        til = logits[:, lo:hi].argmax(1) + lo == y
        task = np.searchsorted(self.offsets[1:], pred.cpu().numpy(), side="right")
        self.predicted_task[j] += np.bincount(task, minlength=len(self.offsets) - 1)
        c = self.counts[j]
        c[0] += int(cil.sum())
        c[1] += int(til.sum())
        c[2] += len(y)

    def row(self) -> tuple[list[float], list[float], float, float]:
        """(per-experience CIL acc, per-experience TIL acc, pooled CIL acc, pooled TIL acc), in percent."""
        exps = sorted(self.counts)
        cil = [100.0 * self.counts[j][0] / self.counts[j][2] for j in exps]
        til = [100.0 * self.counts[j][1] / self.counts[j][2] for j in exps]
        n = sum(self.counts[j][2] for j in exps)
        pooled = 100.0 * sum(self.counts[j][0] for j in exps) / n
        pooled_til = 100.0 * sum(self.counts[j][1] for j in exps) / n
        return cil, til, pooled, pooled_til

    def task_rows(self) -> tuple[list[list[float]], float]:
        """(``task_confusion``: per evaluated experience j, the percent of its samples predicted into each seen
        task's classes; ``task_id_acc``: the percent of all samples predicted into their own task's), in percent."""
        exps = sorted(self.counts)
        seen = max(exps) + 1
        rows = [(100.0 * self.predicted_task[j][:seen] / self.counts[j][2]).tolist() for j in exps]
        n = sum(self.counts[j][2] for j in exps)
        own = 100.0 * sum(int(self.predicted_task[j][j]) for j in exps) / n
        return rows, own


def silent_evaluator(*metrics) -> EvaluationPlugin:
    """An evaluator that logs nothing (Avalanche's default one prints); read values with ``get_last_metrics()``."""
    with warnings.catch_warnings():  # the values are read from the plugin itself: no logger is needed
        warnings.filterwarnings("ignore", message="No loggers specified")
        return EvaluationPlugin(*metrics, loggers=[])


def stream_accuracy_evaluator() -> EvaluationPlugin:
    """Avalanche's own stream accuracy, kept as a cross-check of ``pooled_acc``; read with :func:`stream_accuracy`."""
    return silent_evaluator(accuracy_metrics(stream=True))


def stream_accuracy(evaluator: EvaluationPlugin) -> float | None:
    """The last ``Top1_Acc_Stream`` of the test stream, in percent (None before any evaluation)."""
    for name, value in evaluator.get_last_metrics().items():
        if name.startswith("Top1_Acc_Stream/eval_phase/test_stream"):
            return 100.0 * float(value)
    return None


def summary(acc_matrix: list[list[float]], pooled: list[float], til_pooled: list[float]) -> dict[str, float]:
    """Acc, AAA, per-task mean, forgetting and the task-incremental counterparts."""
    last = acc_matrix[-1]
    n = len(acc_matrix)
    forgetting = [max(acc_matrix[t][j] for t in range(j, n)) - last[j] for j in range(n - 1)]
    return {
        "acc": pooled[-1],
        "aaa": float(np.mean(pooled)),
        "task_mean_acc": float(np.mean(last)),
        "forgetting": float(np.mean(forgetting)) if forgetting else 0.0,
        "til_acc": til_pooled[-1],
        "til_aaa": float(np.mean(til_pooled)),
    }
