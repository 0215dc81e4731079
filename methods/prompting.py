"""Shared machinery of the prompt-based methods (L2P, DualPrompt, CODA-Prompt, HiDe-Prompt) on timm's ViT.

Everything reads dimensions from the backbone (``embed_dim``, depth, heads, head dim); nothing assumes ViT-B/16.
Token order in a prompted pass is ``[CLS, (input prompts), patches]`` (docs/baselines.md section 0).

* **Query pass** (:func:`frozen_query`, docs/baselines.md section 0): the unprompted frozen backbone's final-norm
  CLS token ("pre_logits"), without gradient. Every method here runs it, so inference is two ViT passes.
* **Input prompt tuning** (L2P, section 1): prompt tokens are inserted right after the prefix tokens (CLS) once
  the position embedding has been added; each prompt token gets the CLS position embedding, as the reference's
  ``resize_pos_embed`` does when it copies the CLS entry to every prompt position (frozen).
* **Prefix tuning** (DualPrompt, CODA-Prompt, HiDe-Prompt, section 2): in a prompted block the attention uses
  ``K' = [P_k; K]`` and ``V' = [P_v; V]`` with prefixes given **per sample** ``(B, L, heads * head_dim)``.
  :func:`prefix_attention` takes the block's own fused ``qkv``, splits heads, prepends the prefixes and calls
  ``F.scaled_dot_product_attention``. The batch dimension stays leading from the prompt gather to the
  attention, so the JHDP reshape-without-permute bug (prefixes of one sample leaking into another, section 2
  pitfall) cannot occur; tests/test_prompts.py checks that a prediction does not depend on the batch. The
  ``_released`` rows reproduce that bug on purpose: :func:`kv_prefixes` with ``prefix_layout: released``
  (tests/test_prompt_fidelity.py).

Precision: key matching (:func:`cosine_similarity`) computes in float32 even under ``amp: bf16``
(:func:`methods.base.fp32`); the query pass itself runs under autocast like every other forward (docs/baselines.md
section 13).

The backbone's modules are called as they are (``patch_embed``, ``_pos_embed``, block ``norm1``/``attn.qkv``/
``mlp``, ``norm``): we neither vendor timm's ViT nor replace modules in it, so the query pass and the prompted
pass share one set of frozen weights and the backbone's state-dict keys stay timm's.

Note on FLOP counts: torch's ``FlopCounterMode`` has no formula for the CPU kernel behind
``F.scaled_dot_product_attention`` (torch 2.14 counts 0), so on CPU attention matmuls -- and the extra prefix
keys -- are missing from GFLOPs, for the plain backbone and the prompted pass alike.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from core.config import check
from core.errors import UserError
from methods.base import CILModel, CILStrategy, fp32

Prefixes = dict[int, tuple[torch.Tensor, torch.Tensor]]  # block index -> (key prefix, value prefix), (B, L, A)


@dataclass(frozen=True)
class ViTDims:
    """What the prompt modules need to know about a timm ``VisionTransformer``."""

    embed_dim: int
    num_features: int
    depth: int
    num_heads: int
    head_dim: int
    num_prefix_tokens: int

    @property
    def attn_dim(self) -> int:
        """Width of keys and values (``heads * head_dim``), the width of a prefix token."""
        return self.num_heads * self.head_dim

    @classmethod
    def of(cls, backbone: nn.Module) -> ViTDims:
        blocks = getattr(backbone, "blocks", None)
        if blocks is None or not len(blocks) or not all(isinstance(b, Block) for b in blocks):
            raise UserError("prompt methods need a timm VisionTransformer whose blocks are timm Block modules")
        attn = blocks[0].attn
        return cls(embed_dim=backbone.embed_dim, num_features=backbone.num_features, depth=len(blocks),
                   num_heads=attn.num_heads, head_dim=attn.head_dim,
                   num_prefix_tokens=int(getattr(backbone, "num_prefix_tokens", 1)))


def usable_layers(layers: tuple[int, ...], depth: int, what: str) -> tuple[int, ...]:
    """The prompted block indices that exist in a backbone of ``depth`` blocks (a warning names the dropped ones).

    The references place prompts in blocks 0-4 of a 12-block ViT-B; a smaller test or CPU backbone keeps the
    indices that exist rather than re-scaling them.
    """
    kept = tuple(i for i in layers if i < depth)
    if len(kept) < len(layers):
        warnings.warn(f"{what}: blocks {sorted(set(layers) - set(kept))} do not exist in a {depth}-block backbone; "
                      f"prompting blocks {list(kept)} only", stacklevel=3)
    return kept


def frozen_query(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The query: final-norm CLS feature of the unprompted frozen backbone (no gradient), ``(B, num_features)``."""
    with torch.no_grad():
        return backbone.forward_head(backbone.forward_features(x), pre_logits=True)


def prefix_attention(attn: nn.Module, x: torch.Tensor, prefix_k: torch.Tensor, prefix_v: torch.Tensor) -> torch.Tensor:
    """timm ``Attention.forward`` with per-sample key/value prefixes prepended (prefix tuning).

    Args:
        attn: the block's timm ``Attention`` (its fused ``qkv``, norms and ``proj`` are used as they are).
        x: normalised block input ``(B, N, C)``.
        prefix_k, prefix_v: ``(B, L, heads * head_dim)``; sample b's prefixes only ever meet sample b's queries.
    """
    B, N, _ = x.shape
    H, hd = attn.num_heads, attn.head_dim
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    q, k, v = attn.qkv(x).reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    pk = prefix_k.to(k.dtype).reshape(B, -1, H, hd).transpose(1, 2)  # (B, H, L, hd): batch stays leading
    pv = prefix_v.to(v.dtype).reshape(B, -1, H, hd).transpose(1, 2)
    k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    out = attn.norm(out.transpose(1, 2).reshape(B, N, H * hd))
    if gate is not None:
        out = out * gate
    return attn.proj_drop(attn.proj(out))


def prefixed_block(block: Block, x: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """timm ``Block.forward`` whose attention gets ``prefix`` (the plain block when it is None)."""
    if prefix is None:
        return block(x)
    x = x + block.drop_path1(block.ls1(prefix_attention(block.attn, block.norm1(x), *prefix)))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def prompted_tokens(backbone: nn.Module, x: torch.Tensor, prompts: torch.Tensor | None = None,
                    prefixes: Prefixes | None = None) -> torch.Tensor:
    """One prompted pass; returns the final-normed tokens ``(B, prefix + n_prompts + patches, C)``.

    Args:
        prompts: input prompt tokens ``(B, n_prompts, C)`` inserted after the CLS token, each with the CLS
            position embedding (L2P); None for none.
        prefixes: per-block key/value prefixes (prefix tuning); None or {} for none.
    """
    tokens = backbone._pos_embed(backbone.patch_embed(x))
    if prompts is not None:
        n_pre = backbone.num_prefix_tokens
        pos = 0.0 if backbone.no_embed_class or backbone.pos_embed is None else backbone.pos_embed[:, :1]
        prompts = (prompts + pos).to(tokens.dtype)
        tokens = torch.cat([tokens[:, :n_pre], prompts, tokens[:, n_pre:]], dim=1)
    tokens = backbone.norm_pre(backbone.patch_drop(tokens))
    prefixes = prefixes or {}
    for i, block in enumerate(backbone.blocks):
        tokens = prefixed_block(block, tokens, prefixes.get(i))
    return backbone.norm(tokens)


def cls_features(backbone: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The backbone's own pooling of final-normed tokens (CLS for ``global_pool='token'``)."""
    return backbone.forward_head(tokens, pre_logits=True)


def cosine_similarity(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``(B, M)`` cosine similarities between queries ``(B, d)`` and keys ``(M, d)``, in float32 even under
    ``amp: bf16`` (key matching: L2P, DualPrompt)."""
    with fp32():
        return F.normalize(query.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T


def batch_majority(idx: torch.Tensor, k: int, pool_size: int) -> torch.Tensor:
    """The reference's ``batchwise_prompt``: the k indices chosen most often in the batch, for every sample.

    LEAKS across the batch: a sample's prompts depend on which other images share its batch, and with
    class- or task-ordered test loaders this votes for the task (docs/baselines.md section 7.1).
    """
    counts = torch.bincount(idx.flatten(), minlength=pool_size)
    top = torch.sort(counts, descending=True, stable=True).indices[:k]  # ties: lower index first
    return top.expand(idx.shape[0], -1)


def select_prompts(sim: torch.Tensor, k: int, batchwise: bool) -> torch.Tensor:
    """Top-k prompt indices per sample ``(B, k)``; batch-majority only if ``batchwise`` (leaks, see above)."""
    idx = sim.topk(k, dim=1).indices
    return batch_majority(idx, k, sim.shape[1]) if batchwise else idx


PREFIX_LAYOUTS = ("per_sample", "released")


def kv_prefixes(prompts: torch.Tensor, layout: str = "per_sample") -> tuple[torch.Tensor, torch.Tensor]:
    """Key and value prefixes ``(B, L, A)`` of one block from its gathered prompts ``(2, B, L, A)``.

    ``per_sample``: sample b gets ``(prompts[0, b], prompts[1, b])``, its own key and value prompts.
    ``released``: the JHDP code (JH-LEE-KR/dualprompt-pytorch ``prompt.py`` ``EPrompt.forward``, copied by
    WuYichen-97/SD-Lora-CL and thu-ml/HiDe-Prompt) *reshapes* its ``(layers, 2, B, top_k, L, heads, hd)`` gather to
    ``(layers, B, 2, top_k * L, heads, hd)`` without a permute. Read in row-major order, sample b's key prefix is
    then row ``2b`` and its value prefix row ``2b + 1`` of the ``(2 B)`` rows ``[keys of samples 0..B-1, values of
    samples 0..B-1]``: with one prompt shared by the batch the first half of the batch gets ``(P_k, P_k)``, the
    second half ``(P_v, P_v)`` (the middle sample of an odd batch ``(P_k, P_v)``); with per-sample prompts a
    sample's prefixes come from other samples (docs/baselines.md section 2).
    """
    if layout == "released":
        two, B = prompts.shape[:2]
        prompts = prompts.reshape(B, two, *prompts.shape[2:]).transpose(0, 1)
    return prompts[0], prompts[1]


def uniform_(shape: tuple[int, ...]) -> nn.Parameter:
    """A parameter drawn from U(-1, 1), the references' ``prompt_init='uniform'``."""
    return nn.Parameter(torch.empty(shape).uniform_(-1.0, 1.0))


class OnePromptPerTask:
    """Config mixin for methods that keep one E-prompt per task in a pool of ``pool_size`` (DualPrompt,
    HiDe-Prompt): the runner calls ``check_benchmark`` before any job runs, so a pool smaller than the number of
    tasks is bad input (exit 2), not a failure in task ``pool_size + 1``."""

    def check_benchmark(self, benchmark_cfg) -> None:
        n = benchmark_cfg.n_tasks
        check(n <= self.pool_size, f"{n} tasks need pool_size >= {n} (one E-prompt per task), got {self.pool_size}")


class PromptModel(CILModel):
    """Frozen backbone + prompt parameters + incremental head; ``forward`` runs query and prompted passes.

    ``train_task`` is the task being trained (methods that force the task's own prompt during training read
    it when the module is in training mode). ``class_task[c]`` is the task that introduced class c.
    ``aux`` holds the side outputs of the last forward (surrogate-loss terms, selected prompts, features);
    it is not state.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__(backbone)
        backbone.requires_grad_(False)
        self.dims = ViTDims.of(backbone)
        self.register_buffer("class_task", torch.zeros(0, dtype=torch.long))
        self.train_task = 0
        self.aux: dict[str, torch.Tensor] = {}

    def __getstate__(self) -> dict:
        # aux holds non-leaf tensors of the last forward, which deepcopy and pickle refuse; it is not state
        return {**super().__getstate__(), "aux": {}}

    def query(self, x: torch.Tensor) -> torch.Tensor:
        return frozen_query(self.backbone, x)

    def add_task(self, t: int, known: int, seen: int) -> None:
        new = torch.full((seen - known,), t, dtype=torch.long, device=self.class_task.device)
        self.class_task = torch.cat([self.class_task[:known], new])
        self.train_task = t


class PromptStrategy(CILStrategy):
    """Common plumbing: task bookkeeping, the task-identification record.

    Mechanism record ``task_id_accuracy``: at every evaluation, the fraction of test images whose selected
    prompt (DualPrompt: key-matched E-prompt; HiDe: TII's task) is their own task's, when the model reports a
    per-sample ``aux["task_pred"]``.
    """

    model: PromptModel

    def criterion(self):
        """Cross-entropy, minus the key-matching surrogate ``pull_coeff * pull`` when the model reports one
        (L2P, DualPrompt: it pulls the selected keys toward their queries)."""
        loss = super().criterion()
        pull = self.model.aux.get("pull") if self.is_training else None
        if pull is not None:
            loss = loss - self.config.pull_coeff * pull
        return loss

    def setup_task(self, t: int, experience) -> None:
        self.model.add_task(t, self.known, self.seen)
        self.history.setdefault("task_id_accuracy", [])

    def before_evaluation(self) -> None:
        self._task_hits = [0, 0]

    def _after_eval_iteration(self, **kwargs):
        pred = self.model.aux.get("task_pred")
        if pred is not None:
            known = self.mb_y < len(self.model.class_task)  # a test stream may hold classes not trained yet
            true = self.model.class_task[self.mb_y[known]]
            self._task_hits[0] += int((pred[known] == true).sum())
            self._task_hits[1] += int(true.numel())
        super()._after_eval_iteration(**kwargs)

    def after_evaluation(self) -> None:
        hits, total = getattr(self, "_task_hits", (0, 0))
        if total:
            self.history.setdefault("task_id_accuracy", []).append([self.task_id, hits / total])

    def extra_state(self) -> dict:
        return {**super().extra_state(), "train_task": self.model.train_task}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.model.train_task = state["train_task"]
