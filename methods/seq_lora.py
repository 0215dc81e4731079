"""Sequential vanilla LoRA: one LoRA module trained on every task in turn (the "vanilla LoRA" of SD-LoRA).

Paper: Wu et al., "SD-LoRA: Scalable Decoupled Low-Rank Adaptation for Class Incremental Learning", ICLR 2025
(arXiv 2501.13198), the baseline of Fig. 2(b,c) and Fig. 4 ("vanilla LoRA": one LoRA trained sequentially).
Reference implementation: none is released for this baseline (docs/sdlora.md section 9: the analysis code is
unreleased); this file restates it on the SD-LoRA code's choices (WuYichen-97/SD-Lora-CL at 8bacded):

* placement and rank as SD-LoRA (docs/sdlora.md section 1): the q and v slices of every block's fused ``qkv``,
  rank 10, ``A`` kaiming-uniform, ``B = 0``, no bias, no dropout, no alpha/r scaling;
* one direction ``(A, B)`` created before the first task and trained, together with the head, in **every**
  task: ``qkv(x) = W0 x + b + B A x`` (no magnitudes, no normalisation; the scale is a constant 1);
* the growing linear head with old-logit masking of the base strategy (docs/sdlora.md section 5);
* optimizer as SD-LoRA's code: SGD, momentum 0.9, no weight decay, lr 0.01 unless a suite says otherwise;
* inference on merged weights (``W0 + B A`` folded into ``qkv``): one plain ViT pass.

Deliberate deviations: none from the description above; the paper gives no optimizer for this baseline, so it
shares SD-LoRA's so that the two differ only in the decoupling.

Mechanism record (Fig. 2b/Fig. 4 diagnostics): after each task, the mean over blocks and slices of ``||B A||_F``
and the cosine between the update ``B A`` at the end of this task and at the end of the previous one (1.0 would
mean the direction stopped moving).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from methods.base import METHODS, MethodInfo
from methods.lowrank import LowRankConfig, LowRankStrategy


@dataclass(frozen=True)
class SeqLoRAConfig(LowRankConfig):
    """Fields of :class:`LowRankConfig` (rank 10 on q and v, SD-LoRA's) and the optimizer's lr."""

    lr: float = 0.01


@METHODS.register("seq_lora", SeqLoRAConfig, info=MethodInfo(display="Sequential LoRA", order=70, color="#bcbd22"))
class SeqLoRA(LowRankStrategy):
    """Vanilla LoRA trained sequentially: one (A, B) on q and v, trained in every task (SD-LoRA Fig. 2b)."""

    config: SeqLoRAConfig

    def build_model(self, backbone: nn.Module) -> nn.Module:
        model = super().build_model(backbone)
        self.history: dict = {"update_norm": [], "cosine_to_previous": []}
        self._previous_update: list[torch.Tensor] | None = None
        return model

    def setup_task(self, t: int, experience) -> None:
        if self.layers[0].A_cur is None:  # first task (or a fresh strategy): the one direction is created once
            for layer in self.layers:
                layer.add_direction(self.config.rank)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.model.head.parameters()
        for layer in self.layers:
            yield from layer.trainable()

    def _updates(self) -> list[torch.Tensor]:
        with torch.no_grad():
            return [(layer.B_cur @ layer.A_cur).detach().double().cpu() for layer in self.layers]  # (S, d, d_in)

    def finish_task(self, t: int) -> None:
        updates = self._updates()
        self.history["update_norm"].append(float(torch.stack([u.flatten(1).norm(dim=1) for u in updates]).mean()))
        if self._previous_update is not None:
            cur = torch.cat([u.flatten() for u in updates])
            prev = torch.cat([u.flatten() for u in self._previous_update])
            cos = float(cur @ prev / (cur.norm() * prev.norm()).clamp_min(1e-30))
            self.history["cosine_to_previous"].append(cos)
        self._previous_update = updates

    def restore(self, checkpoint: dict) -> None:
        super().restore(checkpoint)
        # checkpoints are taken at task ends, so the restored B A is the previous task's update (the cosine's base)
        self._previous_update = self._updates() if self.layers[0].A_cur is not None else None
