#!/usr/bin/env bash
# GPU train-step benchmark: segjax (XLA) against PyTorch eager and
# torch.compile, the same DeepLabV3+ ResNet-50 OS16 step in bfloat16.
#
#   bash experiments/gpu_benchmark.sh [OUT_DIR]
#
# Needs one GPU, JAX with CUDA, PyTorch and segmentation_models_pytorch; no
# TensorFlow, no data set (random arrays). Writes segjax.json, torch_eager.json,
# torch_compile.json and summary.json to OUT_DIR (default: gpu_bench/) and
# prints the summary; `python -m segjax.bench report --gpu OUT_DIR/summary.json`
# puts it in docs/performance.md. 169 s on an H200 at the defaults (8 x 512 x
# 1024, 20 timed steps; compilation included), well inside 8 minutes.
# Override with HEIGHT, WIDTH, BATCH, STEPS, CLASSES; PYTHON picks the
# interpreter and DEVICE=cpu runs the PyTorch stages on the CPU (a dry run).
# A failing stage is reported and the others still run.
set -uo pipefail
OUT=${1:-gpu_bench}
HEIGHT=${HEIGHT:-512} WIDTH=${WIDTH:-1024} BATCH=${BATCH:-8}
STEPS=${STEPS:-20} CLASSES=${CLASSES:-19}
PY=${PYTHON:-python3} DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
# JAX must not grab 75% of the GPU while PyTorch runs beside it (they run one
# after the other here, but the matrix-product peak must fit).
export XLA_PYTHON_CLIENT_PREALLOCATE=false
shape=(--batch "$BATCH" --height "$HEIGHT" --width "$WIDTH" --classes "$CLASSES")
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt" || true

echo "== segjax (XLA), bfloat16"
$PY -m segjax.bench train_step --model deeplabv3plus --backbone resnet50 \
  --output-stride 16 "${shape[@]}" --dtype bfloat16 --steps "$STEPS" \
  | tee "$OUT/segjax.json" || echo "segjax stage failed"
echo "== PyTorch eager, bfloat16 autocast, channels-last"
$PY experiments/peers/smp_train_step.py --device "$DEVICE" --dtype bfloat16 \
  "${shape[@]}" --steps "$STEPS" | tee "$OUT/torch_eager.json" \
  || echo "torch eager stage failed"
echo "== PyTorch torch.compile, bfloat16 autocast, channels-last"
$PY experiments/peers/smp_train_step.py --device "$DEVICE" --dtype bfloat16 \
  "${shape[@]}" --steps "$STEPS" --compile | tee "$OUT/torch_compile.json" \
  || echo "torch.compile stage failed"

$PY - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]


def load(name):
  try:
    lines = open(os.path.join(out, name + '.json')).read().split('\n')
    return json.loads([l for l in lines if l.startswith('{')][-1])
  except (OSError, IndexError, ValueError):
    return None


s, e, c = load('segjax'), load('torch_eager'), load('torch_compile')
summary = {'gpu': open(os.path.join(out, 'gpu.txt')).read().strip(),
           'segjax': s, 'torch_eager': e, 'torch_compile': c}
torch_runs = [r['img_per_s'] for r in (e, c) if r]
if s and torch_runs:
  summary['segjax_vs_best_torch'] = s['img_per_s'] / max(torch_runs)
if s:
  # Model FLOPs (3 x forward, the peer's convention) over the bf16 peak.
  summary['segjax_mfu'] = (3 * s['fwd_flops_per_image'] * s['batch'] /
                           s['s_per_step'] / s['peak_flops_per_s'])
json.dump(summary, open(os.path.join(out, 'summary.json'), 'w'), indent=1)
for name, r in (('segjax', s), ('torch eager', e), ('torch.compile', c)):
  if r:
    print(f"{name:14s} {r['s_per_step'] * 1e3:8.1f} ms/step "
          f"{r['img_per_s']:7.1f} img/s, MFU "
          f"{3 * r['fwd_flops_per_image'] * r['batch'] / r['s_per_step'] / r['peak_flops_per_s']:.1%}")
  else:
    print(f'{name:14s} failed')
if 'segjax_vs_best_torch' in summary:
  print(f"segjax / best torch: {summary['segjax_vs_best_torch']:.2f}x")
EOF
