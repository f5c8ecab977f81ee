#!/usr/bin/env bash
# Set up a fresh machine: Fashion-MNIST (Debian's package, when apt is available and we are root), then a
# virtual environment .venv with the pinned dependencies and this package. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ ! -d data/FashionMNIST/raw ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "bootstrap: Fashion-MNIST not installed; training will need 'icp data prepare --download'" >&2
  fi
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
# Snakemake's `--executor submitit` (icp/executor.py): Snakemake finds executor plugins only among installed,
# non-editable packages, so its small shim package is installed as one
.venv/bin/python -m pip install -q ./workflow/executor
