"""Fixture methods for the method contract: a training-free ridge-regression readout, in two versions.

Both fit, after each task, a closed-form linear readout of the frozen backbone's features on the statistics of
every class seen so far (the Gram matrix ``G = sum x x^T`` and the class sums ``C = sum x onehot(y)^T``, as
RanPAC and other analytic-readout methods accumulate them): ``W = (G + ridge I)^-1 C``, the head's rows.

* ``ridge_buffers`` keeps ``G`` and ``C`` as registered buffers of the model, so ``checkpoint()`` saves them.
* ``ridge_lost_state`` keeps them in a plain Python attribute that ``checkpoint()`` never sees. Right after a
  restore it predicts exactly as before (the head's rows are saved), but a resumed job continues from empty
  statistics and its readout forgets every task before the restart: the bug the resume contract must catch.

Neither is registered at import (the contract would then run them as real methods); a test registers them for
its own duration with :func:`registered`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from core.config import check
from core.registry import Entry
from methods.base import METHODS, TrainingFreeConfig
from methods.simple_cil import PrototypeHead, SimpleCIL


@dataclass(frozen=True)
class RidgeConfig(TrainingFreeConfig):
    """Attributes:
    ridge: the ridge penalty added to the Gram matrix's diagonal.
    """

    ridge: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.ridge > 0, f"ridge must be > 0, got {self.ridge}")


class ReadoutHead(PrototypeHead):
    """SimpleCIL's growing buffer of rows, read out linearly (no bias, no normalisation): nothing is trained."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.weight)


class _Ridge(SimpleCIL):
    """SimpleCIL's frozen backbone; after each task the readout is refitted on the statistics of every class seen
    so far."""

    config: RidgeConfig

    def build_model(self, backbone: nn.Module) -> nn.Module:
        model = super().build_model(backbone)
        model.head = ReadoutHead(backbone.num_features)
        return model

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(G, C) so far, ``C`` widened to the classes seen (new columns 0)."""
        raise NotImplementedError

    def keep(self, gram: torch.Tensor, sums: torch.Tensor) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def finish_task(self, t: int) -> None:
        gram, sums = self.statistics()
        loader = DataLoader(self.experience.dataset.eval(), batch_size=self.config.eval_batch_size, shuffle=False)
        for batch in loader:
            x, y = batch[0].to(self.device), batch[1].to(self.device)
            feats = self.model.features(x).to(torch.float64)
            gram += feats.T @ feats
            sums += feats.T @ F.one_hot(y, self.seen).to(torch.float64)
        self.keep(gram, sums)
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        self.model.head.weight = torch.linalg.solve(gram + self.config.ridge * eye, sums).T.to(torch.float32)


class RidgeBuffers(_Ridge):
    """The statistics are buffers of the model: checkpointed and restored with it."""

    def build_model(self, backbone: nn.Module) -> nn.Module:
        model = super().build_model(backbone)
        d = backbone.num_features
        model.register_buffer("gram", torch.zeros(d, d, dtype=torch.float64))
        model.register_buffer("sums", torch.zeros(d, 0, dtype=torch.float64))  # grows: restore re-creates it
        return model

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        sums = self.model.sums
        return self.model.gram.clone(), F.pad(sums, (0, self.seen - sums.shape[1]))

    def keep(self, gram: torch.Tensor, sums: torch.Tensor) -> None:
        self.model.gram, self.model.sums = gram, sums


class RidgeLostState(_Ridge):
    """The statistics live in a plain attribute that ``checkpoint()`` does not save (the bug)."""

    def build_model(self, backbone: nn.Module) -> nn.Module:
        d = backbone.num_features
        self.stats = (torch.zeros(d, d, dtype=torch.float64), torch.zeros(d, 0, dtype=torch.float64))
        return super().build_model(backbone)

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        gram, sums = (s.to(self.device) for s in self.stats)
        return gram.clone(), F.pad(sums, (0, self.seen - sums.shape[1]))

    def keep(self, gram: torch.Tensor, sums: torch.Tensor) -> None:
        self.stats = (gram, sums)


FIXTURES = {"ridge_buffers": RidgeBuffers, "ridge_lost_state": RidgeLostState}


@contextlib.contextmanager
def registered(*names: str):
    """Register the named fixture methods in ``METHODS`` for the duration of the block."""
    added = [name for name in names if name not in METHODS]
    for name in added:
        METHODS._entries[name] = Entry(name, FIXTURES[name], RidgeConfig, FIXTURES[name].__doc__ or "")
    try:
        yield
    finally:
        for name in added:
            METHODS._entries.pop(name, None)
