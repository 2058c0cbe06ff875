#!/usr/bin/env bash
# Train the pretrained models shipped in invstable/models/pretrained/ with the package's own command.
# Usage: bash scripts/train_pretrained.sh [NAME ...]   (default: all six, one after the other)
# As shipped they were trained on 2 CPU cores: ct30-gradflow alone with THREADS=2, then the CT and the Blur models
# in two parallel chains with THREADS=1 (10-25 min each).
# Checkpoints go to ${CKPT_DIR:-/tmp/invstable-pretrained}; rerun the same line with --resume after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=invstable/models/pretrained
CKPT_DIR=${CKPT_DIR:-/tmp/invstable-pretrained}
mkdir -p "$OUT" "$CKPT_DIR"
# shared recipe: Tikhonov-like first guess with the validation-best alpha of each task (identity regulariser,
# 32 validation images: 0.005 for CT-30, 0.01 for Blur-G2), two levels of depth (1 then 2 layers per block),
# Adam with cosine decay, batch 8, best of the validation PSNR kept
# (steps: 1500 for CT-30, 1000 for Blur-G2, the compute at hand; STEPS overrides both)
COMMON="--channels 8 --depth 1 --levels 2 --max-step 0.4 --lr 2e-3 --batch-size 8
        --smoothness 1e-4 --validate-every 100 --validation-count 32 --seed 0 --threads ${THREADS:-2} --no-progress"
CT="--task ct-30 --iterations 6 --init-alpha 0.005 --steps ${STEPS:-1500}"
BLUR="--task blur-g2 --iterations 5 --init-alpha 0.01 --steps ${STEPS:-1000}"
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
      --checkpoint "$CKPT_DIR/$name.ckpt" $([ -n "${RESUME:-}" ] && echo --resume || echo --overwrite)
done
