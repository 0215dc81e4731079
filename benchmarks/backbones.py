"""Backbones: timm ViTs by full tag, weights from a local file (or the Hugging Face cache), never the hub.

``build_backbone(BackboneConfig(tag="vit_base_patch16_224.augreg2_in21k_ft_in1k", weights="/path/model.safetensors"))``
returns a timm model with ``num_classes=0`` (features = final-norm CLS token) and its provenance (full tag,
sha256 of the weights). Two small ViTs are registered with timm itself so that they go through exactly the
same path as ViT-B/16:

* ``vit_fmnist_p7_28.fmnist_half``: 28 px, patch 7, width 96, depth 4, 1 channel (0.31 M parameters),
  pretrained by ``benchmarks/pretrain_fmnist.py`` on the pretraining half of Fashion-MNIST; weights committed.
* ``vit_fmnist_p7_28.fmnist_half_even``: the same architecture and recipe, pretrained on the images of the five
  even labels only (the mini suite's backbone: half of the stream's classes unseen); weights committed.
* ``vit_test_tiny``: a random ViT for tests (16 px, patch 4, width 32, depth 2).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import timm
import torch
from timm.models import register_model
from timm.models._registry import generate_default_cfgs
from timm.models.vision_transformer import VisionTransformer, _create_vision_transformer

from core.config import Config, check
from core.errors import UserError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FMNIST_TAG = "vit_fmnist_p7_28.fmnist_half"
FMNIST_WEIGHTS = WEIGHTS_DIR / "vit_fmnist_p7_28.fmnist_half.pth"
FMNIST_EVEN_TAG = "vit_fmnist_p7_28.fmnist_half_even"
# Our own pretrained small ViTs: tag -> the classes of Fashion-MNIST's pretraining half it was pretrained on (all
# by benchmarks/pretrain_fmnist.py, which writes the committed file benchmarks/weights/<tag>.pth).
LOCAL_BACKBONES: dict[str, tuple[int, ...]] = {FMNIST_TAG: tuple(range(10)), FMNIST_EVEN_TAG: (0, 2, 4, 6, 8)}


def local_weights(tag: str) -> Path:
    """The committed weights file of one of our own pretrained small ViTs (``LOCAL_BACKBONES``)."""
    return WEIGHTS_DIR / f"{tag}.pth"


# Small ViTs registered with timm (mean/std 0/1: inputs stay in [0, 1], as in the SD-LoRA pipeline).
_LOCAL_CFG = {"num_classes": 10, "mean": (0.0,), "std": (1.0,), "first_conv": "patch_embed.proj", "classifier": "head"}
default_cfgs = generate_default_cfgs(
    {
        "vit_fmnist_p7_28.fmnist_half": dict(input_size=(1, 28, 28), **_LOCAL_CFG),
        "vit_fmnist_p7_28.fmnist_half_even": dict(input_size=(1, 28, 28), **_LOCAL_CFG),
        "vit_test_tiny.untrained": dict(input_size=(3, 16, 16), **_LOCAL_CFG),
    }
)


@register_model
def vit_fmnist_p7_28(pretrained: bool = False, **kwargs) -> VisionTransformer:
    args = {"img_size": 28, "patch_size": 7, "in_chans": 1, "embed_dim": 96, "depth": 4, "num_heads": 3, "mlp_ratio": 2.0}
    return _create_vision_transformer("vit_fmnist_p7_28", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def vit_test_tiny(pretrained: bool = False, **kwargs) -> VisionTransformer:
    args = {"img_size": 16, "patch_size": 4, "in_chans": 3, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
    return _create_vision_transformer("vit_test_tiny", pretrained=pretrained, **dict(args, **kwargs))


@dataclass(frozen=True)
class BackboneConfig(Config):
    """Attributes:
    tag: full timm tag, ``arch.pretrained_tag`` (the same short name loads different weights across timm
        versions, so the tag is always recorded in full).
    weights: local weights file (``.safetensors``/``.bin``/``.pth``/``.npz``). None: the committed file for
        our own small ViTs, else the Hugging Face cache (offline).
    pretrained: False builds a randomly initialised model (tests only).
    img_size/in_chans: optional overrides passed to timm (e.g. a ViT-B at 64 px).
    """

    tag: str = FMNIST_TAG
    weights: str | None = None
    pretrained: bool = True
    img_size: int | None = None
    in_chans: int | None = None

    def __post_init__(self) -> None:
        check(bool(self.tag), "backbone.tag must be a timm model name such as vit_base_patch16_224.augreg2_in21k_ft_in1k")
        arch = self.tag.split(".")[0]
        check(timm.is_model(arch), f"unknown timm architecture {arch!r} in backbone.tag; see timm.list_models()")

    def resolved_weights(self) -> Path | None:
        """The weights file this config will load (None when it comes from the HF cache or is random)."""
        if not self.pretrained:
            return None
        if self.weights:
            path = Path(os.path.expanduser(self.weights))
            if not path.exists():
                raise UserError(f"backbone weights not found: {path} (set backbone.weights to an existing file)")
            return path
        if self.tag in LOCAL_BACKBONES:
            return local_weights(self.tag)
        return None

    def validate_paths(self) -> None:
        path = self.resolved_weights()
        if path is None and self.pretrained:
            _hf_cached_file(self.tag)  # raises a UserError naming the expected file
        elif path is not None and not path.exists():
            raise UserError(
                f"backbone weights not found: {path}; create them with "
                f"'python -m benchmarks.pretrain_fmnist --tag {self.tag}' or set backbone.weights"
            )


def _hf_cached_file(tag: str) -> Path:
    """The weights of ``tag`` in the local Hugging Face cache, or a UserError saying what to put where."""
    pretrained_cfg = timm.models.get_pretrained_cfg(tag)
    hub_id = getattr(pretrained_cfg, "hf_hub_id", None) if pretrained_cfg is not None else None
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
                found = try_to_load_from_cache(hub_id, fname)
                if isinstance(found, str):
                    return Path(found)
        except ImportError:  # pragma: no cover - huggingface_hub ships with timm
            pass
    where = f"the Hugging Face repo {hub_id!r}" if hub_id else "timm's release for this tag"
    raise UserError(
        f"no weights for backbone {tag!r}: set backbone.weights to a local file "
        f"(model.safetensors from {where}), or put that repo in the Hugging Face cache"
    )


@lru_cache(maxsize=16)
def sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def build_backbone(cfg: BackboneConfig) -> tuple[torch.nn.Module, dict]:
    """Build the feature extractor (``num_classes=0``) and return it with its provenance."""
    cfg.validate_paths()
    kwargs = {k: v for k, v in (("img_size", cfg.img_size), ("in_chans", cfg.in_chans)) if v is not None}
    path = cfg.resolved_weights()
    if cfg.pretrained and path is None:
        path = _hf_cached_file(cfg.tag)
    if cfg.pretrained:
        # custom_load=False keeps the _in21k aliases from routing a local file to the .npz loader (timm
        # ``models/_builder.py`` ``load_pretrained``).
        overlay = {"file": str(path), "custom_load": path.suffix == ".npz"}
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        model = timm.create_model(cfg.tag, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay, **kwargs)
    else:
        model = timm.create_model(cfg.tag, pretrained=False, num_classes=0, **kwargs)
    provenance = {
        "backbone_tag": cfg.tag,
        "weights_path": str(path) if path else None,
        "weights_sha256": sha256_of(str(path)) if path else "random-init",
        "backbone_params": sum(p.numel() for p in model.parameters()),
    }
    return model, provenance
