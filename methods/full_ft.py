"""Full sequential fine-tuning: the whole backbone and the head are trained on each task in turn.

"Sequential fine-tuning" is under-defined in the literature (LAE issue #1: 77.6 vs 33.6 for "the same"
baseline), so exactly: the same growing linear head with old-logit masking as SD-LoRA (docs/sdlora.md
section 5), one learning rate ``lr`` for backbone and head, SGD with momentum 0.9 and no weight decay (the
SD-LoRA code's optimizer); no rehearsal, no regularisation. The suites set ``lr`` per benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from methods.base import METHODS, CILModel, CILStrategy, MethodConfig, MethodInfo


@dataclass(frozen=True)
class FullFTConfig(MethodConfig):
    lr: float = 0.01


@METHODS.register("full_ft", FullFTConfig, info=MethodInfo(display="Full fine-tuning", order=10, color="#7f7f7f", train_cost=1.5, paper_key="full_ft"))
class FullFineTuning(CILStrategy):
    """Full sequential fine-tuning of backbone and head (the lower bound of the paper's tables)."""

    config: FullFTConfig

    def build_model(self, backbone: nn.Module) -> nn.Module:
        backbone.requires_grad_(True)
        return CILModel(backbone)
