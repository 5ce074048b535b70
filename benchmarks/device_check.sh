#!/usr/bin/env bash
# A short check of the scores library on one GPU/TPU (at most 8 minutes): the score tests, then
# ResNet18 at batch 128 (train step, EL2N, GraNd, vmap(grad), K=4 seeds against 4 calls), then the
# small ViT and text classifier (GraNd against vmap(grad) in one process), then the K-seed
# training step on one device against a mesh of every device, and stacked against separate runs.
#
#   benchmarks/device_check.sh [OUT_DIR] [--tiny]
#
# OUT_DIR defaults to $OUT, else ./device_check. --tiny (or DEVICE_CHECK_TINY=1) runs a small CNN
# at batch 16, for a CPU. Results: OUT_DIR/device_check.json and OUT_DIR/pytest.log.
# PYTHON selects the interpreter (default: python3). See benchmarks/device_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-device_check}"
args=()
for arg in "$@"; do
  case "$arg" in
    --*) args+=("$arg") ;;
    *) out="$arg" ;;
  esac
done
# Allocate device memory as needed: each measurement runs in its own process, and the peak
# memory reported is the allocator's own count either way.
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
exec timeout 480 "${PYTHON:-python3}" -m benchmarks.device_check --out_dir="$out" \
  --budget_s=450 "${args[@]}"
