"""Efficiency figures recorded per job: learnable parameters, inference GFLOPs, stored features.

GFLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2), which maps the CUDA
attention kernels (flash, efficient, cuDNN) but not the CPU one that ``scaled_dot_product_attention`` dispatches
to (``aten._scaled_dot_product_flash_attention_for_cpu``): without :data:`CPU_ATTENTION_FLOPS` a CPU run leaves
out every attention product (ViT-B/16: 33.70 instead of 35.12 GFLOPs). The formula is torch's own
``sdpa_flop_count`` (QK^T and AV), the one the CUDA kernels are counted with, so CPU and CUDA agree.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Flops of one CPU scaled-dot-product attention: the QK^T and AV batched matmuls."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


CPU_ATTENTION_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def inference_gflops(strategy, image_shape: tuple[int, int, int], device: torch.device) -> float:
    """GFLOPs of predicting one image (eval mode, after the method's own pre-evaluation step, e.g. merging)."""
    model = strategy.model
    was_training = model.training
    model.eval()
    strategy.before_evaluation()
    try:
        x = torch.zeros(1, *image_shape, device=device)
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
            model(x)
        return counter.get_total_flops() / 1e9
    finally:
        strategy.after_evaluation()
        model.train(was_training)


def paper_stored_features(strategy) -> int:
    """Stored features as the SD-LoRA paper's Table 5 counts them: the method's ``paper_stored_features()`` where it
    counts differently from what it keeps (HiDe-Prompt: one mean per class), else ``stored_features()``."""
    count = getattr(strategy, "paper_stored_features", None)
    return count() if count is not None else strategy.stored_features()


def efficiency(strategy, image_shape: tuple[int, int, int], device: torch.device) -> dict:
    learnable, learnable_excl_head = strategy.learnable_per_task[-1] if strategy.learnable_per_task else (0, 0)
    return {"learnable_params": learnable, "learnable_params_excl_head": learnable_excl_head,
            "learnable_params_per_task": [n for n, _ in strategy.learnable_per_task],
            "gflops": inference_gflops(strategy, image_shape, device), "stored_features": strategy.stored_features(),
            "stored_features_paper": paper_stored_features(strategy)}
