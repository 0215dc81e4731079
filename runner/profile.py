"""Efficiency figures recorded per job: learnable parameters, inference GFLOPs, stored features."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def inference_gflops(strategy, image_shape: tuple[int, int, int], device: torch.device) -> float:
    """GFLOPs of predicting one image (eval mode, after the method's own pre-evaluation step, e.g. merging)."""
    model = strategy.model
    was_training = model.training
    model.eval()
    strategy.before_evaluation()
    try:
        x = torch.zeros(1, *image_shape, device=device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        return counter.get_total_flops() / 1e9
    finally:
        strategy.after_evaluation()
        model.train(was_training)


def efficiency(strategy, image_shape: tuple[int, int, int], device: torch.device) -> dict:
    learnable, learnable_excl_head = strategy.learnable_per_task[-1] if strategy.learnable_per_task else (0, 0)
    return {"learnable_params": learnable, "learnable_params_excl_head": learnable_excl_head,
            "learnable_params_per_task": [n for n, _ in strategy.learnable_per_task],
            "gflops": inference_gflops(strategy, image_shape, device), "stored_features": strategy.stored_features()}
