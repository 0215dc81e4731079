"""Per-epoch progress in the job's own log file: mean training loss and training accuracy after every epoch.

A GPU job runs for hours; its log should show it moving. The line deliberately does not contain ``task t/N``
(that line marks a finished experience, and tools count it).
"""

from __future__ import annotations

import logging
import math

import torch
from avalanche.core import SupervisedPlugin


class EpochLogger(SupervisedPlugin):
    """Logs ``experience k of N, epoch e/E: mean loss ..., train acc ...`` after each training epoch.

    Sums stay on the device and are read once per epoch, so logging adds no synchronisation per iteration.
    Two training accuracies, labelled: over the head rows the loss sees (:meth:`CILStrategy.loss_classes`: after
    task 1 only the new classes), the one the loss optimises, and over every seen class (what evaluation uses).
    ``nonfinite_epoch``: the first epoch of the current experience whose mean loss was NaN or infinite (1-based;
    None while every epoch is finite). The job's first such epoch is logged as a warning: the run's later numbers
    come from a diverged network, and the record says so (``nonfinite_loss``).
    """

    def __init__(self, log: logging.Logger, n_tasks: int):
        super().__init__()
        self.log = log
        self.n_tasks = n_tasks
        self.epoch = 0
        self.nonfinite_epoch: int | None = None
        self.warned = False  # the divergence warning is logged once per job
        self._reset()

    def _reset(self) -> None:
        self.loss_sum: torch.Tensor | float = 0.0
        self.correct: torch.Tensor | int = 0  # argmax over the rows the loss sees
        self.correct_all: torch.Tensor | int = 0  # argmax over every seen class
        self.seen = 0

    def before_training_exp(self, strategy, **kwargs):
        self.epoch = 0
        self.nonfinite_epoch = None

    def before_training_epoch(self, strategy, **kwargs):
        self._reset()

    def after_training_iteration(self, strategy, **kwargs):
        y = strategy.mb_y
        n = len(y)
        self.loss_sum = self.loss_sum + strategy.loss.detach().float() * n
        out = strategy.mb_output
        if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == n:
            out = out.detach()
            lo, hi = strategy.loss_classes()
            self.correct = self.correct + (out[:, lo:hi].argmax(1) + lo == y).sum()
            self.correct_all = self.correct_all + (out.argmax(1) == y).sum()
        self.seen += n

    def after_training_epoch(self, strategy, **kwargs):
        self.epoch += 1
        if not self.seen:
            return
        loss = float(self.loss_sum) / self.seen
        acc = 100.0 * float(self.correct) / self.seen
        acc_all = 100.0 * float(self.correct_all) / self.seen
        lo, hi = strategy.loss_classes()
        rows = "all seen classes" if lo == 0 else f"classes {lo}-{hi - 1}"
        self.log.info("  experience %d of %d, epoch %d/%d: mean loss %.4f, train acc %.2f%% over the loss's %s "
                      "(%.2f%% over all %d seen)", strategy.task_id + 1, self.n_tasks, self.epoch,
                      strategy.train_epochs, loss, acc, rows, acc_all, strategy.seen)
        if math.isfinite(loss):
            return
        if self.nonfinite_epoch is None:
            self.nonfinite_epoch = self.epoch
        if not self.warned:
            self.warned = True
            self.log.warning("  experience %d of %d, epoch %d: the mean training loss is %s; the network has diverged "
                             "(the record's nonfinite_loss)", strategy.task_id + 1, self.n_tasks, self.epoch, loss)
