#!/usr/bin/env bash
# The one prepared GPU check (issue 15): both benches at ViT-B/16 224 px, several jobs per GPU, SD-LoRA's layer
# scaling and the CUDA path of every method. Run from the repository root on a machine with CUDA; it writes
# into $OUT (default docs/gpu/<date>_<gpu>/) and stores the rates the cost model and --gpus all read in
# results/reference/rates/ (runner/cost.py). Wheels in .whl/ (if present) are installed to /tmp/site first.
set -uo pipefail
DAY=$(date +%F)
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '_' | tr -cd 'A-Za-z0-9_-')
OUT=${OUT:-docs/gpu/${DAY}_${GPU}}
RATES=results/reference/rates/${DAY}_${GPU}_vit_base_224.json
mkdir -p "$OUT" results/reference/rates
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader;
  python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"; } | tee "$OUT/gpu.txt"
# 1. every method against its floor, fp32 / TF32 / bf16, task 1 and task 20 (about 3 minutes on an H200)
python3 bench/throughput.py --device cuda --img-size 224 --model vit_base_patch16_224 --batch 64 --reps 5 \
  --out "$RATES" 2>&1 | tee "$OUT/throughput.log"
# 2. several jobs per GPU: total images/s with 1, 2, 4, 8 jobs, stored beside the rates ('slots')
python3 bench/slots.py --device cuda --seconds 20 --merge-into "$RATES" 2>&1 | tee "$OUT/slots.log"
# 3. the data pipeline per worker count, against the GPU's consumption from step 1
python3 bench/dataloader.py --throughput "$RATES" --workers 1,2,4,8,16 2>&1 | tee "$OUT/dataloader.log"
# 4. SD-LoRA's layer against the official-style layer, task 1 .. 20
python3 bench/sd_lora_scaling.py --img-size 224 --batch 64 --device cuda --steps 10 2>&1 | tee "$OUT/scaling.log"
cp "$RATES" "$OUT/"
