"""Partial fine-tuning: train only the last few transformer blocks (and the final norm) plus the head.

A worked example for docs/adding_a_method.md, loaded with ``--import examples/last_blocks.py``; not a paper
baseline. Everything else (growing head, old-logit masking, optimizer per task, metrics) comes from the base
strategy. Mechanism record: after each task, the relative drift ``||W - W0|| / ||W0||`` of the tuned blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.config import check
from methods.base import METHODS, CILModel, CILStrategy, MethodConfig


@dataclass(frozen=True)
class LastBlocksConfig(MethodConfig):
    """Attributes:
    n_blocks: how many of the last transformer blocks are trained (the rest stays frozen).
    """

    lr: float = 0.01
    n_blocks: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_blocks >= 1, f"n_blocks must be >= 1, got {self.n_blocks}")


@METHODS.register("last_blocks", LastBlocksConfig)
class LastBlocks(CILStrategy):
    """Fine-tunes the last n_blocks transformer blocks, the final norm and the head; the rest is frozen."""

    config: LastBlocksConfig

    def build_model(self, backbone: nn.Module) -> nn.Module:
        backbone.requires_grad_(False)
        tuned = nn.ModuleList([*backbone.blocks[-self.config.n_blocks :], backbone.norm])
        tuned.requires_grad_(True)  # trainable_parameters() defaults to every parameter with requires_grad
        self.tuned = tuned
        self.pretrained = [p.detach().clone() for p in tuned.parameters()]
        self.history: dict = {"drift": []}
        return CILModel(backbone)

    def finish_task(self, t: int) -> None:
        with torch.no_grad():
            now = torch.cat([p.flatten() for p in self.tuned.parameters()])
            start = torch.cat([p.flatten() for p in self.pretrained]).to(now.device)
            self.history["drift"].append(float((now - start).norm() / start.norm()))

    def mechanism(self) -> dict:
        return self.history

    def extra_state(self) -> dict:
        return {**super().extra_state(), "history": self.history}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.history = state["history"]
