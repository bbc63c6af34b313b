#!/usr/bin/env bash
# Which convolutional architecture (issue 12): widths, depth and decoder measured on one protocol
# cheap enough to try several on 2 cores: Fashion-MNIST class 0 (5,400 training images, the
# class's 1,000 test images), Bernoulli likelihood with dynamic binarization, 30 epochs, one thread
# each; test NLL by IWAE k=200. Prints one markdown row per architecture. Run by hand.
# Usage: bash bench/conv_search.sh [OUT_DIR] [NAME ...]    (default OUT_DIR runs/conv-search, all)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/conv-search}"; shift || true
declare -A ARCHS=(
    [mlp-400]="--arch mlp --hidden 400 --latent-dim 20"
    [conv-16-32]="--arch conv --hidden 16,32 --latent-dim 20"
    [conv-32-64]="--arch conv --hidden 32,64 --latent-dim 20"
    [conv-16-32-upsample]="--arch conv --hidden 16,32 --latent-dim 20 --conv-decoder upsample"
    [conv-32]="--arch conv --hidden 32 --latent-dim 20"
)
NAMES=("$@"); [ ${#NAMES[@]} -gt 0 ] || NAMES=(mlp-400 conv-32 conv-16-32 conv-16-32-upsample conv-32-64)
mkdir -p "$OUT"
echo "| architecture | flags | epochs (best) | train s | validation ELBO | test ELBO | test NLL (IWAE k=200) |"
echo "|---|---|---|---|---|---|---|"
for name in "${NAMES[@]}"; do
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 .venv/bin/vae-train train --dataset fashion-mnist --likelihood bernoulli --classes 0 --epochs 30 --iwae-k 200 \
        --seed 0 --no-progress --force ${ARCHS[$name]} --out "$OUT/$name" > "$OUT/$name.json" 2> "$OUT/$name.log"
    .venv/bin/python - "$OUT/$name" "$OUT/$name.json" "$name" "${ARCHS[$name]}" <<'PY'
import json, sys
manifest = json.load(open(f"{sys.argv[1]}/manifest.json"))
result = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
training = manifest["training"]
print(f"| {sys.argv[3]} | `{sys.argv[4]}` | {result['epochs']} ({result['best_epoch']}) | {training['seconds']:.0f} | "
      f"{result['validation_elbo_nats']:.2f} | {result['test_elbo_nats']:.2f} | {result['test_iwae_nll_nats']:.2f} |")
PY
done
