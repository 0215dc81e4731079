"""Per-epoch progress in the job's own log file: mean training loss and training accuracy after every epoch.

A GPU job runs for hours; its log should show it moving. The line deliberately does not contain ``task t/N``
(that line marks a finished experience, and tools count it).
"""

from __future__ import annotations

import logging

import torch
from avalanche.core import SupervisedPlugin


class EpochLogger(SupervisedPlugin):
    """Logs ``experience k of N, epoch e/E: mean loss ..., train acc ...`` after each training epoch.

    Sums stay on the device and are read once per epoch, so logging adds no synchronisation per iteration.
    Training accuracy is the argmax over every head row against the label (a diagnostic: the loss itself may
    be restricted to the current task's classes).
    """

    def __init__(self, log: logging.Logger, n_tasks: int):
        super().__init__()
        self.log = log
        self.n_tasks = n_tasks
        self.epoch = 0
        self._reset()

    def _reset(self) -> None:
        self.loss_sum: torch.Tensor | float = 0.0
        self.correct: torch.Tensor | int = 0
        self.seen = 0

    def before_training_exp(self, strategy, **kwargs):
        self.epoch = 0

    def before_training_epoch(self, strategy, **kwargs):
        self._reset()

    def after_training_iteration(self, strategy, **kwargs):
        y = strategy.mb_y
        n = len(y)
        self.loss_sum = self.loss_sum + strategy.loss.detach().float() * n
        out = strategy.mb_output
        if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == n:
            self.correct = self.correct + (out.detach().argmax(1) == y).sum()
        self.seen += n

    def after_training_epoch(self, strategy, **kwargs):
        self.epoch += 1
        if not self.seen:
            return
        loss = float(self.loss_sum) / self.seen
        acc = 100.0 * float(self.correct) / self.seen
        exp = getattr(strategy, "task_id", strategy.clock.train_exp_counter) + 1
        self.log.info("  experience %d of %d, epoch %d/%d: mean loss %.4f, train acc %.2f%%", exp, self.n_tasks,
                      self.epoch, strategy.train_epochs, loss, acc)
