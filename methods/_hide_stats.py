"""HiDe-Prompt's stored class statistics, Gaussian-sampled classifier alignment and TII MLP (docs/baselines.md
section 4; HIDE ``engines/hide_tii_engine.py`` and ``engines/hide_promtp_wtp_and_tap_engine.py``:
``_compute_mean`` and ``train_task_adaptive_prediction``; ``vits/hide_prompt_vision_transformer.py``
``MlpMapping``). Imported by methods/hide_prompt.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STORAGE = ("multi-centroid", "variance", "covariance")
_EPS = 1e-4  # the reference's ridge: covariance/variance add it when stored, multi-centroid when sampled


def kmeans(x: torch.Tensor, k: int, iters: int = 100) -> torch.Tensor:
    """Cluster labels ``(n,)`` of Lloyd's k-means with k-means++ seeding (global torch RNG, so seeded runs repeat).

    Stands in for the reference's ``sklearn.cluster.KMeans(n_clusters=10)`` (same objective; sklearn's
    best-of-n_init restarts are not reproduced).
    """
    n = x.shape[0]
    centres = x[torch.randint(n, (1,))]
    for _ in range(1, k):
        d2 = torch.cdist(x, centres).min(dim=1).values.pow(2)
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        centres = torch.cat([centres, x[torch.multinomial(probs, 1)]])
    labels = torch.cdist(x, centres).argmin(dim=1)
    for _ in range(iters):
        for j in range(k):
            members = x[labels == j]
            if len(members):
                centres[j] = members.mean(dim=0)
        new = torch.cdist(x, centres).argmin(dim=1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


class ClassStats(nn.Module):
    """Per-class Gaussian statistics of features, in buffers that grow by class (so checkpoints restore them).

    * ``multi-centroid`` (reference default): k-means with ``n_centroids`` clusters per class; each cluster's
      mean and per-dimension (biased) variance. Sampling skips zero-variance clusters and uses
      ``N(mean, diag(var) + 1e-4 I)``. A class with fewer than ``2 * n_centroids`` images gets
      ``max(1, n // 2)`` clusters (unused slots are marked invalid; the reference assumes large classes).
    * ``variance``: class mean and ``diag(cov) + 1e-4``; ``covariance``: mean and ``cov + 1e-4 I``.

    Buffers: ``mean (C, K, d)``, ``spread (C, K, d)`` (variances) or ``(C, d, d)`` (covariances),
    ``valid (C, K)``.
    """

    def __init__(self, dim: int, storage: str = "multi-centroid", n_centroids: int = 10):
        super().__init__()
        if storage not in STORAGE:
            raise ValueError(f"storage must be one of {STORAGE}")
        self.storage = storage
        self.k = n_centroids if storage == "multi-centroid" else 1
        self.register_buffer("mean", torch.zeros(0, self.k, dim))
        spread = (0, dim, dim) if storage == "covariance" else (0, self.k, dim)
        self.register_buffer("spread", torch.zeros(spread))
        self.register_buffer("valid", torch.zeros(0, self.k, dtype=torch.bool))

    @property
    def n_classes(self) -> int:
        return self.mean.shape[0]

    def stored_floats(self) -> int:
        return self.mean.numel() + self.spread.numel()

    @torch.no_grad()
    def add_class(self, feats: torch.Tensor) -> None:
        """Append the statistics of the next class from its features ``(n, d)``."""
        f = feats.detach().double()
        d = f.shape[1]
        mean = torch.zeros(self.k, d, dtype=torch.float64)
        valid = torch.zeros(self.k, dtype=torch.bool)
        if self.storage == "multi-centroid":
            k = max(1, min(self.k, f.shape[0] // 2))
            labels = kmeans(f.cpu(), k).to(f.device)
            spread = torch.zeros(self.k, d, dtype=torch.float64)
            for j in range(k):
                members = f[labels == j]
                if len(members):
                    mean[j], spread[j], valid[j] = members.mean(0).cpu(), members.var(0, unbiased=False).cpu(), True
        else:
            cov = torch.cov(f.T).reshape(d, d) if f.shape[0] > 1 else torch.zeros(d, d, dtype=f.dtype, device=f.device)
            cov = cov.cpu() + _EPS * torch.eye(d, dtype=torch.float64)
            mean[0], valid[0] = f.mean(0).cpu(), True
            spread = cov.diagonal()[None] if self.storage == "variance" else cov
        dev, dtype = self.mean.device, self.mean.dtype
        self.mean = torch.cat([self.mean, mean[None].to(dev, dtype)])
        self.spread = torch.cat([self.spread, spread[None].to(dev, dtype)])
        self.valid = torch.cat([self.valid, valid[None].to(dev)])

    def prototypes(self) -> torch.Tensor:
        """Every stored mean (all centroids of every class), ``(P, d)``: the contrastive regulariser's anchors."""
        return self.mean[self.valid]

    @torch.no_grad()
    def sample(self, per_component: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``per_component`` draws from every usable Gaussian of every stored class: ``(x, y)`` in class order."""
        xs, ys = [], []
        for c in range(self.n_classes):
            for j in range(self.k):
                if not self.valid[c, j]:
                    continue
                mean = self.mean[c, j]
                z = torch.randn(per_component, mean.shape[0], device=mean.device)
                if self.storage == "covariance":
                    xs.append(mean + z @ torch.linalg.cholesky(self.spread[c]).T)
                elif self.storage == "variance":
                    xs.append(mean + z * self.spread[c, j].sqrt())
                elif self.spread[c, j].mean() > 0:  # reference: `if var.mean() == 0: continue`
                    xs.append(mean + z * (self.spread[c, j] + _EPS).sqrt())
                else:
                    continue
                ys.append(torch.full((per_component,), c, dtype=torch.long, device=mean.device))
        if not xs:
            return self.mean.new_zeros(0, self.mean.shape[-1]), torch.zeros(0, dtype=torch.long)
        return torch.cat(xs), torch.cat(ys)


def align_classifier(forward, params: list[nn.Parameter], stats: ClassStats, n_iters: int, batch: int, lr: float,
                     epochs: int, weight_decay: float = 0.0, momentum: float = 0.9) -> float:
    """HiDe's classifier alignment on Gaussian samples (TII stage and TAP); returns the last mini-batch loss.

    Every epoch draws ``batch`` samples per Gaussian of every stored class, shuffles them and runs only
    ``n_iters`` mini-batches of ``batch`` (the reference's quirk: ``n_iters`` = number of classes of the earlier
    tasks, so only part of the sampled set is used). SGD with momentum, cosine over ``epochs`` (per epoch).
    ``forward`` maps features to logits over all seen classes (no masking needed: the head has no other rows).
    """
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    last = float("nan")
    for _ in range(epochs):
        x, y = stats.sample(batch)
        order = torch.randperm(x.shape[0])
        x, y = x[order.to(x.device)], y[order.to(y.device)]
        for it in range(n_iters):
            xb, yb = x[it * batch:(it + 1) * batch], y[it * batch:(it + 1) * batch]
            if not len(xb):
                break
            loss = F.cross_entropy(forward(xb), yb.to(xb.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            last = float(loss.detach())
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return last


class ResidualMLP(nn.Module):
    """TII's trainable mapping on the frozen CLS feature: ``LayerNorm(MLP(x) + x)`` with hidden widths
    ``dim * h`` for h in ``hidden`` (reference ``MlpMapping``, ``original_model_mlp_structure=[2]``: d -> 2d -> d,
    GELU, dropout). Linear layers are initialised as the reference's timm init: trunc-normal std 0.02, bias 0."""

    def __init__(self, dim: int, hidden: tuple[int, ...] = (2,), dropout: float = 0.0):
        super().__init__()
        widths = [dim] + [dim * h for h in hidden] + [dim]
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            linear = nn.Linear(widths[i], widths[i + 1])
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)
            if i == len(widths) - 2:
                layers += [linear, nn.Dropout(dropout)]
            elif i == len(hidden) // 2 and i != 0:  # the reference's middle layer: norm instead of activation
                layers += [linear, nn.Dropout(dropout), nn.LayerNorm(widths[i + 1])]
            else:
                layers += [linear, nn.GELU(), nn.Dropout(dropout)]
        self.net = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.net(x) + x)
