#!/usr/bin/env bash
# The reduced-scale MNIST runs behind RESULTS.md (2-core shared CPU): two streams in parallel,
# one torch thread each, then the tables and robust-accuracy-vs-ε plots (OUT_DIR/report). Usage:
#   ROBUSTLAB_DATA=../shared/data bash experiments/ssl_adversarial/run_reduced.sh OUT_DIR
set -euo pipefail
OUT=${1:?usage: run_reduced.sh OUT_DIR}
TRAIN=${TRAIN:-.venv/bin/robustlab-train}
REPORT=${REPORT:-.venv/bin/robustlab-report}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
# stream A: adversarial training with auxiliary rotation SSL, λ ∈ {0, 0.5, 1} (λ = 0: plain AT)
$TRAIN -m experiment=ssl_adversarial/mnist method.ssl_weight=0,0.5,1.0 seed=0,1,2 \
  hydra.sweep.dir="$OUT/auxiliary" > "$OUT/auxiliary.log" 2>&1 &
# stream B: attacked SSL (rotation loss also inside the attack, w = λ = 0.5), then adversarial
# rotation pre-training followed by adversarial fine-tuning of all layers
(
  $TRAIN -m experiment=ssl_adversarial/mnist method.ssl_weight=0.5 method.attack_ssl_weight=0.5 \
    seed=0,1,2 hydra.sweep.dir="$OUT/attacked"
  for seed in 0 1 2; do
    $TRAIN experiment=ssl_adversarial/mnist_pretrain seed=$seed hydra.run.dir="$OUT/pretrain/$seed"
    $TRAIN experiment=ssl_adversarial/mnist_finetune seed=$seed \
      method.init_from="$OUT/pretrain/$seed/checkpoints/last.ckpt" hydra.run.dir="$OUT/finetune/$seed"
  done
) > "$OUT/stream_b.log" 2>&1 &
wait
$REPORT "$OUT/auxiliary" "$OUT/attacked" "$OUT/finetune" \
  --reference experiments/ssl_adversarial/reference.yaml \
  --output "$OUT/report" --plots pgd_linf/acc pgd_l2/acc
