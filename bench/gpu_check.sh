#!/usr/bin/env bash
# The one prepared GPU check: the CUDA path of every method, SD-LoRA's scaling figures on ViT-B/16 at 224 px,
# and peak GPU memory per task. Run from the repository root on a machine with CUDA; what it printed on an H200
# is in README ("GPU figures"). Wheels in .whl/ (if present) are installed to /tmp/site first.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"
python3 bench/sd_lora_scaling.py --img-size 224 --batch 64 --device cuda --steps 10 2>&1 | tee "$OUT/scaling.log"
python3 run_suite.py --suite bench/gpu_methods.yaml --device cuda --results-dir /tmp/gpu_methods --no-report \
  --checkpoints final 2>&1 | grep -E "done|FAILED|error" | tee "$OUT/methods.log"
python3 run_suite.py --suite bench/gpu_memory.yaml --device cuda --results-dir /tmp/gpu_memory --no-report \
  --checkpoints final 2>&1 | grep -E "done|FAILED|error" | tee "$OUT/memory.log"
python3 bench/summarize_gpu.py /tmp/gpu_methods /tmp/gpu_memory 2>&1 | tee "$OUT/summary.log"
