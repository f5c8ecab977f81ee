#!/usr/bin/env bash
# Fashion-MNIST comparison of methods over seeds, every run on one device at the same time (a lent GPU has
# spare capacity for many small ResNet-20 runs), with one recipe for all: config/fmnist-ce.yaml, EPOCHS epochs,
# gradient clipping 5 (ICP's setting) for every method. AI-KD waits for the ce run of its seed: that run is its
# pre-trained model. Ends with `icp report` over the records (mean ± std over seeds).
# Usage: [PYTHON=python3] FMNIST_ROOT=<dir with FashionMNIST/raw> OUT=<dir> [EPOCHS=6] [SEEDS="0 1"] [METHODS="..."] [EXTRA="--set k=v ..."]
#        bash tools/fmnist_compare.sh
# Throughput in these records is measured with the other runs sharing the device: use `icp bench` for speed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
OUT=${OUT:-results/compare}
EPOCHS=${EPOCHS:-6}
SEEDS=${SEEDS:-"0 1"}
METHODS=${METHODS:-"icp-sgd icp-adam icp-ademamix ce ls pskd cskd tfkd byot aikd"}
mkdir -p "$OUT/logs"
COMMON=(--config config/fmnist-ce.yaml --set "data.root=${FMNIST_ROOT:-data}" --set "train.epochs=$EPOCHS"
        --set train.grad_clip=5 --set train.progress=false)
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
train() {
  local m=$1 s=$2; shift 2
  "${PYTHON:-python3}" -m icp train "${COMMON[@]}" "${EXTRA_ARGS[@]}" --set "method.name=$m" --set "train.seed=$s" "$@" \
    --out "$OUT/$m-s$s" > "$OUT/logs/$m-s$s.log" 2>&1
  echo "$m seed $s: $(tail -n 1 "$OUT/logs/$m-s$s.log")"
}
for s in $SEEDS; do
  for m in $METHODS; do
    if [[ $m == aikd ]]; then
      ( until grep -qs '"status": "complete"' "$OUT/ce-s$s/record.json"; do sleep 5; done
        train aikd "$s" --set "method.options.teacher=$OUT/ce-s$s" ) &
    else
      train "$m" "$s" &
    fi
  done
done
wait
"${PYTHON:-python3}" -m icp report "$OUT" --csv "$OUT/summary.csv"
