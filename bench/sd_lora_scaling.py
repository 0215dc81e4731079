"""How SD-LoRA's training step, evaluation and memory scale with the number of tasks.

    python bench/sd_lora_scaling.py                         # ViT-B/16 at 64 px, batch 16, CPU-sized
    python bench/sd_lora_scaling.py --img-size 224 --batch 64 --device cuda   # the GPU figure

Builds a ViT-B/16 (random weights: only shapes matter for cost) with SD-LoRA on q and v of every block, and
for T in --tasks stores T-1 frozen rank-r directions plus the current one, then measures in one run:

* training-step time (forward + backward + SGD step over the SD-LoRA parameters and a head), median of
  --steps after warm-up, at each T; the same for an "official-style" layer that, like the reference code,
  rebuilds every old branch as modules and loops over them in each forward (for comparison only);
* evaluation time of the merged model vs the plain backbone vs the unmerged model, at the largest T;
* peak memory of a training step at the smallest and largest T: ``torch.cuda.max_memory_allocated`` on
  CUDA; on CPU (no allocator statistics) the bytes of parameters, buffers and tensors saved for backward
  (``torch.autograd.graph.saved_tensors_hooks``, each storage counted once).

Prints one line per measurement, then a JSON line with the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from methods.lowrank import wrap_qkv
from methods.sd_lora import DecoupledQKV, Magnitudes


def build(args, n_tasks: int, official: bool = False):
    import timm

    torch.manual_seed(0)
    vit = timm.create_model(args.model, pretrained=False, num_classes=0, img_size=args.img_size).to(args.device)
    vit.requires_grad_(False)
    mags = Magnitudes(0.8).to(args.device)
    layers = wrap_qkv(vit, lambda qkv: DecoupledQKV(qkv, ("q", "v"), mags, path=args.path))
    for t in range(n_tasks):
        for layer in layers:
            layer.add_direction(args.rank)
            with torch.no_grad():
                layer.B_cur.normal_(0, 0.02)
            if t < n_tasks - 1:
                layer.freeze_direction()
    mags.set_old(torch.full((n_tasks - 1,), 0.8, device=args.device))
    if official:
        for block in vit.blocks:
            block.attn.qkv = OfficialStyleQKV(block.attn.qkv)
    head = nn.Linear(vit.num_features, 100).to(args.device)
    params = [p for layer in layers for p in layer.trainable()] + [mags.cur, mags.old] + list(head.parameters())
    return vit, head, layers, torch.optim.SGD(params, lr=0.01, momentum=0.9)


class OfficialStyleQKV(nn.Module):
    """The reference code's formulation (docs/sdlora.md section 6 "Cost"): each forward rebuilds one
    ``nn.Linear`` pair per old task and loops over them. Used only to put our numbers in context."""

    def __init__(self, ours: DecoupledQKV):
        super().__init__()
        self.ours = ours

    def forward(self, x):
        o = self.ours
        out = o.base(x)
        d = o.d
        q, v = torch.zeros_like(out[..., :d]), torch.zeros_like(out[..., :d])
        for i in range(o.n_old):
            rows = (o.row_task == i).nonzero().flatten()
            for s, acc in ((0, q), (1, v)):
                a = nn.Linear(o.d_in, len(rows), bias=False).to(x.device)
                b = nn.Linear(len(rows), d, bias=False).to(x.device)
                a.weight.data, b.weight.data = o.A_old[s, rows], o.B_old[s][:, rows]
                acc += o._mags.old[i] * b(a(x)) / (a.weight.norm() * b.weight.norm())
        if o.A_cur is not None:
            q = q + o._mags.cur * (x @ o.A_cur[0].t()) @ o.B_cur[0].t()
            v = v + o._mags.cur * (x @ o.A_cur[1].t()) @ o.B_cur[1].t()
        return torch.cat([out[..., :d] + q, out[..., d : 2 * d], out[..., 2 * d :] + v], dim=-1)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_it(fn, args, steps: int) -> float:
    for _ in range(args.warmup):
        fn()
    sync(args.device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync(args.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_step_fn(vit, head, opt, x, y):
    def step():
        loss = F.cross_entropy(head(vit(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def peak_memory(args, vit, head, opt, x, y) -> float:
    """Peak bytes of one training step (see the module docstring for CPU vs CUDA)."""
    step = train_step_fn(vit, head, opt, x, y)
    if args.device.startswith("cuda"):
        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    seen: dict[int, int] = {}

    def pack(t):
        if t.device.type == "cpu" and not t.is_sparse:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(head(vit(x)), y)
    state = {t.data_ptr(): t.numel() * t.element_size() for m in (vit, head) for t in
             list(m.parameters()) + list(m.buffers())}
    loss.backward()
    opt.zero_grad(set_to_none=True)
    return sum(seen.values()) + sum(v for k, v in state.items() if k not in seen)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="SD-LoRA cost vs number of tasks")
    ap.add_argument("--model", default="vit_base_patch16_224")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--tasks", default="1,5,10,20")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--path", default="auto", choices=("auto", "lowrank", "dense"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-official", action="store_true", help="skip the official-style comparison")
    args = ap.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    tasks = [int(t) for t in args.tasks.split(",")]
    x = torch.rand(args.batch, 3, args.img_size, args.img_size, device=args.device)
    y = torch.randint(0, 100, (args.batch,), device=args.device)
    print(f"# {args.model} at {args.img_size}px, batch {args.batch}, rank {args.rank}, device {args.device}, "
          f"threads {torch.get_num_threads()}", flush=True)
    step_s, official_s, mem = {}, {}, {}
    for t in tasks:
        vit, head, layers, opt = build(args, t)
        step_s[t] = time_it(train_step_fn(vit, head, opt, x, y), args, args.steps)
        if t in (tasks[0], tasks[-1]):
            mem[t] = peak_memory(args, vit, head, opt, x, y)
        print(f"task {t:3d}: train step {1000 * step_s[t]:8.1f} ms (stored rank {layers[0].stored_rank})", flush=True)
        if not args.no_official:
            vit, head, _, opt = build(args, t, official=True)
            official_s[t] = time_it(train_step_fn(vit, head, opt, x, y), args, args.steps)
            print(f"task {t:3d}: official-style step {1000 * official_s[t]:8.1f} ms", flush=True)
    vit, head, layers, _ = build(args, tasks[-1])
    vit.eval()
    with torch.no_grad():
        unmerged = time_it(lambda: vit(x), args, args.steps)
        for layer in layers:
            layer.merge()
        merged = time_it(lambda: vit(x), args, args.steps)
        for block, layer in zip(vit.blocks, layers):
            block.attn.qkv = layer.base  # the plain backbone
        base = time_it(lambda: vit(x), args, args.steps)
    print(f"eval at task {tasks[-1]}: base {1000 * base:.1f} ms, merged {1000 * merged:.1f} ms, "
          f"unmerged {1000 * unmerged:.1f} ms", flush=True)
    first, last = tasks[0], tasks[-1]
    result = {
        "device": args.device, "model": args.model, "img_size": args.img_size, "batch": args.batch, "rank": args.rank,
        "step_ms": {str(t): round(1000 * s, 2) for t, s in step_s.items()},
        f"step_ratio_t{last}_t{first}": round(step_s[last] / step_s[first], 3),
        "merged_vs_base": round(merged / base, 3),
        "unmerged_vs_base": round(unmerged / base, 3),
        f"peak_mem_ratio_t{last}_t{first}": round(mem[last] / mem[first], 3),
        "peak_mem_mb": {str(t): round(m / 2**20, 1) for t, m in mem.items()},
        "peak_mem_kind": "cuda max_memory_allocated" if args.device.startswith("cuda") else
        "parameters + buffers + tensors saved for backward",
    }
    if official_s:
        result["official_style_step_ms"] = {str(t): round(1000 * s, 2) for t, s in official_s.items()}
        result[f"official_style_step_ratio_t{last}_t{first}"] = round(official_s[last] / official_s[first], 3)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
