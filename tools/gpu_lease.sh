#!/usr/bin/env bash
# Everything one lent GPU call does (issue 41), inside a fixed time budget, in this order:
#   1. throughput on the otherwise idle device: aggregate images/s of k = 1, 2, 4, 8 runs at once for ce and
#      icp-adam, eager and compiled (tools/gpu_reference.py packing; compilation is in each row's set-up seconds);
#   2. the reference, in the background from here on: the grid's STUDIES at EPOCHS epochs (config/reference.yaml:
#      Fashion-MNIST ResNet-20 with its controls, seeds 0-2), K runs at once, the FIRST variants first, until the
#      budget's end (tools/gpu_reference.py sweep: no run trains past it; sweep.tsv lists what did not fit);
#   3. beside it, the smoke: every classifier method for a few steps, eager and compiled (tools/gpu_smoke.py), and
#      a packed pair (two runs in one job through icp.launch, runs_per_gpu 2: tools/gpu_reference.py pair);
#   4. summary, tables and figures of the records that exist, and one archive of it all (no checkpoints).
# Usage (the knobs are environment variables; the tests and a CPU rehearsal shrink them):
#   BUDGET=540 OUT_DIR=$OUT bash tools/gpu_lease.sh
# BUDGET   seconds for the whole script (default 540)    DEVICE  cuda (cpu to rehearse)     GPU  name for paths
# RESULTS  where everything is written (default results/reference/$GPU/lease)
# ARCHIVE  the one file to bring back (default $RESULTS.tar.gz)
# DATA_ROOT folder with FashionMNIST/raw (default data)  WHEELS folder of wheels to install first (optional)
# SMOKE_STEPS=20 SMOKE_WORKERS=4 SMOKE_S=150  BENCH_SECONDS=4 KS="1 2 4 8" BENCH_S=150  K=8 EPOCHS=5
# STUDIES=main  FIRST="ce icp-adam icp+steps=0 ce+budget=icp-adam"  TAIL_S=45 (kept for step 4)
# GRID_SETS="more settings for every reference run" (a CPU rehearsal: data.train_subset=512)
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${BUDGET:-540}
END=$((START + BUDGET))
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
if [[ -n ${WHEELS:-} ]]; then
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
DEVICE=${DEVICE:-cuda}
if [[ -z ${GPU:-} ]]; then
  GPU=cpu
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && GPU=$(nvidia-smi --query-gpu=name \
    --format=csv,noheader | head -1 | tr 'A-Z' 'a-z' | sed -e 's/^nvidia //' -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')
fi
RESULTS=${RESULTS:-results/reference/$GPU/lease}
ARCHIVE=${ARCHIVE:-$RESULTS.tar.gz}
DATA_ROOT=${DATA_ROOT:-data}
NPROC=$(OMP_NUM_THREADS= OMP_THREAD_LIMIT= nproc)  # the machine's CPUs: nproc alone reads OMP_NUM_THREADS
CPUS=${CPUS:-$NPROC}
SMOKE_STEPS=${SMOKE_STEPS:-20}; SMOKE_WORKERS=${SMOKE_WORKERS:-4}; SMOKE_S=${SMOKE_S:-150}
BENCH_SECONDS=${BENCH_SECONDS:-4}; KS=${KS:-"1 2 4 8"}; BENCH_S=${BENCH_S:-150}
K=${K:-8}; EPOCHS=${EPOCHS:-5}; STUDIES=${STUDIES:-main}; TAIL_S=${TAIL_S:-45}
FIRST=${FIRST:-"ce icp-adam icp+steps=0 ce+budget=icp-adam"}
PAIR_SUBSET=${PAIR_SUBSET:-8192}
STAGES=${STAGES:-"throughput sweep smoke summary"}; SMOKE_MODES=${SMOKE_MODES:-"eager compiled"}
SPECS=${SPECS:-"ce:eager icp-adam:eager ce:compiled icp-adam:compiled"}; BENCH_K_TIMEOUT=${BENCH_K_TIMEOUT:-120}
GPUS=0; [[ $DEVICE == cuda ]] && GPUS=1
mkdir -p "$RESULTS"
say() { echo "== [$(($(date +%s) - START)) s] $*" >&2; }
left() { echo $((END - $(date +%s))); }

say "machine -> $RESULTS/machine.txt"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($NPROC CPUs)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PYTHON -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda',
torch.version.cuda, '| cudnn', torch.backends.cudnn.version(), '| available', torch.cuda.is_available())"
  echo "git: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "budget_s: $BUDGET  k: $K  epochs: $EPOCHS  studies: $STUDIES  first: $FIRST"
} > "$RESULTS/machine.txt" 2>&1
cat "$RESULTS/machine.txt" >&2

say "1. throughput on the idle device: k runs at once, ce and icp-adam, eager and compiled"
GRID_SRC=${GRID_SRC:-config/reference.yaml}
$PYTHON tools/gpu_reference.py grid --grid "$GRID_SRC" --results "$RESULTS" --studies $STUDIES \
  --set "train.epochs=$EPOCHS" ${GRID_SETS:+$(printf -- '--set %s ' $GRID_SETS)} --runs-dir "$RESULTS/runs" --data-root "$DATA_ROOT" --out "$RESULTS/grid.yaml" >&2 \
  || { say "could not derive the grid"; exit 1; }
BENCH_END=$(( $(date +%s) + BENCH_S ))
for spec in $SPECS; do
  [[ $STAGES == *throughput* ]] || break
  set -- ${spec/:/ }
  rest=$((BENCH_END - $(date +%s)))
  ((rest > 20)) || { echo "throughput $1 $2: skipped (its budget is spent)" >> "$RESULTS/throughput.txt"; continue; }
  SET=(); [[ $2 == compiled ]] && SET=(--set train.compile=reduce-overhead)
  timeout -k 5 "$rest" $PYTHON tools/gpu_reference.py packing --grid "$RESULTS/grid.yaml" --ks "$KS" \
    --seconds "$BENCH_SECONDS" --method "$1" --warmup 10 --cpus "$CPUS" --timeout "$BENCH_K_TIMEOUT" "${SET[@]}" \
    --out "$RESULTS/packing-$1-$2.tsv" > /dev/null 2>> "$RESULTS/throughput.log"
  echo "throughput $1 $2: exit $?" >> "$RESULTS/throughput.txt"
  cat "$RESULTS/packing-$1-$2.txt" >> "$RESULTS/throughput.txt" 2>/dev/null
done
cat "$RESULTS/throughput.txt" >&2

say "2. the reference: $STUDIES at $EPOCHS epochs, $K at once, until $((END - TAIL_S - START)) s (in the background)"
SWEEP_START=$(date +%s)
[[ $STAGES == *sweep* ]] && $PYTHON tools/gpu_reference.py sweep --grid "$RESULTS/grid.yaml" --jobs "$K" --cpus "$CPUS" \
  --deadline $((END - TAIL_S)) --first $FIRST --out "$RESULTS/sweep.tsv" 2> "$RESULTS/sweep.log" &
SWEEP_PID=$!

say "3. smoke (eager and compiled, every classifier method) beside a packed pair, both beside the sweep"
timeout -k 5 "$SMOKE_S" $PYTHON tools/gpu_smoke.py smoke --device "$DEVICE" --steps "$SMOKE_STEPS" \
  --workers "$SMOKE_WORKERS" --budget $((SMOKE_S - 10)) --modes $SMOKE_MODES --threads 2 \
  --data-root "$DATA_ROOT" --out "$RESULTS" ${SMOKE_METHODS:+--methods $SMOKE_METHODS} > "$RESULTS/smoke.log" 2>&1 &
SMOKE_PID=$!
timeout -k 5 "$SMOKE_S" $PYTHON tools/gpu_reference.py pair --work /tmp/icp-pair --gpus $GPUS --cpus 4 \
  --data-root "$DATA_ROOT" --subset "$PAIR_SUBSET" --out "$RESULTS/pair.txt" > "$RESULTS/pair.log" 2>&1
echo "pair exit $?" >&2
wait $SMOKE_PID; echo "smoke exit $?" >&2
tail -n 25 "$RESULTS/smoke.txt" >&2 2>/dev/null || tail -n 20 "$RESULTS/smoke.log" >&2

say "   waiting for the sweep"
wait $SWEEP_PID
echo "sweep exit $? after $(($(date +%s) - SWEEP_START)) s" >> "$RESULTS/sweep.log"
tail -n 3 "$RESULTS/sweep.log" >&2

say "4. summary, tables, figures, archive"
if [[ $STAGES == *summary* ]]; then
timeout -k 5 60 $PYTHON -m icp summarize --grid "$RESULTS/grid.yaml" > "$RESULTS/summarize.log" 2>&1
timeout -k 5 60 $PYTHON -m icp tables --grid "$RESULTS/grid.yaml" >> "$RESULTS/summarize.log" 2>&1
head -c 3000 "$RESULTS/tables/main.md" >&2 2>/dev/null
(($(left) > 15)) && timeout -k 5 $(($(left) - 10)) $PYTHON -m icp figures --grid "$RESULTS/grid.yaml" \
  >> "$RESULTS/summarize.log" 2>&1
fi
echo "wall_s: $(($(date +%s) - START))" >> "$RESULTS/machine.txt"
$PYTHON tools/gpu_reference.py archive --grid "$RESULTS/grid.yaml" --results "$RESULTS" --out "$ARCHIVE" \
  --name "$(basename "$RESULTS")" >&2
say "done"
