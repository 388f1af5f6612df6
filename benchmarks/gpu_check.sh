#!/usr/bin/env bash
# Runs on the GPU machine (the device tool, carry .gpu_bundle; see docs/BENCHMARKS.md "GPU check"): installs the
# bundled wheels into /tmp/site, puts in stand-ins for SimpleITK and imagecodecs where they are missing (nnU-Net
# imports them at start-up for its image readers, which the check never calls: any use raises ImportError), points
# nnU-Net at the bundled phantom data and runs benchmarks/gpu_check.py; its JSON goes to $OUT when that is set.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu_bundle/whl/*.whl
export PYTHONPATH=/tmp/site:/tmp/stand_ins
for mod in SimpleITK imagecodecs; do
  if ! python3 -c "import $mod" 2>/dev/null; then
    mkdir -p /tmp/stand_ins/$mod
    printf 'def __getattr__(name):\n    raise ImportError("%s is not installed on this machine (gpu_check stand-in)")\n' "$mod" \
      > /tmp/stand_ins/$mod/__init__.py
  fi
done
export nnUNet_preprocessed=$PWD/.gpu_bundle/nnUNet_preprocessed nnUNet_raw=/tmp/gpu_raw nnUNet_results=/tmp/gpu_results
mkdir -p "$nnUNet_raw" "$nnUNet_results"
export nnUNet_def_n_proc=${nnUNet_def_n_proc:-8} PYTHONUNBUFFERED=1
python3 benchmarks/gpu_check.py --out "${OUT:-/tmp}/gpu_check.json" "$@"
