#!/usr/bin/env bash
# The converged Fashion-MNIST reference on one GPU (config/reference.yaml: runs of the paper grid, ResNet-20,
# 30 epochs, seeds 0-2), in one command from the repository's environment (`pip install -e .`: torch, snakemake,
# submitit):
#
#   bash tools/gpu_reference.sh
#
# 1. measures the aggregate training images/s of k = 1, 2, 4, 8 runs at once on the device (tools/gpu_reference.py
#    packing: k processes timing a real run's training step for BENCH_SECONDS each) and picks k: a larger k only
#    when it gives > 10 % more images/s than the current choice;
# 2. trains the grid with Snakemake's local profile, k runs at once on the one GPU (--jobs k; each run its own
#    submitit local job seeing the GPU; records count a 1/k share of the device), then summary.csv, tables and
#    figures, into RESULTS (default results/reference/<gpu>/fmnist; the runs go to the grid's runs_dir,
#    results/runs, where the paper grid finds them);
# 3. packs RESULTS and every run's record.json into one archive, OUT (default results/reference/<gpu>/fmnist.tar.gz).
#
# The recipe is trained as it is: train.compile, bf16 and channels_last are part of a run's config digest
# (icp.config.RESULT_NEUTRAL_KEYS holds only progress and fid_every), so setting them would make these records
# differ from the paper grid's runs of the same id. A run already complete in runs_dir is not trained again.
# Every knob is an environment variable (the tests run this script on a tiny grid on the CPU):
#   GRID=config/reference.yaml  GPU=<nvidia-smi name, e.g. h200; cpu without one>  RESULTS=results/reference/$GPU/fmnist
#   OUT=$RESULTS.tar.gz  KS="1 2 4 8"  BENCH_SECONDS=20 (per k)  BENCH_METHOD=icp-adam  WARMUP=10 (steps)
#   K=<skip the measurement, run k at once>  GPUS=<1 with nvidia-smi, else 0>  CPUS=<nproc>
#   PYTHON=python3  SNAKEMAKE="$PYTHON -m snakemake"  EXTRA=<more snakemake options, e.g. -n>
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
SNAKEMAKE=${SNAKEMAKE:-"$PYTHON -m snakemake"}
GRID=${GRID:-config/reference.yaml}
HAVE_GPU=0
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && HAVE_GPU=1
if [[ -z ${GPU:-} ]]; then
  if ((HAVE_GPU)); then  # "NVIDIA H200" -> h200, "NVIDIA GeForce RTX 4090" -> geforce-rtx-4090
    GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z' 'a-z' | sed -e 's/^nvidia //' \
      -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')
  else
    GPU=cpu
  fi
fi
RESULTS=${RESULTS:-results/reference/$GPU/fmnist}
OUT=${OUT:-$RESULTS.tar.gz}
KS=${KS:-"1 2 4 8"}
BENCH_SECONDS=${BENCH_SECONDS:-20}
BENCH_METHOD=${BENCH_METHOD:-icp-adam}
WARMUP=${WARMUP:-10}
GPUS=${GPUS:-$HAVE_GPU}
NPROC=$(OMP_NUM_THREADS= OMP_THREAD_LIMIT= nproc)  # the machine's CPUs: nproc alone reads OMP_NUM_THREADS
CPUS=${CPUS:-$NPROC}
EXTRA=${EXTRA:-}
RESULTS=${RESULTS%/}
mkdir -p "$RESULTS"
say() { echo "== $*" >&2; }
fail() { echo "gpu_reference: error: $*" >&2; exit 1; }

say "machine -> $RESULTS/machine.txt"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($NPROC CPUs)"
  if ((HAVE_GPU)); then
    echo "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
  else
    echo "gpu: none"
  fi
  $PYTHON -c "import torch; print('torch:', torch.__version__, '| cuda:', torch.version.cuda,
                                  '| cuda available:', torch.cuda.is_available())" || echo "torch: not importable"
  if COMMIT=$(git rev-parse HEAD 2>/dev/null); then
    echo "git: $COMMIT$(git diff --quiet HEAD 2>/dev/null || echo ' (work tree modified)')"
  else
    echo "git: unknown (not a git checkout)"
  fi
  echo "grid: $GRID"
} > "$RESULTS/machine.txt" || fail "could not write $RESULTS/machine.txt"
cat "$RESULTS/machine.txt" >&2
((HAVE_GPU)) && nvidia-smi > "$RESULTS/nvidia-smi.txt" 2>&1

# the data: the grid's data_root must hold Fashion-MNIST (or Debian's dataset-fashion-mnist); else download it
$PYTHON - "$GRID" <<'EOF' || fail "Fashion-MNIST is missing and could not be downloaded"
import sys
from pathlib import Path
from icp import data, gridfile
root = gridfile.load(sys.argv[1]).get("data_root", "data")
if data._find_fashion_mnist(Path(root)) is None:
    print(data.prepare("fashion-mnist", root, download=True))
EOF

if [[ -z ${K:-} ]]; then
  say "packing: aggregate images/s of k runs at once (k = $KS, ${BENCH_SECONDS} s each)"
  K=$($PYTHON tools/gpu_reference.py packing --grid "$GRID" --ks "$KS" --seconds "$BENCH_SECONDS" \
    --method "$BENCH_METHOD" --warmup "$WARMUP" --cpus "$CPUS" --out "$RESULTS/packing.tsv") \
    || fail "the packing measurement failed"
else
  echo "packing: not measured, K=$K given" > "$RESULTS/packing.txt"
fi
[[ $K =~ ^[1-9][0-9]*$ ]] || fail "k is '$K', not a positive integer"
THREADS=$(( CPUS / K > 0 ? CPUS / K : 1 ))

say "the grid with its outputs in $RESULTS"
$PYTHON tools/gpu_reference.py grid --grid "$GRID" --results "$RESULTS" --out "$RESULTS/grid.yaml" >/dev/null \
  || fail "could not write $RESULTS/grid.yaml"

say "sweep: $K run(s) at once, $THREADS CPU thread(s) each, GPUs per run: $GPUS"
# runs_per_gpu stays 1: on one machine k concurrent jobs share the GPU as a pack would, without a pack's wait for
# its slowest run; ICP_DEVICE_SHARED_BY makes each record count its 1/k share of the device
CMD="$SNAKEMAKE all --profile local --jobs $K --cores $K --set-resources train:gpus=$GPUS \
train:cpus_per_task=$THREADS train:runs_per_gpu=1 --config grid=$RESULTS/grid.yaml $EXTRA"
START=$(date +%s.%N)
ICP_DEVICE_SHARED_BY=$K $CMD > "$RESULTS/snakemake.log" 2>&1
RC=$?
END=$(date +%s.%N)
tail -n 5 "$RESULTS/snakemake.log" >&2
if ((RC != 0)); then  # a partly failed sweep: tables and figures of the records that exist
  say "the sweep failed (exit $RC): aggregating the records that exist"
  $SNAKEMAKE all --cores 1 --config grid="$RESULTS/grid.yaml" partial=true >> "$RESULTS/snakemake.log" 2>&1
fi
{
  echo "k: $K"
  echo "command: ICP_DEVICE_SHARED_BY=$K $CMD"
  echo "started: $(date -u -d @"${START%.*}" +%Y-%m-%dT%H:%M:%SZ)"
  echo "wall_s: $(awk -v a="$START" -v b="$END" 'BEGIN {printf "%.1f", b - a}')"
  echo "snakemake_exit: $RC"
} > "$RESULTS/sweep.txt"
cat "$RESULTS/sweep.txt" >&2

say "archive -> $OUT"
$PYTHON tools/gpu_reference.py archive --grid "$RESULTS/grid.yaml" --results "$RESULTS" --out "$OUT" \
  --name "reference-$GPU-fmnist" || fail "could not write $OUT"
exit "$RC"
