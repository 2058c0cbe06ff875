#!/usr/bin/env bash
# Train the pretrained models shipped in invstable/models/pretrained/ with the package's own command.
# Usage: bash scripts/train_pretrained.sh [NAME ...]   (default: all six; CPU, 2 threads, ~10 min each here)
# Checkpoints go to ${CKPT_DIR:-/tmp/invstable-pretrained}; rerun the same line with --resume after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=invstable/models/pretrained
CKPT_DIR=${CKPT_DIR:-/tmp/invstable-pretrained}
mkdir -p "$OUT" "$CKPT_DIR"
# shared recipe: Tikhonov-like first guess with the validation-best alpha of each task (identity regulariser,
# 32 validation images: 0.005 for CT-30, 0.01 for Blur-G2), two levels of depth (1 then 2 layers per block),
# Adam with cosine decay, batch 8, best of the validation PSNR kept
COMMON="--channels 8 --depth 1 --levels 2 --max-step 0.4 --steps ${STEPS:-1500} --lr 2e-3 --batch-size 8
        --smoothness 1e-4 --validate-every 100 --validation-count 32 --seed 0 --threads 2 --no-progress"
CT="--task ct-30 --iterations 6 --init-alpha 0.005"
BLUR="--task blur-g2 --iterations 5 --init-alpha 0.01"
declare -A RECIPE=(
  [ct30-gradflow]="$CT --family gradient_flow"
  [ct30-hamiltonian]="$CT --family hamiltonian"
  [ct30-unconstrained]="$CT --family unconstrained"
  [blur-gradflow]="$BLUR --family gradient_flow"
  [blur-hamiltonian]="$BLUR --family hamiltonian"
  [blur-unconstrained]="$BLUR --family unconstrained"
)
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(ct30-gradflow blur-gradflow ct30-unconstrained blur-unconstrained ct30-hamiltonian blur-hamiltonian)
for name in "${NAMES[@]}"; do
  echo "== $name"
  # shellcheck disable=SC2086
  python3 -m invstable train ${RECIPE[$name]} $COMMON --out "$OUT/$name.safetensors" \
      --checkpoint "$CKPT_DIR/$name.ckpt" ${RESUME:+--resume}
done
