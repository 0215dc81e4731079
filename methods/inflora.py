"""InfLoRA: interference-free low-rank adaptation (Liang & Li, CVPR 2024, arXiv 2404.00228).

Reference implementation: liangyanshuo/InfLoRA at e08b00e (``methods/inflora.py``, ``models/vit_inflora.py``,
``utils/schedulers.py``, ``configs/*.json``), restated in docs/baselines.md section 5 (code names: ``A`` is the
designed down-projection, ``B`` the trained up-projection). Per task t, on the **k and v** slices of every block's
fused ``qkv`` (rank 10 each)::

    k = W_k x + sum_{s<=t} B_s A_s x          (same for v; the old branches are frozen and unscaled)

1. ``setup_task``: one no-grad pass over the task's training data with the current model (old branches on, the
   new one absent, i.e. ``B_t = 0``) accumulates, per block, ``R_l = mean over all tokens of x x^T`` of the
   attention input (after ``norm1``; a forward pre-hook on the wrapped ``qkv``).
2. ``A_t`` = top-r left singular vectors of ``R_l`` projected away from the old subspace (DualGPM ``remove``:
   ``(I - U U^T) R``; ``retain``: ``U U^T R`` with U the stored complement basis), divided by sqrt(3), the same
   matrix for k and v. ``A_t`` is frozen; only ``B_t`` (zero-initialised) and the task's head rows are trained.
3. ``finish_task``: a second pass recomputes ``R_l`` with the trained model and updates the DualGPM bases with
   threshold ``eps_t = lamb + (lame - lamb) * t / T`` (T = number of tasks of the stream), including the
   reference's ``remove`` -> ``retain`` switch when a basis exceeds d/2 columns.

The per-task heads concatenated at test are the base class's growing head with old-logit masking: training
computes ``CE(logits[:, known:seen], y - known)`` exactly as InfLoRA trains its current head on shifted targets,
and old rows get no gradient. New rows are initialised like ``nn.Linear`` (``head_init: linear``: weight and bias
U(+-1/sqrt(d))), as the reference's per-task ``nn.Linear`` heads (``models/sinet_inflora.py`` ``classifier_pool``).
Inference: one pass on merged weights (docs/baselines.md section 6: 35.12 GFLOPs "if branches are merged").

Defaults = the reference configs: Adam (0.9, 0.999), lr 5e-4, wd 0, batch 128, rank 10, lamb 0.98 (0.95 on
CIFAR-100, set in suites), lame 1.0, and CODA's custom cosine stepped per epoch as the reference steps it (epoch e
of K at ``lr * cos(99 pi max(e - 1, 0) / (200 (K - 1)))``: the first two epochs at the full rate; ``coda_cosine``;
the base ``scheduler`` field is ignored while it is on). Epochs are set per benchmark in the suites (reference: 50
ImageNet-R, 20 CIFAR-100).

Deliberate deviations (each a fact of the reference, docs/baselines.md section 5):

* **First-task ``retain`` bug.** When more than d/2 directions are needed after the first task, the reference
  marks the layer ``retain`` but stores the old-space basis ``U[:, :k]`` instead of its complement (and its own
  summary assert then fails unless k == d/2). Default: store the complement ``U[:, k:]``;
  ``replicate_retain_bug: true`` stores ``U[:, :k]`` as the reference does (without the crashing assert).
* ``A_t`` is computed as ``Q U'[:, :r]`` with Q an orthonormal basis of the free subspace and U' the left singular
  vectors of ``Q^T R``: identical to the reference's SVD of the projected matrix whenever its top-r singular values
  are non-zero, but it stays orthogonal to the old subspace when the free subspace has fewer than r informative
  directions (rows beyond its dimension are zero rather than arbitrary null-space vectors).
* ``R_l`` and the DualGPM algebra in float64 (the reference: float32 on CPU, NumPy SVD); the passes behind
  ``R_l`` run without autocast even under ``amp: bf16``. Like the reference's ``train_loader``, they read the
  training transform (augmented, docs/baselines.md section 13), in order rather than shuffled (a sum).
* ``K = 1`` epoch: the reference's schedule divides by zero; we keep the lr constant.
* The reference keeps the network in eval mode while training; our backbones have no dropout or drop-path, so
  train mode is the same function. The unused KMeans(5) clustering of the reference is not ported.
* Backbone: the reference uses ``vit_base_patch16_224_in21k``; suites choose and record the tag.

DomainNet variant (reference ``methods/inflora_domain.py``, ``configs/domainnet_inflora.json``): preset
``domainnet`` = ``gpm: plain`` (``update_GPM``: no ``retain`` switch), SGD momentum 0.9, ``lr`` 5e-3 for the
``B_t`` and ``head_lr`` 1e-2 for the head, ``MultiStepLR`` x0.1 at epoch 4 (``coda_cosine: false``), 5 epochs,
rank 30, lamb 0.95. With the first-task fix, plain GPM and DualGPM leave the same free subspace for ``A_t`` (DualGPM
stores the smaller of the old-space basis and its complement); they differ in what is stored.

Row ``inflora_released`` ("InfLoRA (as released)"): the same method with the identity class order and the seeds
0-4 of the released configs, pinned by its registration (``MethodInfo.identity_order``, ``seeds``;
docs/baselines.md section 15); the configs of ImageNet-R N=5 and N=20 and of DomainNet list seed 0 alone, which
``suites/paper_tables.yaml`` gives those benchmarks with an override's ``seeds``. The same suite gives it
InfLoRA's own transforms on CIFAR-100, ImageNet-R and DomainNet (benchmark field ``transform: coda``, which equals
``INF:utils/data.py`` there; its CUB-200 and ImageNet-A classes use SD-LoRA's).

Mechanism record: per task, the DualGPM threshold, basis size per layer and each layer's type (remove/retain).
``stored_features()`` = floats in the DualGPM bases (Table 5's "stored features").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from core.config import check
from methods.base import METHODS, MethodInfo, coda_cosine, fp32
from methods.lowrank import LowRankConfig, LowRankStrategy


@dataclass(frozen=True)
class InfLoRAConfig(LowRankConfig):
    """Attributes (besides :class:`LowRankConfig`'s ``rank`` of each task's branch, k and v each, ``slices``,
    ``path``, ``merge_eval``):
    lamb/lame: DualGPM threshold at the first task / limit.
    coda_cosine: CODA-Prompt's per-epoch cosine (the reference's scheduler); False uses the base ``scheduler``.
    replicate_retain_bug: reproduce the reference's first-task ``retain`` basis (see the module docstring).
    stats_batch_size: batch size of the no-grad passes that accumulate ``R_l`` (None: ``batch_size``).
    gpm: ``dual`` (``methods/inflora.py``'s DualGPM) or ``plain`` (GPM of ``methods/inflora_domain.py``: one
        old-space basis per layer, grown and never switched to its complement).
    head_lr: learning rate of the head rows (None: ``lr``); the encoder's ``B_t`` train at ``lr``.

    Preset ``domainnet``: liangyanshuo/InfLoRA ``methods/inflora_domain.py`` with ``configs/domainnet_inflora.json``
    (plain GPM; SGD momentum 0.9, wd 0, batch 128; ``lrate`` 5e-3 for the encoder, ``fc_lrate`` 1e-2 for the head;
    ``MultiStepLR`` x``lrate_decay`` 0.1 at epoch 4; 5 epochs; rank 30; lamb 0.95, lame 1.0).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "domainnet": {"gpm": "plain", "optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.0, "batch_size": 128,
                      "lr": 0.005, "head_lr": 0.01, "coda_cosine": False, "scheduler": "multistep",
                      "milestones": (4,), "lr_decay": 0.1, "epochs": 5, "rank": 30, "lamb": 0.95, "lame": 1.0},
    }

    optimizer: str = "adam"
    lr: float = 5e-4
    batch_size: int = 128
    head_init: str = "linear"  # per-task nn.Linear heads (models/sinet_inflora.py classifier_pool)
    slices: tuple[str, ...] = ("k", "v")
    lamb: float = 0.98
    lame: float = 1.0
    coda_cosine: bool = True
    replicate_retain_bug: bool = False
    stats_batch_size: int | None = None
    gpm: str = "dual"
    head_lr: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.gpm in ("dual", "plain"), f"gpm must be dual or plain, got {self.gpm!r}")
        check(self.head_lr is None or self.head_lr > 0, "head_lr must be > 0 or null")
        check(0 < self.lamb <= 1 and 0 < self.lame <= 1, "lamb and lame must be in (0, 1]")
        check(self.stats_batch_size is None or self.stats_batch_size >= 1, "stats_batch_size must be >= 1")


class DualGPM(nn.Module):
    """Per-layer DualGPM bases (InfLoRA ``update_DualGPM``): ``remove`` layers store a basis of the old input
    space, ``retain`` layers a basis of its complement. Bases are float64 buffers so that checkpoints hold them.

    ``dual=False`` is plain GPM (InfLoRA ``methods/inflora_domain.py`` ``update_GPM``): every layer is ``remove``,
    the first task keeps ``U[:, :max(k, 1)]`` whatever k, later tasks grow it (up to d columns), no switch."""

    def __init__(self, n_layers: int, dim: int, replicate_retain_bug: bool = False, dual: bool = True):
        super().__init__()
        self.dim = dim
        self.n_layers = n_layers
        self.replicate_retain_bug = replicate_retain_bug
        self.dual = dual
        for i in range(n_layers):
            self.register_buffer(f"basis_{i}", torch.zeros(dim, 0, dtype=torch.float64))
        self.kinds: list[str] = []  # empty until the first update

    def basis(self, i: int) -> torch.Tensor:
        return getattr(self, f"basis_{i}")

    def set_basis(self, i: int, value: torch.Tensor) -> None:
        setattr(self, f"basis_{i}", value.detach().to(torch.float64).contiguous())

    def free_basis(self, i: int) -> torch.Tensor:
        """Orthonormal basis Q of the subspace a new ``A_t`` may use (identity before the first update)."""
        if not self.kinds:
            return torch.eye(self.dim, dtype=torch.float64, device=self.basis(i).device)
        U = self.basis(i)
        if self.kinds[i] == "retain":
            return U
        return complement(U)

    def update(self, mats: list[torch.Tensor], threshold: float) -> None:
        first = not self.kinds
        for i, R in enumerate(mats):
            R = R.to(torch.float64)
            if first:
                self._first(i, R, threshold)
            elif self.kinds[i] == "remove":
                self._grow_remove(i, R, threshold)
            else:
                self._shrink_retain(i, R, threshold)
        if not self.dual:
            return
        for i in range(self.n_layers):  # reference: a 'remove' basis beyond d/2 columns becomes 'retain'
            U = self.basis(i)
            if self.kinds[i] == "remove" and U.shape[1] > self.dim / 2:
                self.set_basis(i, complement(U))
                self.kinds[i] = "retain"

    def _first(self, i: int, R: torch.Tensor, threshold: float) -> None:
        U, S, _ = torch.linalg.svd(R)
        ratio = S**2 / (S**2).sum()
        k = int((torch.cumsum(ratio, 0) < threshold).sum())
        if k < self.dim / 2 or not self.dual:
            self.set_basis(i, U[:, : max(k, 1)])
            self.kinds.append("remove")
        else:
            self.set_basis(i, U[:, : max(k, 1)] if self.replicate_retain_bug else U[:, k:])
            self.kinds.append("retain")

    def _grow_remove(self, i: int, R: torch.Tensor, threshold: float) -> None:
        U_old = self.basis(i)
        total = (torch.linalg.svdvals(R) ** 2).sum()
        R_hat = R - U_old @ (U_old.T @ R)
        U, S, _ = torch.linalg.svd(R_hat)
        ratio = S**2 / total
        captured = float((total - (S**2).sum()) / total)  # energy the old basis already explains
        k = 0
        while k < len(ratio) and captured < threshold:
            captured += float(ratio[k])
            k += 1
        if k:
            self.set_basis(i, torch.cat([U_old, U[:, :k]], dim=1)[:, : self.dim])

    def _shrink_retain(self, i: int, R: torch.Tensor, threshold: float) -> None:
        U_free = self.basis(i)
        total = (torch.linalg.svdvals(R) ** 2).sum()
        U, S, _ = torch.linalg.svd(U_free @ (U_free.T @ R))
        ratio = S**2 / total
        inside = float((S**2).sum() / total)  # energy of the new representation inside the free subspace
        k = 0
        while k < len(ratio) and inside >= 1 - threshold:
            inside -= float(ratio[k])
            k += 1
        if k:
            reduced = U_free - U[:, :k] @ (U[:, :k].T @ U_free)
            Ui, _, _ = torch.linalg.svd(reduced)
            self.set_basis(i, Ui[:, : U_free.shape[1] - k])

    def stored_floats(self) -> int:
        return sum(self.basis(i).numel() for i in range(self.n_layers))


def complement(U: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the orthogonal complement of the columns of U (d x k, orthonormal) -> d x (d - k)."""
    full, _, _ = torch.linalg.svd(U, full_matrices=True)
    return full[:, U.shape[1]:]


def designed_down_projection(R: torch.Tensor, Q: torch.Tensor, rank: int) -> torch.Tensor:
    """``A_t`` (rank x d): top-r left singular vectors of ``Q Q^T R`` taken inside span(Q), divided by sqrt(3)."""
    if Q.shape[1] == 0:  # no free direction left (a plain GPM basis can fill the space): a zero branch
        return torch.zeros(rank, R.shape[0], dtype=torch.float64, device=R.device)
    U, _, _ = torch.linalg.svd(Q.T @ R.to(torch.float64), full_matrices=False)
    cols = Q @ U[:, :rank]  # (d, min(rank, dim Q))
    A = torch.zeros(rank, R.shape[0], dtype=torch.float64, device=R.device)
    A[: cols.shape[1]] = cols.T / math.sqrt(3)
    return A


@METHODS.register("inflora", InfLoRAConfig, info=MethodInfo(display="InfLoRA", order=60, color="#2ca02c", paper_key="inflora"))
class InfLoRA(LowRankStrategy):
    """InfLoRA: per-task LoRA on k and v with a designed, frozen down-projection orthogonal to old tasks' inputs."""

    config: InfLoRAConfig

    def build_model(self, backbone: nn.Module) -> nn.Module:
        model = super().build_model(backbone)  # plain LoRA layers: the branches are summed unscaled
        model.dualgpm = DualGPM(len(self.layers), self.layers[0].d_in, self.config.replicate_retain_bug,
                                dual=self.config.gpm == "dual")
        self.n_tasks_total: int | None = None
        self.history: dict = {"threshold": [], "basis_size": [], "kinds": []}
        return model

    @property
    def gpm(self) -> DualGPM:
        return self.model.dualgpm

    # ------------------------------------------------------------------ input statistics
    @torch.no_grad()
    def input_statistics(self, experience) -> list[torch.Tensor]:
        """Per block, ``R_l = mean over all tokens of x x^T`` of the input of ``qkv`` (one no-grad pass)."""
        sums = [torch.zeros(layer.d_in, layer.d_in, dtype=torch.float64, device=self.device) for layer in self.layers]
        counts = [0] * len(self.layers)

        def hook(i):
            def accumulate(module, args):
                x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
                sums[i].add_(x.T @ x)
                counts[i] += x.shape[0]

            return accumulate

        handles = [layer.register_forward_pre_hook(hook(i)) for i, layer in enumerate(self.layers)]
        was_training = self.model.training
        self.model.eval()
        try:
            loader = DataLoader(experience.dataset.train(), batch_size=self.config.stats_batch_size or
                                self.config.batch_size, shuffle=False, num_workers=self.config.num_workers)
            for batch in loader:
                with fp32():  # R_l from float32 activations even under amp: bf16
                    self.model(batch[0].to(self.device))
        finally:
            for h in handles:
                h.remove()
            self.model.train(was_training)
        return [s / max(n, 1) for s, n in zip(sums, counts)]

    # ------------------------------------------------------------------ hooks
    def setup_task(self, t: int, experience) -> None:
        if self.n_tasks_total is None:
            self.n_tasks_total = len(experience.origin_stream)
        mats = self.input_statistics(experience)
        S = len(self.config.slices)
        for i, (layer, R) in enumerate(zip(self.layers, mats)):
            layer.add_direction(self.config.rank)
            A = designed_down_projection(R, self.gpm.free_basis(i).to(R.device), self.config.rank)
            with torch.no_grad():
                layer.A_cur.copy_(A.to(layer.A_cur.dtype)[None].expand(S, -1, -1))
            layer.A_cur.requires_grad_(False)  # InfLoRA never trains the designed down-projection

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.model.head.parameters()
        for layer in self.layers:
            if layer.B_cur is not None:
                yield layer.B_cur

    def optimizer_groups(self, params: list[nn.Parameter]) -> list[tuple[list[nn.Parameter], float]]:
        """``head_lr``: the head rows at their own rate (the reference's ``fc_lrate``), the ``B_t`` at ``lr``."""
        if self.config.head_lr is None:
            return [(params, 1.0)]
        head = {id(p) for p in self.model.head.parameters()}
        lr, _, _ = self.config.for_task(self.task_id)
        return [([p for p in params if id(p) not in head], 1.0),
                ([p for p in params if id(p) in head], self.config.head_lr / lr)]

    def epoch_lr_factor(self, epochs: int):
        return coda_cosine(epochs) if self.config.coda_cosine else None

    def finish_task(self, t: int) -> None:
        mats = self.input_statistics(self.experience)
        for layer in self.layers:
            layer.freeze_direction()
        T = self.n_tasks_total or (t + 1)
        threshold = self.config.lamb + (self.config.lame - self.config.lamb) * t / T
        self.gpm.update(mats, threshold)
        self.history["threshold"].append(threshold)
        self.history["basis_size"].append([self.gpm.basis(i).shape[1] for i in range(self.gpm.n_layers)])
        self.history["kinds"].append(list(self.gpm.kinds))

    def stored_features(self) -> int:
        return self.gpm.stored_floats()

    def extra_state(self) -> dict:
        return {**super().extra_state(), "kinds": list(self.gpm.kinds),
                "n_tasks_total": self.n_tasks_total}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.gpm.kinds = list(state["kinds"])
        self.n_tasks_total = state["n_tasks_total"]


# InfLoRA as its authors' code ran it: identity class order (liangyanshuo/InfLoRA configs/*_inflora.json
# ``shuffle: false``) and their seeds 0-4 (``seed: [0, 1, 2, 3, 4]`` in mimg10 and cifar100; mimg5, mimg20 and
# domainnet list 0 only: overrides of suites/paper_tables.yaml narrow those benchmarks to seed 0).
METHODS.register("inflora_released", InfLoRAConfig, doc="InfLoRA with the class order and seeds of its released configs",
                 info=MethodInfo(display="InfLoRA (as released)", released_of="inflora", paper_key="inflora",
                                 identity_order=True, seeds=(0, 1, 2, 3, 4)))(InfLoRA)

