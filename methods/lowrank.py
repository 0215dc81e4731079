"""Low-rank updates on the slices of timm's fused ``qkv`` projection: the layer behind SD-LoRA and LoRA baselines.

One :class:`LowRankQKV` wraps one ``attn.qkv`` ``nn.Linear`` (left bit-identical) and adds, to chosen output
slices (q=0, k=1, v=2), the sum of

* frozen directions of earlier tasks, stored **stacked** as buffers ``A_old (S, R, d_in)``, ``B_old (S, d, R)``
  (``R`` = total stored rank), each scaled by its task's shared magnitude times a precomputed inverse norm;
* at most one trainable direction ``A_cur (S, r, d_in)``, ``B_cur (S, d, r)`` scaled by the current magnitude.

So ``qkv(x) = W0 x + b + sum_s P_s B_s diag(scale_s) A_s x`` with one batched matmul per step, never a Python
loop over tasks. Two exact evaluation paths are chosen per call by a flop count (``path="auto"``):

* ``lowrank``: ``x -> x A^T -> * scale -> B``; cost grows with ``R`` (cheap while ``R`` is small);
* ``dense``: ``W_eff = W0 + P B diag(scale) A`` formed once per step (``d^2 R`` flops, independent of the batch),
  then one linear; cost flat in the number of tasks.

``merge()`` caches ``W_eff`` for inference: evaluation costs exactly one plain ViT pass (SD-LoRA's "no
inference overhead" claim, docs/sdlora.md section 2).

Magnitudes are shared by every layer and projection (docs/sdlora.md section 2) and live in one
:class:`Magnitudes` module referenced (not owned) by the layers, so they appear once in ``state_dict``.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

SLICE_INDEX = {"q": 0, "k": 1, "v": 2}


class Magnitudes(nn.Module):
    """The shared magnitudes: ``old[i]`` scales stored direction i, ``cur`` the direction being trained."""

    def __init__(self, init: float = 1.0):
        super().__init__()
        self.old = nn.Parameter(torch.zeros(0))
        self.cur = nn.Parameter(torch.tensor(float(init)))

    def set_old(self, values: torch.Tensor) -> None:
        # A new Parameter object per task: the optimizer is rebuilt per task anyway.
        self.old = nn.Parameter(values.detach().clone().float(), requires_grad=self.old.requires_grad)


def frobenius_norms(A: torch.Tensor, B: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-slice norm of the direction ``B @ A`` for ``A (S, r, d_in)``, ``B (S, d, r)``.

    ``code``: ``||B||_F * ||A||_F`` (the official code, an upper bound); ``paper``: ``||B A||_F`` computed as
    ``sqrt(tr((B^T B)(A A^T)))`` without forming the d x d product.
    """
    if mode == "code":
        return A.flatten(1).norm(dim=1) * B.flatten(1).norm(dim=1)
    if mode == "none":  # diagnostic: directions kept at their learned scale
        return torch.ones(A.shape[0], dtype=A.dtype, device=A.device)
    btb = B.transpose(1, 2) @ B  # (S, r, r)
    aat = A @ A.transpose(1, 2)
    return (btb * aat).sum(dim=(1, 2)).clamp_min(0).sqrt()


class LowRankQKV(nn.Module):
    """A fused-qkv linear plus stacked low-rank updates on some of its slices (see module docstring)."""

    def __init__(self, base: nn.Linear, slices: tuple[str, ...], magnitudes: Magnitudes, norm_mode: str = "code",
                 path: str = "auto"):
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
        self.register_buffer("inv_norm", torch.zeros(S, 0, device=w.device))  # (S, T): 1/norm per task
        self.register_buffer("offset", torch.zeros(S, 0, device=w.device))  # (S, T): per-layer magnitude offsets
        self.A_cur: nn.Parameter | None = None
        self.B_cur: nn.Parameter | None = None
        self.cur_normalized = False  # normalise the current direction live (ablation "single")
        object.__setattr__(self, "_mags", magnitudes)  # shared, not owned: stays out of this module's state_dict
        self.norm_mode = norm_mode
        self.path = path
        self.merged_weight: torch.Tensor | None = None

    # ----------------------------------------------------------------- directions
    @property
    def n_old(self) -> int:
        return self.inv_norm.shape[1]

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
        self.cur_normalized = False

    def current_norm(self) -> torch.Tensor:
        return frobenius_norms(self.A_cur, self.B_cur, self.norm_mode)

    def freeze_direction(self, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Move the current direction into the frozen stack; returns its per-slice norm.

        ``keep`` (S,) bool zeroes the direction in slices where it is False (KD, per-layer folding).
        """
        with torch.no_grad():
            A, B = self.A_cur.detach().clone(), self.B_cur.detach().clone()
            norm = frobenius_norms(A, B, self.norm_mode)
            inv = torch.where(norm > 0, 1.0 / norm.clamp_min(1e-30), torch.zeros_like(norm))
            if keep is not None:
                A, B, inv = A * keep[:, None, None], B * keep[:, None, None], inv * keep
            t = self.n_old
            self.A_old = torch.cat([self.A_old, A], dim=1)
            self.B_old = torch.cat([self.B_old, B], dim=2)
            self.row_task = torch.cat([self.row_task, torch.full((A.shape[1],), t, device=A.device)])
            self.inv_norm = torch.cat([self.inv_norm, inv[:, None].to(self.inv_norm.dtype)], dim=1)
            self.offset = torch.cat([self.offset, torch.zeros_like(inv[:, None])], dim=1)
        self.drop_direction()
        return norm

    def drop_direction(self) -> None:
        self.A_cur = None
        self.B_cur = None
        self.cur_normalized = False

    def trainable(self) -> Iterator[nn.Parameter]:
        if self.A_cur is not None:
            yield self.A_cur
            yield self.B_cur

    # ----------------------------------------------------------------- forward
    def old_scales(self) -> torch.Tensor:
        """(S, R) scale of every stored rank row: (shared magnitude + layer offset) / norm of its task."""
        mags = self._mags.old
        per_task = (mags[None, :] + self.offset) * self.inv_norm  # (S, T)
        return per_task[:, self.row_task]

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stacked ``A (S, R', d_in)``, ``B (S, d, R')`` and scales ``(S, R')`` of every active direction."""
        A, B, s = self.A_old, self.B_old, self.old_scales() if self.n_old else self.inv_norm[:, :0]
        if self.A_cur is not None:
            cur = self._mags.cur.expand(len(self.slice_names))
            if self.cur_normalized:
                cur = cur / self.current_norm().clamp_min(1e-12)
            r = self.A_cur.shape[1]
            A = torch.cat([A, self.A_cur], dim=1)
            B = torch.cat([B, self.B_cur], dim=2)
            s = torch.cat([s.to(A.dtype), cur[:, None].expand(-1, r).to(A.dtype)], dim=1)
        return A, B, s.to(A.dtype)

    def delta_weight(self, A: torch.Tensor, B: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The dense update of the whole fused weight, (3d, d_in), zero on untouched slices."""
        per_slice = (B * s[:, None, :]) @ A  # (S, d, d_in)
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
            A, B, s = self.factors()
            return F.linear(x, self.base.weight + self.delta_weight(A, B, s), self.base.bias)
        return self._lowrank_forward(x, n_tokens)

    def _lowrank_forward(self, x: torch.Tensor, n_tokens: int) -> torch.Tensor:
        """``W0 x + b`` plus, per adapted slice (a loop of at most 3, never over tasks), one thin matmul pair for
        all stored directions and one for the current direction. Old and current factors are kept apart so that
        autograd computes weight gradients for the current factors only (a concatenated factor would get a
        gradient over every stored rank row, ~50% more backward work)."""
        out = self.base(x)
        x2 = x.reshape(n_tokens, self.d_in)
        out2 = out.view(n_tokens, 3 * self.d)
        s_old = self.old_scales() if self.n_old else None
        cur = None
        if self.A_cur is not None:
            cur = self._mags.cur.expand(len(self.slice_names))
            if self.cur_normalized:
                cur = cur / self.current_norm().clamp_min(1e-12)
        for i, k in enumerate(self.slice_idx.tolist()):
            up = None
            if s_old is not None:
                up = ((x2 @ self.A_old[i].t()) * s_old[i].to(x.dtype)) @ self.B_old[i].t()
            if cur is not None:
                up_cur = ((x2 @ self.A_cur[i].t()) * cur[i].to(x.dtype)) @ self.B_cur[i].t()
                up = up_cur if up is None else up + up_cur
            out2[:, k * self.d : (k + 1) * self.d] += up  # in place: the frozen linear's backward needs only x, W
        return out


def plain_lora(model: nn.Module, slices: tuple[str, ...], path: str = "auto") -> list[LowRankQKV]:
    """LoRA without magnitudes on ``model.backbone`` (seq_lora, InfLoRA): the layers scale the current direction
    by a shared magnitude, so a constant, untrained 1.0 gives plain ``W0 + B A``; stored norms are unused."""
    model.magnitudes = Magnitudes(1.0)
    model.magnitudes.requires_grad_(False)
    return wrap_qkv(model.backbone, tuple(slices), model.magnitudes, "code", path)


class MergedEvaluation:
    """Mixin for strategies whose ``self.layers`` are :class:`LowRankQKV`: evaluate on merged weights (one plain
    ViT pass) when the config's ``merge_eval`` is set."""

    def before_evaluation(self) -> None:
        if self.config.merge_eval:
            for layer in self.layers:
                layer.merge()

    def after_evaluation(self) -> None:
        for layer in self.layers:
            layer.unmerge()


def wrap_qkv(backbone: nn.Module, slices: tuple[str, ...], magnitudes: Magnitudes, norm_mode: str = "code",
             path: str = "auto") -> list[LowRankQKV]:
    """Replace ``attn.qkv`` of every timm block by a :class:`LowRankQKV`; returns the wrappers in block order."""
    layers = []
    for block in backbone.blocks:
        if not isinstance(block.attn.qkv, nn.Linear):
            raise TypeError("expected a timm ViT whose blocks have a fused attn.qkv nn.Linear")
        layer = LowRankQKV(block.attn.qkv, slices, magnitudes, norm_mode, path)
        block.attn.qkv = layer
        layers.append(layer)
    return layers


def direction_grams(layers: list[LowRankQKV], include_current: bool = True) -> torch.Tensor:
    """Gram matrices ``<D_i, D_j>_F`` of the normalised directions, per layer and slice: (L, S, T', T').

    ``D_i = B_i A_i / norm_i`` for stored task i and, when ``include_current``, the current direction
    normalised the same way as the last index. Computed from r x r products, never d x d matrices.
    """
    grams = []
    for layer in layers:
        with torch.no_grad():
            A, B = layer.A_old.double(), layer.B_old.double()
            w = layer.inv_norm.double()[:, layer.row_task]  # (S, R)
            T = layer.n_old
            onehot = F.one_hot(layer.row_task, T + 1).double() if T else torch.zeros(0, T + 1, dtype=torch.double)
            onehot = onehot.to(A.device)
            if include_current and layer.A_cur is not None:
                r = layer.A_cur.shape[1]
                A = torch.cat([A, layer.A_cur.detach().double()], dim=1)
                B = torch.cat([B, layer.B_cur.detach().double()], dim=2)
                norm = frobenius_norms(layer.A_cur.detach().double(), layer.B_cur.detach().double(), layer.norm_mode)
                w = torch.cat([w, (1.0 / norm.clamp_min(1e-30))[:, None].expand(-1, r)], dim=1)
                cur = torch.zeros(r, T + 1, dtype=torch.double, device=A.device)
                cur[:, T] = 1
                onehot = torch.cat([onehot, cur], dim=0)
            else:
                onehot = onehot[:, :T]
            M = (B.transpose(1, 2) @ B) * (A @ A.transpose(1, 2)).transpose(1, 2)  # (S, R', R')
            M = M * w[:, :, None] * w[:, None, :]
            grams.append(onehot.t() @ M @ onehot)
    return torch.stack(grams)


def least_squares_residual(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit the last direction on the others from their Gram matrix (..., T+1, T+1).

    Returns ``(coefficients (..., T), residual norm, norm of the last direction)``; the minimum-norm
    solution (pseudo-inverse) is used so that collinear old directions are handled.
    """
    G_oo, g = gram[..., :-1, :-1], gram[..., :-1, -1]
    coef = (torch.linalg.pinv(G_oo, hermitian=True) @ g[..., None])[..., 0]
    sq = gram[..., -1, -1] - (coef * g).sum(-1)
    return coef, sq.clamp_min(0).sqrt(), gram[..., -1, -1].clamp_min(0).sqrt()
