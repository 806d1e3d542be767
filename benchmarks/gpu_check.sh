#!/usr/bin/env bash
# GPU figures of issue 14 §4 in one go (< 8 min on one H200): benchmarks/scale.py gpu on the DDPM-CIFAR10
# UNet at batch 256, fp32 and bf16, eager and torch.compile, each with SimA over 25,000 + 25,000 images;
# then bf16 with channels_last in the time left. Results go to $OUT (or benchmarks/out-gpu): scale_gpu.json/.md,
# scale_gpu_cl.json/.md and the log; copy the tables into benchmarks/RESULTS.md with the command.
#
# The device image has CUDA torch but no diffusers: bring its wheels once, from the repo root, here:
#   echo /.whl/ >> .git/info/exclude
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 importlib_metadata==9.1.0
#   pip wheel --no-deps --no-build-isolation -w .whl .   # optional: else genleak is built there (setuptools >= 77)
# and run it with the device tool: command `bash benchmarks/gpu_check.sh`, carry [".whl"], timeout_s 540.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/out-gpu}
mkdir -p "$out"
py=${PYTHON:-python3}
budget=${BUDGET_S:-460}  # seconds for the whole script, installation included
# genleak itself is installed too (not only put on PYTHONPATH): attacks are found through its entry points
if [ -d .whl ]; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
if ! ls .whl/genleak-*.whl >/dev/null 2>&1; then
    $py -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target /tmp/site . || exit 1
fi
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
$py -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: this script is for a GPU machine")' || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

timeout $((budget - SECONDS - 90)) $py benchmarks/scale.py gpu --device cuda --n 2560 --batch-size 256 \
    --precision fp32,bf16 --compile --sima-full --out "$out/scale_gpu.json" 2>&1 | tee "$out/scale_gpu.log"
left=$((budget - SECONDS))
if [ "$left" -gt 60 ]; then
    timeout "$left" $py benchmarks/scale.py gpu --device cuda --n 2560 --batch-size 256 --precision bf16 --compile \
        --channels-last --attacks sima,loss --sima-full --out "$out/scale_gpu_cl.json" 2>&1 | tee "$out/scale_gpu_cl.log"
fi
echo "gpu_check.sh: ${SECONDS} s"
