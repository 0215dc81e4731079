"""SD-LoRA (Wu et al., ICLR 2025, arXiv 2501.13198) and its variants RR and KD, plus the Table 4 ablations.

Reference code: WuYichen-97/SD-Lora-CL at 8bacded (docs/sdlora.md). For task t and every block, on the q and v
slices of the fused ``qkv`` (docs/sdlora.md section 1)::

    qkv(x) = W0 x + b + sum_{i<t} alpha_i * B_i A_i x / norm_i  +  alpha_t * B_t A_t x

with one set of magnitudes ``alpha`` shared by all blocks and projections, old directions frozen, and
``A_t`` kaiming-uniform, ``B_t = 0`` (section 2). Trainable: ``A_t, B_t``, every ``alpha``, the head.
No rehearsal, no component selection at inference; evaluation runs on merged weights (one plain ViT pass).
The layer is :class:`DecoupledQKV`: the normalisation and the shared :class:`Magnitudes` on top of the plain
LoRA layer of methods/lowrank.py (stacked frozen factors, merge, the lowrank/dense paths).

Defaults follow the official code (what produced the paper's logs); each place where paper and code disagree
is a field (docs/sdlora.md section 12):

* ``norm_mode``: ``code`` = ``||B||_F ||A||_F`` for old directions; ``paper`` = ``||B A||_F``.
  ``none`` (a diagnostic, in neither) keeps frozen directions at their learned scale.
  In every mode the *current* direction is trained unnormalised: the paper's ``B_t A_t / ||B_t A_t||`` is 0/0 at
  its ``B_t = 0`` initialisation (deliberate deviation from Eq. 4, as the code does).
* ``alpha_init``: 0.8 (code) vs 1.0 (paper).
* ``carry_alpha``: False (code: every magnitude is re-initialised at each task) vs True (paper: magnitudes
  tracked over time; the magnitude learned for the current direction becomes its old magnitude as is).
* optimizer recipe: preset ``code`` (SGD momentum 0.9, no weight decay; lr from the suite) vs preset
  ``paper_optim`` (Adam, lr 8e-3); preset ``paper`` switches all four to the paper's choices.
* ``freeze_at``: ``next_task`` (code: the model evaluated after task t still holds task t's direction as trained,
  unnormalised; it is frozen and normalised when task t+1 starts, as ``update_network`` does) vs ``task_end``
  (paper: every direction normalised in the evaluated model). KD folds at the same moment.
* No cap on the number of tasks (the code's 20 magnitude slots are gone).

Variants: ``sd_lora_rr`` (section 3: rank 10 for tasks 1-4, 8 for 5-8, 6 after; old directions keep theirs) and
``sd_lora_kd`` (section 4, not in the official code). KD's three open choices are fields, defaults with reasons:

* ``kd_granularity="global"``: one least-squares fit over all blocks' q and v directions at once, because the
  magnitudes are shared across layers, so one coefficient per old task is the only fold that keeps them shared
  (``layer`` fits per block and projection and keeps per-layer magnitude offsets, as LibContinual does).
* ``kd_fold="exact"``: ``alpha_k += alpha_t * d_alpha_k``, which leaves the model's function unchanged when the
  fit is exact; ``paper`` uses the paper's ``alpha_k += d_alpha_k`` (exact only when alpha_t = 1).
* ``kd_residual="relative"``: ``||D_t - sum d_alpha_k D_k|| / ||D_t||``, scale-free, so tau = 9e-4 means what
  the paper means for unit-norm directions whatever the normalisation (``absolute``; ``squared`` as LibContinual).
* KD carries the magnitudes by default (``carry_alpha=True``): folding into magnitudes that the next task
  re-initialises would be a no-op.

Table 4 ablations (``variant``): ``fixed_first`` (W0 + alpha * D_1: after task 1 only its magnitude is
learned), ``single`` (W0 + alpha * bar(AB): one decoupled LoRA trained through all tasks, normalised live after
the first task), ``no_rescale`` (old directions added with fixed weight 1; only the current magnitude learned).

Mechanism records: the magnitudes after every task, the least-squares residual of the current direction on the
old ones every ``residual_every`` steps (Fig. 3a), ranks per task, KD folds and residuals.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from core.config import check
from methods.base import METHODS, MethodInfo
from methods.lowrank import LowRankConfig, LowRankQKV, LowRankStrategy

VARIANTS = ("full", "fixed_first", "single", "no_rescale")


# ---------------------------------------------------------------------------------------------------- the layer
class Magnitudes(nn.Module):
    """The shared magnitudes: ``old[i]`` scales stored direction i, ``cur`` the direction being trained.

    Shared by every layer and projection (docs/sdlora.md section 2): one module, referenced (not owned) by the
    layers, so the magnitudes appear once in ``state_dict``."""

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


class DecoupledQKV(LowRankQKV):
    """SD-LoRA's part on top of the plain LoRA layer: a stored direction ``i`` enters as
    ``(alpha_i + offset_i) * B_i A_i / norm_i`` and the current one as ``alpha_t * B_t A_t`` (divided by its live
    norm once ``cur_normalized``, ablation ``single``), with ``alpha`` the shared :class:`Magnitudes`.

    Extra state per layer: ``inv_norm (S, T)`` (1/norm of each stored task, fixed when it is frozen) and
    ``offset (S, T)`` (per-layer magnitude offsets of KD's ``layer`` granularity; zero otherwise).
    """

    def __init__(self, base: nn.Linear, slices: tuple[str, ...], magnitudes: Magnitudes, norm_mode: str = "code",
                 path: str = "auto"):
        super().__init__(base, slices, path)
        S, dev = len(self.slice_names), base.weight.device
        self.register_buffer("inv_norm", torch.zeros(S, 0, device=dev))  # (S, T): 1/norm per task
        self.register_buffer("offset", torch.zeros(S, 0, device=dev))  # (S, T): per-layer magnitude offsets
        self.cur_normalized = False  # normalise the current direction live (ablation "single")
        object.__setattr__(self, "_mags", magnitudes)  # shared, not owned: stays out of this module's state_dict
        self.norm_mode = norm_mode

    @property
    def n_old(self) -> int:
        return self.inv_norm.shape[1]  # one column per stored task; read from the shape (no device sync)

    def add_direction(self, rank: int, generator: torch.Generator | None = None) -> None:
        super().add_direction(rank, generator)
        self.cur_normalized = False

    def drop_direction(self) -> None:
        super().drop_direction()
        self.cur_normalized = False

    def current_norm(self) -> torch.Tensor:
        return frobenius_norms(self.A_cur, self.B_cur, self.norm_mode)

    def freeze_direction(self, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Store the current direction with its inverse norm (zero where ``keep`` is False); returns its
        per-slice norm."""
        with torch.no_grad():
            norm = frobenius_norms(self.A_cur.detach(), self.B_cur.detach(), self.norm_mode)
            inv = torch.where(norm > 0, 1.0 / norm.clamp_min(1e-30), torch.zeros_like(norm))
            if keep is not None:
                inv = inv * keep
        super().freeze_direction(keep)  # before inv_norm grows: it files the direction as task n_old
        with torch.no_grad():
            self.inv_norm = torch.cat([self.inv_norm, inv[:, None].to(self.inv_norm.dtype)], dim=1)
            self.offset = torch.cat([self.offset, torch.zeros_like(inv[:, None])], dim=1)
        return norm

    def old_scales(self) -> torch.Tensor | None:
        """(S, R) scale of every stored rank row: (shared magnitude + layer offset) / norm of its task."""
        if not self.n_old:
            return None
        per_task = (self._mags.old[None, :] + self.offset) * self.inv_norm  # (S, T)
        return per_task[:, self.row_task]

    def current_scale(self) -> torch.Tensor:
        cur = self._mags.cur.expand(len(self.slice_names))
        if self.cur_normalized:
            cur = cur / self.current_norm().clamp_min(1e-12)
        return cur


def direction_grams(layers: list[DecoupledQKV], include_current: bool = True) -> torch.Tensor:
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


# ---------------------------------------------------------------------------------------------------- the method
@dataclass(frozen=True)
class SDLoRAConfig(LowRankConfig):
    """SD-LoRA fields (see the module docstring for each choice; ``rank``, ``slices``, ``path``, ``merge_eval``
    from :class:`LowRankConfig`)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "code": {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.0},
        "paper_optim": {"optimizer": "adam", "lr": 0.008},
        "paper": {"optimizer": "adam", "lr": 0.008, "norm_mode": "paper", "alpha_init": 1.0, "carry_alpha": True,
                      "freeze_at": "task_end"},
    }

    lr: float = 0.01
    rank_breakpoints: tuple[int, ...] = ()
    rank_values: tuple[int, ...] = ()
    norm_mode: str = "code"
    alpha_init: float = 0.8
    carry_alpha: bool = False
    variant: str = "full"
    freeze_at: str = "next_task"
    kd: bool = False
    kd_tau: float = 9e-4
    kd_granularity: str = "global"
    kd_fold: str = "exact"
    kd_residual: str = "relative"
    residual_every: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.rank_values) == (len(self.rank_breakpoints) + 1 if self.rank_breakpoints else 0),
              "rank_values needs one more entry than rank_breakpoints (e.g. breakpoints [4, 8], values [10, 8, 6])")
        check(all(r >= 1 for r in self.rank_values), "rank_values must be >= 1")
        check(list(self.rank_breakpoints) == sorted(set(self.rank_breakpoints)), "rank_breakpoints must increase")
        check(self.norm_mode in ("code", "paper", "none"), "norm_mode must be 'code', 'paper' or 'none'")
        check(self.variant in VARIANTS, f"variant must be one of {', '.join(VARIANTS)}")
        check(self.freeze_at in ("next_task", "task_end"), "freeze_at must be 'next_task' or 'task_end'")
        check(self.kd_tau >= 0, "kd_tau must be >= 0")
        check(self.kd_granularity in ("global", "layer"), "kd_granularity must be 'global' or 'layer'")
        check(self.kd_fold in ("exact", "paper"), "kd_fold must be 'exact' or 'paper'")
        check(self.kd_residual in ("relative", "absolute", "squared"), "kd_residual must be relative|absolute|squared")
        check(self.residual_every >= 0, "residual_every must be >= 0")

    def rank_for_task(self, t: int) -> int:
        """Rank of task t (0-based); RR: ``rank_values[#breakpoints <= t]`` (docs/sdlora.md section 3)."""
        if not self.rank_breakpoints:
            return self.rank
        return self.rank_values[sum(t >= b for b in self.rank_breakpoints)]


@dataclass(frozen=True)
class SDLoRARRConfig(SDLoRAConfig):
    rank_breakpoints: tuple[int, ...] = (4, 8)
    rank_values: tuple[int, ...] = (10, 8, 6)


@dataclass(frozen=True)
class SDLoRAKDConfig(SDLoRAConfig):
    kd: bool = True
    carry_alpha: bool = True


@dataclass(frozen=True)
class FixedFirstConfig(SDLoRAConfig):
    variant: str = "fixed_first"


@dataclass(frozen=True)
class SingleConfig(SDLoRAConfig):
    variant: str = "single"


@dataclass(frozen=True)
class NoRescaleConfig(SDLoRAConfig):
    variant: str = "no_rescale"


@METHODS.register("sd_lora_no_rescale", NoRescaleConfig, "Table 4 ablation: old directions added with weight 1, no rescaling.",
                  info=MethodInfo(display="SD-LoRA, old magnitudes fixed", group="ablation", order=3, color="#c5b0d5", paper_key="ablation_fixed_old_magnitudes"))
@METHODS.register("sd_lora_single", SingleConfig, "Table 4 ablation: one decoupled LoRA (alpha * bar(AB)), no accumulation.",
                  info=MethodInfo(display="SD-LoRA, one decoupled LoRA", group="ablation", order=2, color="#98df8a", paper_key="ablation_single_decoupled_lora"))
@METHODS.register("sd_lora_fixed_first", FixedFirstConfig, "Table 4 ablation: first direction fixed, one magnitude learned.",
                  info=MethodInfo(display="SD-LoRA, first direction fixed", group="ablation", order=1, color="#aec7e8", paper_key="ablation_fixed_first_direction"))
@METHODS.register("sd_lora_kd", SDLoRAKDConfig, "SD-LoRA-KD: folds a new direction explained by the old ones into their magnitudes.",
                  info=MethodInfo(display="SD-LoRA-KD", order=110, color="#b5651d", paper_key="sd_lora_kd"))
@METHODS.register("sd_lora_rr", SDLoRARRConfig, "SD-LoRA-RR: rank 10 for tasks 1-4, 8 for 5-8, 6 after.",
                  info=MethodInfo(display="SD-LoRA-RR", order=100, color="#ff7f0e", paper_key="sd_lora_rr"))
@METHODS.register("sd_lora", SDLoRAConfig,
                  info=MethodInfo(display="SD-LoRA", order=90, color="#d62728", paper_key="sd_lora"))
class SDLoRA(LowRankStrategy):
    """SD-LoRA: per-task LoRA directions, frozen and normalised, rescaled by learned shared magnitudes."""

    config: SDLoRAConfig
    layers: list[DecoupledQKV]

    def build_model(self, backbone: nn.Module) -> nn.Module:
        cfg = self.config
        magnitudes = Magnitudes(cfg.alpha_init)
        model = self.wrap(backbone, lambda qkv: DecoupledQKV(qkv, tuple(cfg.slices), magnitudes, cfg.norm_mode,
                                                             cfg.path))
        model.magnitudes = magnitudes
        self.history = {"magnitudes": [], "residual_trace": [], "ranks": [], "kd": {"folded": [], "residuals": []},
                        "direction_norms": []}
        return model

    @property
    def mags(self) -> Magnitudes:
        return self.model.magnitudes

    def _adds_direction(self, t: int) -> bool:
        v = self.config.variant
        return v in ("full", "no_rescale") or t == 0 or (v == "single" and self.layers[0].A_cur is None)

    def setup_task(self, t: int, experience) -> None:
        cfg = self.config
        if t > 0 and cfg.freeze_at == "next_task":
            self.consolidate(t - 1)
        n_old = self.layers[0].n_old
        device = self.model.head.weight.device
        if not cfg.carry_alpha:  # the official code re-creates every magnitude at every task
            self.mags.set_old(torch.full((n_old,), cfg.alpha_init, device=device))
        if cfg.variant == "no_rescale":
            self.mags.set_old(torch.ones(n_old, device=device))
        self.mags.old.requires_grad_(cfg.variant != "no_rescale")
        if self._adds_direction(t):
            rank = cfg.rank_for_task(t)
            for layer in self.layers:
                layer.add_direction(rank)
            self.mags.cur = nn.Parameter(torch.tensor(cfg.alpha_init, device=device))
            self.history["ranks"].append(rank)
        elif cfg.variant == "single":
            if not cfg.carry_alpha:
                self.mags.cur = nn.Parameter(torch.tensor(cfg.alpha_init, device=device))
            self.history["ranks"].append(self.layers[0].A_cur.shape[1])
        else:
            self.history["ranks"].append(0)
        self.history["residual_trace"].append([])
        self._step_in_task = 0

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.model.head.parameters()
        has_current = self.layers[0].A_cur is not None
        if has_current:
            yield self.mags.cur
            for layer in self.layers:
                yield from layer.trainable()
        if self.layers[0].n_old and self.config.variant != "no_rescale":
            yield self.mags.old

    def after_step(self) -> None:
        self._step_in_task += 1
        every = self.config.residual_every
        if every and self._step_in_task % every == 0 and self.layers[0].n_old and self.layers[0].A_cur is not None:
            _, residual, norm = self.fit_current()
            value = float(residual / norm.clamp_min(1e-30))
            self.history["residual_trace"][-1].append([self._step_in_task, value])

    def fit_current(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Least-squares fit of the current normalised direction on the old ones (global or per layer)."""
        grams = direction_grams(self.layers)  # (L, S, T+1, T+1)
        if self.config.kd_granularity == "global":
            return least_squares_residual(grams.sum(dim=(0, 1)))
        return least_squares_residual(grams)

    def finish_task(self, t: int) -> None:
        if self.config.freeze_at == "task_end":
            self.consolidate(t)
        self.history["magnitudes"].append(self.magnitudes_now())

    def consolidate(self, t: int) -> None:
        """Turn task t's trained direction into a frozen, normalised one (KD: fold it instead when the old
        directions explain it). ``freeze_at="next_task"`` (the code's timing) calls this when task t+1 starts, so
        the evaluation after task t sees the direction as it was trained; ``task_end`` calls it right after
        training (the paper's formulation, every direction normalised when evaluated)."""
        cfg, layers = self.config, self.layers
        if layers[0].A_cur is None:
            return
        if cfg.variant == "single":  # from now on the one direction is normalised live, its magnitude decoupled
            for layer in layers:
                layer.cur_normalized = True
            return
        if cfg.kd and layers[0].n_old:
            self._distill(t)
        if layers[0].A_cur is not None:
            with torch.no_grad():  # how large the learned update is vs the norm it will be divided by
                learned = torch.stack([frobenius_norms(ly.A_cur, ly.B_cur, "paper") for ly in layers])
                divisor = torch.stack([frobenius_norms(ly.A_cur, ly.B_cur, cfg.norm_mode) for ly in layers])
            self.history.setdefault("direction_norms", []).append(
                {"task": t, "learned_BA": float(learned.mean()), "divisor": float(divisor.mean()),
                 "frozen_BA": float((learned / divisor.clamp_min(1e-30)).mean())})
            for layer in layers:
                layer.freeze_direction()
            self.mags.set_old(torch.cat([self.mags.old.detach(), self.mags.cur.detach()[None]]))

    def _kd_measure(self, residual: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        if self.config.kd_residual == "relative":
            return residual / norm.clamp_min(1e-30)
        return residual if self.config.kd_residual == "absolute" else residual**2

    def _distill(self, t: int) -> None:
        """SD-LoRA-KD (docs/sdlora.md section 4): fold the new direction into the old magnitudes when the
        least-squares residual is at most tau, then drop it."""
        cfg = self.config
        coef, residual, norm = self.fit_current()
        measure = self._kd_measure(residual, norm)
        scale = self.mags.cur.detach() if cfg.kd_fold == "exact" else torch.ones(())
        if cfg.kd_granularity == "global":
            self.history["kd"]["residuals"].append(float(measure))
            if measure <= cfg.kd_tau:
                with torch.no_grad():
                    self.mags.set_old(self.mags.old.detach() + scale * coef.to(self.mags.old))
                for layer in self.layers:
                    layer.drop_direction()
                self.history["kd"]["folded"].append(t)
            return
        # per block and projection: offsets per layer; the direction is zeroed where it was folded
        passed = measure <= cfg.kd_tau  # (L, S)
        self.history["kd"]["residuals"].append(measure.tolist())
        for layer, c, ok in zip(self.layers, coef, passed):
            with torch.no_grad():
                layer.offset += (scale * c * ok[:, None]).to(layer.offset)
            layer.freeze_direction(keep=~ok)
        self.mags.set_old(torch.cat([self.mags.old.detach(), self.mags.cur.detach()[None]]))
        if bool(passed.all()):
            self.history["kd"]["folded"].append(t)

    def magnitudes_now(self) -> list[float]:
        values = self.mags.old.detach().cpu().tolist()
        if self.layers[0].A_cur is not None:
            values.append(float(self.mags.cur.detach()))
        return values

    def extra_state(self) -> dict:
        return {**super().extra_state(),
                "cur_normalized": [layer.cur_normalized for layer in self.layers]}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        for layer, flag in zip(self.layers, state["cur_normalized"]):
            layer.cur_normalized = flag
