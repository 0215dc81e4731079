"""CODA-Prompt (Smith et al., CVPR 2023, arXiv 2211.13218).

Reference implementations: GT-RIPL/CODA-Prompt (``models/zoo.py`` ``CodaPrompt``, ``utils/schedulers.py``,
``configs/*_prompt.yaml``, ``experiments/*.sh``) and its port in WuYichen-97/SD-Lora-CL (``backbone/prompt.py``,
``models/coda_prompt.py``, ``exps/coda_prompt*.json``), restated in docs/baselines.md section 3.

Mechanism, per prompted block l in ``layers`` (0-4): components ``P_l (M, length, C)``, keys ``K_l (M, C)`` and
attention vectors ``A_l (M, C)``. With the frozen final-norm CLS query q (pass 1)::

    alpha_m = < normalize(q * A_m), normalize(K_m) >          (no softmax, no top-k)
    P(q)    = sum_m alpha_m P_m                               (B, length, C)

and the first ``length // 2`` tokens of ``P(q)`` are the key prefix, the rest the value prefix (pass 2, prefix
tuning). Task t owns ``pt = pool_size // n_tasks`` rows; it trains its own rows while the rows of earlier tasks
take part frozen; rows of later tasks do not exist yet. A new task's rows are Gram-Schmidt initialised: random
vectors orthogonalised against every earlier row (P flattened to ``length * C``), then normalised.
Loss ``CE + mu * sum_l [ortho(K_l) + ortho(A_l) + ortho(P_l)]`` with ``ortho(X) = mean((X X^T - I)^2)`` over the
active rows; ``mu = 0`` in every reference config (the Gram-Schmidt init replaces it), implemented anyway.

Storage: earlier tasks' rows are buffers (``p_old``...), the current task's rows parameters (``p_cur``...), so
"frozen" is exact (no optimizer, weight decay or momentum can touch them) and the checkpoint holds only rows
that exist. The forward concatenates ``[old; cur]`` exactly as the reference's ``cat(K[:s].detach(), K[s:f])``.

Presets (Adam, batch 128, wd 0, CODA's custom cosine ``lr * cos(99 pi max(e - 1, 0) / (200 (K - 1)))`` for epoch
e of K, the first two epochs at the full rate as the reference's ``step()`` runs it (``coda_cosine``), which both
SDL (``models/coda_prompt.py`` ``CosineSchedule``) and CODA use; docs/baselines.md section 3):

* ``sdl``: SDL ``exps/coda_prompt.json`` (CIFAR-100): 10 epochs, lr 1e-3, M 100, length 8, mu 0.
* ``sdl_inr``: ``exps/coda_prompt_inr.json``: 50 epochs.
* ``original``: CODA ``configs/cifar-100_prompt.yaml``: 20 epochs.  ``original_imr``: CODA
  ``experiments/imagenet-r.sh`` + ``configs/imnet-r_prompt.yaml``: 50 epochs.
(The references also use the identity class order: benchmark ``order_seed: -1``.) Field defaults are this
recipe with the suite's epochs and batch size.

Row ``coda_prompt_released`` ("CODA-Prompt (as released)"): the same method with the class order and seed of the
released configs, pinned by its registration (``MethodInfo.identity_order``, ``seeds=(0,)``; docs/baselines.md
section 15), with their training loader, which drops each epoch's last, partial batch (``drop_last``: CODA
``trainer.py`` and SDL ``models/coda_prompt.py`` build it with ``drop_last=True``), and with their Gram-Schmidt
start, projected onto each earlier row (``classical_gram_schmidt``); both fields of ``CodaPromptReleasedConfig``
only. Its transforms, CODA's own ``get_transform``, are a benchmark field that
``suites/paper_tables.yaml`` sets for it (``transform: coda``, benchmarks/transforms.py).

Deliberate deviations:

* Gram-Schmidt is done against an orthonormal basis of the earlier rows (SVD) rather than the reference's
  classical projection onto each earlier row, which is orthogonal to them only if they are mutually orthogonal
  (trained rows are not); row ``coda_prompt_released`` (``classical_gram_schmidt: true``) reproduces it. When
  the rows outnumber the dimension (a 32-wide test ViT with 100 components), the rows that cannot be orthogonal
  are random unit vectors (the reference would divide by zero).
* ``n_tasks`` (needed for ``pt``) is read from the training stream unless set.
* Blocks beyond the backbone's depth are dropped with a warning.
* Each epoch trains on its last, partial batch too, as the harness's loader does for every method; the references
  drop it (row ``coda_prompt_released``, ``drop_last: true``, reproduces that).

Precision: the component weights ``alpha`` are computed in float32 even under ``amp: bf16`` (docs/baselines.md
section 13).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from core.config import check
from core.errors import UserError
from methods.base import METHODS, MethodConfig, MethodInfo, coda_cosine, fp32
from methods.prompting import PromptModel, PromptStrategy, cls_features, prompted_tokens, usable_layers

_RECIPE = {"optimizer": "adam", "lr": 0.001, "weight_decay": 0.0, "betas": (0.9, 0.999), "batch_size": 128,
               "scheduler": "constant", "coda_schedule": True, "pool_size": 100, "length": 8, "ortho_mu": 0.0}


def gram_schmidt_rows(old: torch.Tensor, m: int) -> torch.Tensor:
    """``m`` random unit rows orthogonal to the rows of ``old (n, d)`` and to each other (as far as d allows)."""
    d = old.shape[1]
    basis = torch.zeros(0, d, dtype=torch.float64)
    if old.shape[0]:
        _, s, vh = torch.linalg.svd(old.detach().double().cpu(), full_matrices=False)
        basis = vh[s > s.max() * 1e-6]
    rows = []
    for _ in range(m):
        v = torch.randn(d, dtype=torch.float64)
        v0 = v / v.norm()
        for _ in range(2):  # twice: classical GS loses orthogonality in floating point
            v = v - basis.T @ (basis @ v)
        if v.norm() > 1e-6 * v0.norm() * d**0.5 and basis.shape[0] < d:
            v = v / v.norm()
            basis = torch.cat([basis, v[None]])
        else:  # the space is exhausted: no orthogonal direction left
            v = v0
        rows.append(v)
    return torch.stack(rows).to(old.dtype) if rows else old.new_zeros(0, d)


def classical_gram_schmidt_rows(old: torch.Tensor, m: int) -> torch.Tensor:
    """The reference's ``gram_schmidt`` (CODA ``models/zoo.py``): each new row is a random vector minus its
    projections onto every earlier row, the old ones and the new ones before it, then normalised. The result is
    orthogonal to the old rows only if those are mutually orthogonal (trained rows are not). Where nothing is left
    (more rows than dimensions) a random unit row, as :func:`gram_schmidt_rows`; a zero earlier row is skipped (the
    reference restarts its draw forever)."""
    d = old.shape[1]
    earlier = old.detach().double().cpu()
    earlier = earlier[(earlier * earlier).sum(1) >= 1e-8]
    rows = []
    for _ in range(m):
        v = torch.randn(d, dtype=torch.float64)
        u = v - ((earlier @ v) / (earlier * earlier).sum(1)) @ earlier if earlier.shape[0] else v
        ok = u.norm() > 1e-6 * v.norm()
        earlier = torch.cat([earlier, u[None]]) if ok else earlier
        rows.append(u / u.norm() if ok else v / v.norm())
    return torch.stack(rows).to(old.dtype) if rows else old.new_zeros(0, d)


def ortho_penalty(x: torch.Tensor) -> torch.Tensor:
    """``mean((X X^T - I)^2)`` over the rows of ``X`` (CODA ``models/zoo.py``)."""
    gram = x @ x.T
    return ((gram - torch.eye(x.shape[0], device=x.device, dtype=x.dtype)) ** 2).mean()


class CodaLayer(nn.Module):
    """The components, keys and attention vectors of one prompted block: frozen rows + the current task's rows."""

    def __init__(self, length: int, prompt_dim: int, key_dim: int, classical: bool = False):
        super().__init__()
        self.length = length
        self.init_rows = classical_gram_schmidt_rows if classical else gram_schmidt_rows
        for name, shape in (("p", (length, prompt_dim)), ("k", (key_dim,)), ("a", (key_dim,))):
            self.register_buffer(f"{name}_old", torch.zeros(0, *shape))
            setattr(self, f"{name}_cur", nn.Parameter(torch.zeros(0, *shape)))

    def rows(self, name: str) -> torch.Tensor:
        return torch.cat([getattr(self, f"{name}_old"), getattr(self, f"{name}_cur")])

    def new_rows(self, m: int) -> None:
        """Freeze the current rows and add ``m`` Gram-Schmidt-initialised trainable rows."""
        for name in ("p", "k", "a"):
            old = self.rows(name).detach()
            setattr(self, f"{name}_old", old)
            fresh = self.init_rows(old.flatten(1), m).reshape(m, *old.shape[1:]).to(old.device)
            setattr(self, f"{name}_cur", nn.Parameter(fresh))

    def weights(self, q: torch.Tensor) -> torch.Tensor:
        """``alpha (B, M)``: cosine of ``q * A_m`` and ``K_m``.

        Computed as ``<q, A_m * k_m> / ||q * A_m||`` with ``k_m = K_m / ||K_m||`` and
        ``||q * A_m||^2 = <q^2, A_m^2>``: two (B, d) x (d, M) products instead of the reference's (B, M, d)
        tensor ``q * A`` (same value; F.normalize's 1e-12 floor kept). Float32 even under ``amp: bf16``.
        """
        with fp32():
            q = q.float()
            a, k = self.rows("a").float(), F.normalize(self.rows("k").float(), dim=1)
            norm = ((q * q) @ (a * a).T).clamp_min(0).sqrt().clamp_min(1e-12)
            return (q @ (a * k).T) / norm

    def forward(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The assembled prompt split into (key prefix, value prefix), each ``(B, length // 2, C)``."""
        prompt = torch.einsum("bm,mlc->blc", self.weights(q), self.rows("p"))
        half = self.length // 2
        return prompt[:, :half], prompt[:, half:]

    def ortho(self) -> torch.Tensor:
        return sum(ortho_penalty(self.rows(n).flatten(1)) for n in ("k", "a", "p"))


@dataclass(frozen=True)
class CodaPromptConfig(MethodConfig):
    """CODA-Prompt fields (module docstring). ``coda_schedule`` replaces ``scheduler`` by CODA's cosine."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "sdl": dict(_RECIPE, epochs=10),
        "sdl_inr": dict(_RECIPE, epochs=50),
        "original": dict(_RECIPE, epochs=20),
        "original_imr": dict(_RECIPE, epochs=50),
    }

    optimizer: str = "adam"
    lr: float = 0.001
    head_init: str = "linear"  # nn.Linear head (CODA-Prompt models/zoo.py last, SD-Lora-CL CodaPromptVitNet.fc)
    coda_schedule: bool = True
    pool_size: int = 100
    length: int = 8
    layers: tuple[int, ...] = (0, 1, 2, 3, 4)
    ortho_mu: float = 0.0
    n_tasks: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.pool_size >= 1, "pool_size must be >= 1")
        check(self.length >= 2 and self.length % 2 == 0, "length must be even (half key, half value prefix)")
        check(all(i >= 0 for i in self.layers), "layer indices must be >= 0")
        check(self.ortho_mu >= 0, "ortho_mu must be >= 0")
        check(self.n_tasks is None or 1 <= self.n_tasks <= self.pool_size, "n_tasks must be in [1, pool_size]")


class CodaPromptModel(PromptModel):
    """Frozen ViT + one :class:`CodaLayer` per prompted block + head."""

    def __init__(self, backbone: nn.Module, cfg: CodaPromptConfig):
        super().__init__(backbone)
        self.layers = usable_layers(cfg.layers, self.dims.depth, "coda_prompt layers")
        classical = isinstance(cfg, CodaPromptReleasedConfig) and cfg.classical_gram_schmidt
        self.coda = nn.ModuleList(CodaLayer(cfg.length, self.dims.attn_dim, self.dims.num_features, classical)
                                  for _ in self.layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        q = self.query(x)  # pass 1
        prefixes = {layer: coda(q) for layer, coda in zip(self.layers, self.coda)}
        return cls_features(self.backbone, prompted_tokens(self.backbone, x, prefixes=prefixes))  # pass 2


@METHODS.register("coda_prompt", CodaPromptConfig, info=MethodInfo(display="CODA-Prompt", order=40, color="#9467bd", train_cost=1.4, eval_cost=2.0, paper_key="coda_prompt"))
class CodaPrompt(PromptStrategy):
    """CODA-Prompt: query-weighted sums of prompt components, new components Gram-Schmidt initialised."""

    config: CodaPromptConfig

    def build_model(self, backbone: nn.Module) -> nn.Module:
        model = CodaPromptModel(backbone, self.config)
        self.history["prompt_layers"] = list(model.layers)
        self.n_tasks = self.config.n_tasks
        return model

    def setup_task(self, t: int, experience) -> None:
        super().setup_task(t, experience)
        if self.n_tasks is None:
            self.n_tasks = len(experience.origin_stream)
        per_task = self.config.pool_size // self.n_tasks
        if per_task < 1 or t >= self.n_tasks:
            raise UserError(f"coda_prompt: {self.config.pool_size} components cannot serve task {t + 1} of "
                            f"{self.n_tasks}")
        for coda in self.model.coda:
            coda.new_rows(per_task)
        self.history.setdefault("components", []).append(len(self.model.coda[0].rows("k")) if self.model.coda else 0)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        for coda in self.model.coda:
            yield from (coda.p_cur, coda.k_cur, coda.a_cur)
        yield from self.model.head.parameters()

    def epoch_lr_factor(self, epochs: int):
        return coda_cosine(epochs) if self.config.coda_schedule else None

    def make_train_dataloader(self, **kwargs):
        """The harness's loader; the released twin's drops each epoch's last, partial batch (``drop_last``)."""
        if isinstance(self.config, CodaPromptReleasedConfig):
            kwargs["drop_last"] = self.config.drop_last
        super().make_train_dataloader(**kwargs)

    def criterion(self):
        loss = super().criterion()
        if self.is_training and self.config.ortho_mu > 0:
            loss = loss + self.config.ortho_mu * sum(coda.ortho() for coda in self.model.coda)
        return loss

    def extra_state(self) -> dict:
        return {**super().extra_state(), "n_tasks": self.n_tasks}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.n_tasks = state["n_tasks"]


@dataclass(frozen=True)
class CodaPromptReleasedConfig(CodaPromptConfig):
    """CODA-Prompt as its released code trains: without each epoch's last, partial batch (GT-RIPL/CODA-Prompt
    ``trainer.py`` and SD-Lora-CL ``models/coda_prompt.py``: ``DataLoader(..., drop_last=True)``), and with its
    Gram-Schmidt start (``models/zoo.py`` ``gram_schmidt``: projections onto each earlier row, which leave new rows
    not quite orthogonal to trained old ones)."""

    drop_last: bool = True
    classical_gram_schmidt: bool = True


# CODA-Prompt as its authors' code ran it: identity class order (SD-Lora-CL exps/coda_prompt*.json ``shuffle: false``;
# GT-RIPL/CODA-Prompt trainer.py shuffles only for seed > 0), seed 0 (``seed: [0]``; CODA's run.py seeds repeat r
# with r, and its experiments/*.sh run REPEAT=1) and its training loader (CodaPromptReleasedConfig).
METHODS.register("coda_prompt_released", CodaPromptReleasedConfig,
                 doc="CODA-Prompt with the class order and seed of its released configs",
                 info=MethodInfo(display="CODA-Prompt (as released)", released_of="coda_prompt", paper_key="coda_prompt",
                                 train_cost=1.4, eval_cost=2.0, identity_order=True, seeds=(0,)))(CodaPrompt)
