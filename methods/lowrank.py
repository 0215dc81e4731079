"""Plain LoRA on the slices of timm's fused ``qkv`` projection: the generic layer under SD-LoRA and the LoRA baselines.

One :class:`LowRankQKV` wraps one ``attn.qkv`` ``nn.Linear`` (left bit-identical) and adds, to chosen output
slices (q=0, k=1, v=2), the sum of

* frozen directions of earlier tasks, stored **stacked** as buffers ``A_old (S, R, d_in)``, ``B_old (S, d, R)``
  (``R`` = total stored rank; ``row_task (R,)`` says which task each rank row came from);
* at most one trainable direction ``A_cur (S, r, d_in)``, ``B_cur (S, d, r)``.

So ``qkv(x) = W0 x + b + sum_s P_s B_s A_s x`` with one batched matmul per step, never a Python loop over tasks.
A variant may weight each rank row by a scale (``old_scales()``, ``current_scale()``: None here, i.e. plain
``B A``); SD-LoRA's normalised directions with shared magnitudes are such a variant (methods/sd_lora.py), the
way PEFT keeps DoRA a variant of its LoRA layer. Two exact evaluation paths are chosen per call by a flop count
(``path="auto"``):

* ``lowrank``: ``x -> x A^T -> (* scale) -> B``; cost grows with ``R`` (cheap while ``R`` is small);
* ``dense``: ``W_eff = W0 + P B diag(scale) A`` formed once per step (``d^2 R`` flops, independent of the batch),
  then one linear; cost flat in the number of tasks.

``merge()`` caches ``W_eff`` for inference: evaluation costs exactly one plain ViT pass.

:class:`LowRankConfig` holds the fields every LoRA method shares and :class:`LowRankStrategy` the model they
build (frozen backbone, wrapped ``qkv``, merged evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.config import check
from methods.base import CILModel, CILStrategy, MethodConfig

SLICE_INDEX = {"q": 0, "k": 1, "v": 2}


@dataclass(frozen=True)
class LowRankConfig(MethodConfig):
    """Fields of every method built on :class:`LowRankQKV`.

    Attributes:
        rank: rank of a direction (per adapted slice).
        slices: adapted slices of the fused qkv.
        path: ``auto``/``lowrank``/``dense`` evaluation of the update during training (module docstring).
        merge_eval: fold the update into the weight for evaluation (exact; one plain ViT pass).
    """

    rank: int = 10
    slices: tuple[str, ...] = ("q", "v")
    path: str = "auto"
    merge_eval: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.rank >= 1, f"rank must be >= 1, got {self.rank}")
        check(bool(self.slices) and set(self.slices) <= {"q", "k", "v"}, "slices must be a subset of [q, k, v]")
        check(self.path in ("auto", "lowrank", "dense"), "path must be auto, lowrank or dense")


class LowRankQKV(nn.Module):
    """A fused-qkv linear plus stacked low-rank updates on some of its slices (see module docstring)."""

    def __init__(self, base: nn.Linear, slices: tuple[str, ...], path: str = "auto"):
        super().__init__()
        self.base = base
        self.d_in = base.in_features
        self.d = base.out_features // 3
        self.slice_names = tuple(slices)
        self.register_buffer("slice_idx", torch.tensor([SLICE_INDEX[s] for s in slices]), persistent=False)
        S = len(slices)
        w = base.weight
        self.register_buffer("A_old", torch.zeros(S, 0, self.d_in, dtype=w.dtype, device=w.device))
        self.register_buffer("B_old", torch.zeros(S, self.d, 0, dtype=w.dtype, device=w.device))
        self.register_buffer("row_task", torch.zeros(0, dtype=torch.long, device=w.device))
        self.A_cur: nn.Parameter | None = None
        self.B_cur: nn.Parameter | None = None
        self.path = path
        self.merged_weight: torch.Tensor | None = None

    # ----------------------------------------------------------------- directions
    @property
    def n_old(self) -> int:
        """Number of frozen directions (tasks); every one has rank >= 1, so it is the last row's task + 1."""
        return int(self.row_task[-1]) + 1 if self.row_task.numel() else 0

    @property
    def stored_rank(self) -> int:
        return self.A_old.shape[1]

    def add_direction(self, rank: int, generator: torch.Generator | None = None) -> None:
        """A new trainable direction: ``A ~ U(+-1/sqrt(d_in))`` (kaiming_uniform a=sqrt(5)), ``B = 0``."""
        S, dev, dt = len(self.slice_names), self.base.weight.device, self.base.weight.dtype
        bound = 1.0 / math.sqrt(self.d_in)
        A = (torch.rand(S, rank, self.d_in, generator=generator) * 2 - 1) * bound
        self.A_cur = nn.Parameter(A.to(device=dev, dtype=dt))
        self.B_cur = nn.Parameter(torch.zeros(S, self.d, rank, device=dev, dtype=dt))

    def freeze_direction(self, keep: torch.Tensor | None = None) -> None:
        """Move the current direction into the frozen stack as task ``n_old``.

        ``keep`` (S,) bool zeroes the direction in slices where it is False (SD-LoRA-KD's per-layer folding).
        """
        with torch.no_grad():
            A, B = self.A_cur.detach().clone(), self.B_cur.detach().clone()
            if keep is not None:
                A, B = A * keep[:, None, None], B * keep[:, None, None]
            t = self.n_old
            self.A_old = torch.cat([self.A_old, A], dim=1)
            self.B_old = torch.cat([self.B_old, B], dim=2)
            self.row_task = torch.cat([self.row_task, torch.full((A.shape[1],), t, device=A.device)])
        self.drop_direction()

    def drop_direction(self) -> None:
        self.A_cur = None
        self.B_cur = None

    def trainable(self) -> Iterator[nn.Parameter]:
        if self.A_cur is not None:
            yield self.A_cur
            yield self.B_cur

    # ----------------------------------------------------------------- scales (a variant's part)
    def old_scales(self) -> torch.Tensor | None:
        """(S, R) weight of every stored rank row; None: each counts once (plain LoRA)."""
        return None

    def current_scale(self) -> torch.Tensor | None:
        """(S,) weight of the current direction per slice; None: 1 (plain LoRA)."""
        return None

    # ----------------------------------------------------------------- forward
    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Stacked ``A (S, R', d_in)``, ``B (S, d, R')`` and scales ``(S, R')`` (None: all 1) of every direction."""
        A, B = self.A_old, self.B_old
        s = self.old_scales() if self.stored_rank else None
        if self.A_cur is not None:
            cur = self.current_scale()
            r = self.A_cur.shape[1]
            if s is not None or cur is not None:
                S = len(self.slice_names)
                s = s if s is not None else torch.ones(S, self.stored_rank, dtype=A.dtype, device=A.device)
                cur = cur if cur is not None else torch.ones(S, dtype=A.dtype, device=A.device)
                s = torch.cat([s.to(A.dtype), cur[:, None].expand(-1, r).to(A.dtype)], dim=1)
            A = torch.cat([A, self.A_cur], dim=1)
            B = torch.cat([B, self.B_cur], dim=2)
        return A, B, None if s is None else s.to(A.dtype)

    def delta_weight(self, A: torch.Tensor, B: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
        """The dense update of the whole fused weight, (3d, d_in), zero on untouched slices."""
        per_slice = (B if s is None else B * s[:, None, :]) @ A  # (S, d, d_in)
        pieces = [torch.zeros(self.d, self.d_in, dtype=A.dtype, device=A.device)] * 3
        for i, k in enumerate(self.slice_idx.tolist()):
            pieces[k] = per_slice[i]
        return torch.cat(pieces, dim=0)

    def effective_weight(self) -> torch.Tensor:
        A, B, s = self.factors()
        if A.shape[1] == 0:
            return self.base.weight
        return self.base.weight + self.delta_weight(A, B, s)

    def merge(self) -> None:
        """Fold every term into one weight for inference (the backbone's own weight is left untouched)."""
        with torch.no_grad():
            self.merged_weight = self.effective_weight().detach().clone()

    def unmerge(self) -> None:
        self.merged_weight = None

    def _use_dense(self, n_tokens: int, rank: int) -> bool:
        if self.path != "auto":
            return self.path == "dense"
        S, d, d_in = len(self.slice_names), self.d, self.d_in
        if torch.is_grad_enabled():
            lowrank = 4 * S * n_tokens * d_in * rank  # forward + backward of the two thin matmuls
            dense = n_tokens * 3 * d * d_in + 3 * S * d * d_in * rank  # grad of the fused weight + forming W_eff
        else:
            lowrank = 2 * S * n_tokens * d_in * rank
            dense = S * d * d_in * rank
        return dense < lowrank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged_weight is not None:
            return F.linear(x, self.merged_weight, self.base.bias)
        rank = self.stored_rank + (self.A_cur.shape[1] if self.A_cur is not None else 0)
        if rank == 0:
            return self.base(x)
        n_tokens = x.numel() // self.d_in
        if self._use_dense(n_tokens, rank):
            return F.linear(x, self.base.weight + self.delta_weight(*self.factors()), self.base.bias)
        return self._lowrank_forward(x, n_tokens)

    def _lowrank_forward(self, x: torch.Tensor, n_tokens: int) -> torch.Tensor:
        """``W0 x + b`` plus, per adapted slice (a loop of at most 3, never over tasks), one thin matmul pair for
        all stored directions and one for the current direction. Old and current factors are kept apart so that
        autograd computes weight gradients for the current factors only (a concatenated factor would get a
        gradient over every stored rank row, ~50% more backward work)."""
        out = self.base(x)
        x2 = x.reshape(n_tokens, self.d_in)
        out2 = out.view(n_tokens, 3 * self.d)
        s_old = self.old_scales() if self.stored_rank else None
        s_cur = self.current_scale() if self.A_cur is not None else None

        def branch(A: torch.Tensor, B: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
            h = x2 @ A.t()
            return (h if s is None else h * s.to(x.dtype)) @ B.t()

        for i, k in enumerate(self.slice_idx.tolist()):
            up = None
            if self.stored_rank:
                up = branch(self.A_old[i], self.B_old[i], None if s_old is None else s_old[i])
            if self.A_cur is not None:
                up_cur = branch(self.A_cur[i], self.B_cur[i], None if s_cur is None else s_cur[i])
                up = up_cur if up is None else up + up_cur
            out2[:, k * self.d : (k + 1) * self.d] += up  # in place: the frozen linear's backward needs only x, W
        return out


def wrap_qkv(backbone: nn.Module, make_layer: Callable[[nn.Linear], LowRankQKV]) -> list[LowRankQKV]:
    """Replace ``attn.qkv`` of every timm block by ``make_layer(qkv)``; returns the wrappers in block order."""
    layers = []
    for block in backbone.blocks:
        if not isinstance(block.attn.qkv, nn.Linear):
            raise TypeError("expected a timm ViT whose blocks have a fused attn.qkv nn.Linear")
        layer = make_layer(block.attn.qkv)
        block.attn.qkv = layer
        layers.append(layer)
    return layers


class LowRankStrategy(CILStrategy):
    """Base of the LoRA strategies: the frozen backbone with every block's ``qkv`` wrapped (``self.layers``, in
    block order) and, when the config's ``merge_eval`` is set, evaluation on merged weights (one plain ViT pass).
    The default layer is plain LoRA; a variant passes its own ``make_layer`` to :meth:`wrap`."""

    config: LowRankConfig

    def build_model(self, backbone: nn.Module) -> nn.Module:
        return self.wrap(backbone, lambda qkv: LowRankQKV(qkv, tuple(self.config.slices), self.config.path))

    def wrap(self, backbone: nn.Module, make_layer: Callable[[nn.Linear], LowRankQKV]) -> CILModel:
        backbone.requires_grad_(False)
        model = CILModel(backbone)
        self.layers = wrap_qkv(backbone, make_layer)
        return model

    def before_evaluation(self) -> None:
        if self.config.merge_eval:
            for layer in self.layers:
                layer.merge()

    def after_evaluation(self) -> None:
        for layer in self.layers:
            layer.unmerge()
