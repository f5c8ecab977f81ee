#!/usr/bin/env bash
# GPU measurements in one call (used on a lent GPU machine; needs only torch, torchvision, torchmetrics,
# pandas, pyyaml, tqdm there): training throughput of ResNet-20 at batch 128 under each speed option, then a
# converged CE run on real Fashion-MNIST. Usage: FMNIST_ROOT=<dir with FashionMNIST/raw> bash tools/gpu_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
STAGES=${STAGES:-"bench converge"}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision, torchmetrics; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'torchmetrics', torchmetrics.__version__)"
B="python3 -m icp bench --device cuda --models resnet20 --batch-size 128 --steps ${STEPS:-300} --warmup 30 --data synthetic --shape 3x32x32"
run() { local name=$1; shift; echo "== $name"; timeout "${LIMIT:-240}" "$@" 2>&1 | tee "$OUT/$name.txt" | grep -v "^  "; }
if [[ $STAGES == *bench* ]]; then
  run bench_fp32 $B --methods ce ls
  run bench_bf16_cl $B --methods ce ls --set train.bf16=true --set train.channels_last=true
  run bench_compile_default $B --methods ce --set train.compile=default
  run bench_compile_ro $B --methods ce ls --set train.compile=reduce-overhead
  run bench_compile_ro_bf16_cl $B --methods ce --set train.compile=reduce-overhead --set train.bf16=true --set train.channels_last=true
fi
if [[ $STAGES == *fast* ]]; then
  run bench_fp32 $B --methods ce
  run bench_compile_ro $B --methods ce ls --set train.compile=reduce-overhead
  run bench_compile_ro_fmnist python3 -m icp bench --device cuda --models resnet20 --batch-size 128 --steps 300 \
    --warmup 30 --methods ce --set data.root="${FMNIST_ROOT:-data}" --set train.compile=reduce-overhead
fi
if [[ $STAGES == *icpcheck* ]]; then
  echo "== icp gpu checks"; FMNIST_ROOT=${FMNIST_ROOT:-data} timeout 300 python3 tools/gpu_check_icp.py 2>&1 | tee "$OUT/icp_check.txt"
fi
if [[ $STAGES == *icpbench* ]]; then
  F="python3 -m icp bench --device cuda --models resnet20 --batch-size 128 --steps ${STEPS:-100} --warmup 10 --set data.root=${FMNIST_ROOT:-data}"
  run icp_bench_fp32 $F --methods ce icp-sgd:steps=1 icp-sgd icp-sgd:steps=10 icp-adam icp-ademamix ifgsm \
    icp-sgd:cuda_graph=false icp-sgd:reuse_clean_grad=true icp-sgd:warm_start=true icp-sgd:target_mode=eval
  run icp_bench_bf16_cl $F --methods ce icp-sgd:steps=1 icp-sgd icp-sgd:steps=10 --set train.bf16=true --set train.channels_last=true
  LIMIT=400 run icp_bench_compile_ro $F --methods ce icp-sgd:steps=1 icp-sgd icp-sgd:steps=10 icp-sgd:reuse_clean_grad=true \
    --set train.compile=reduce-overhead
fi
if [[ $STAGES == *allbench* ]]; then
  F="python3 -m icp bench --device cuda --models resnet20 --batch-size 128 --steps ${STEPS:-100} --warmup 10 --set data.root=${FMNIST_ROOT:-data}"
  # every classifier method of the registry (icp: the presets name it; vae: the generative model's own)
  METHODS=$(python3 -c 'from icp.methods import list_methods; print(*[m for m in list_methods() if m not in ("icp", "vae")])')
  run all_bench_fp32 $F --methods $METHODS
fi
if [[ $STAGES == *profile* ]]; then
  run profile_compile_ro $B --methods ce --steps 50 --set train.compile=reduce-overhead --profile
fi
if [[ $STAGES == *converge* ]]; then
  echo "== converge"
  timeout "${LIMIT:-400}" python3 -m icp train --config config/fmnist-ce.yaml --set data.root="${FMNIST_ROOT:-data}" \
    --set train.epochs=30 --set train.device=cuda --set train.progress=false ${CONVERGE_SETS:-} --out "$OUT/fmnist-ce-30ep"
  python3 -c "import json,sys; r=json.load(open('$OUT/fmnist-ce-30ep/record.json')); print([(e['epoch'], round(e['test']['top1'],4), round(e['images_per_s'])) for e in r['epochs']][-5:], r['wall_time_s'])"
  rm -f "$OUT"/fmnist-ce-30ep/*.pt
fi
