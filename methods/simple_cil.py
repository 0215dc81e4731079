"""SimpleCIL: prototypes of a frozen pretrained backbone, classified by cosine similarity (no training).

Paper: Zhou, Ye, Zhan & Liu, "Revisiting Class-Incremental Learning with Pre-Trained Models: Generalizability and
Adaptivity are All You Need" (IJCV 2024, arXiv 2303.07338), the SimpleCIL baseline.
Reference implementation: LAMDA-PILOT ``models/simplecil.py`` (``replace_fc``): after each task, the mean
embedding of every new class over its training images (test-time transform, backbone in eval mode) replaces that
class's row of a cosine classifier; nothing is trained.

Here: the backbone is frozen, the config is training-free (``epochs`` 0, never set by a suite's defaults), and after each task the class means of the final-norm CLS
features are stored as rows of a :class:`PrototypeHead`. Logits are the cosine similarities to the prototypes of
every seen class, so argmax over them is SimpleCIL's prediction and the harness's metrics apply unchanged.
Prototypes are computed on the experience's training set switched to Avalanche's eval transform group
(``dataset.eval()``), which on the paper benchmarks holds the test transform (docs/baselines.md section 13), and,
like the cosine scores, in float32 even under ``amp: bf16``.

Deliberate deviations:

* PILOT's cosine classifier multiplies by a scale ``sigma``; it does not change the argmax and is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from methods.base import METHODS, CILModel, CILStrategy, GrowingHead, MethodInfo, TrainingFreeConfig, fp32


@dataclass(frozen=True)
class SimpleCILConfig(TrainingFreeConfig):
    """SimpleCIL has nothing to train: ``epochs`` (and ``init_epochs``) stay 0 (:class:`TrainingFreeConfig`)."""


class PrototypeHead(GrowingHead):
    """Cosine classifier whose rows are stored class means (a buffer: nothing here is a parameter).

    Grows like :class:`methods.base.IncrementalHead`; a row stays 0 (cosine 0) until its prototype is stored.
    """

    def __init__(self, in_features: int):
        super().__init__(in_features)
        self.register_buffer("weight", torch.zeros(0, in_features))

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def grow(self, n_total: int) -> None:
        extra = n_total - self.out_features
        if extra > 0:
            self.weight = torch.cat([self.weight, self.weight.new_zeros(extra, self.in_features)])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        with fp32():  # cosine to the prototypes in float32 even under amp: bf16
            return F.normalize(features.float(), dim=-1) @ F.normalize(self.weight.float(), dim=-1).T


@METHODS.register("simple_cil", SimpleCILConfig, info=MethodInfo(display="SimpleCIL", order=80, color="#e377c2", train_cost=0.33))
class SimpleCIL(CILStrategy):
    """SimpleCIL: class-mean prototypes of the frozen backbone, cosine-similarity prediction, no training."""

    config: SimpleCILConfig

    def build_model(self, backbone: nn.Module) -> nn.Module:
        backbone.requires_grad_(False)
        model = CILModel(backbone)
        model.head = PrototypeHead(backbone.num_features)
        return model

    @torch.no_grad()
    def finish_task(self, t: int) -> None:
        head = self.model.head
        sums = torch.zeros(self.seen, head.in_features, dtype=torch.float64, device=self.device)
        counts = torch.zeros(self.seen, dtype=torch.float64, device=self.device)
        was_training = self.model.training
        self.model.eval()
        loader = DataLoader(self.experience.dataset.eval(), batch_size=self.config.eval_batch_size, shuffle=False,
                            num_workers=self.config.num_workers)
        for batch in loader:
            x, y = batch[0].to(self.device), batch[1].to(self.device)
            with fp32():  # prototypes from float32 features even under amp: bf16
                sums.index_add_(0, y, self.model.features(x).to(torch.float64))
            counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
        self.model.train(was_training)
        new = counts > 0
        head.weight[new] = (sums[new] / counts[new, None]).to(head.weight.dtype)

    def stored_features(self) -> int:
        return self.model.head.weight.numel()
