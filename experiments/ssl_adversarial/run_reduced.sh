#!/usr/bin/env bash
# The earlier 40-batch MNIST runs (RESULTS.md's "superseded" tables; 2-core shared CPU): two
# streams in parallel, one torch thread each, then the tables and robust-accuracy-vs-ε plots
# (OUT_DIR/report). The configs now train to convergence (run_converged.sh); BUDGET restores the
# 40-batch budget and PGD-20 / 128-image evaluation these tables used. Usage:
#   ROBUSTLAB_DATA=../shared/data bash experiments/ssl_adversarial/run_reduced.sh OUT_DIR
set -euo pipefail
OUT=${1:?usage: run_reduced.sh OUT_DIR}
TRAIN=${TRAIN:-.venv/bin/robustlab-train}
REPORT=${REPORT:-.venv/bin/robustlab-report}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
BUDGET=(trainer.max_epochs=1 trainer.limit_train_batches=40 trainer.limit_val_batches=2)
EVAL=(suite.pgd_linf.steps=[20] suite.pgd_linf.restarts=1 suite.pgd_linf.max_images=128
  'suite.pgd_linf.epsilons=[0.05,0.1,0.2,0.3]' suite.pgd_l2.steps=[20] suite.pgd_l2.restarts=1
  suite.pgd_l2.max_images=128 'suite.pgd_l2.epsilons=[0.5,1.0,2.0]' suite.corruptions.severities=[3]
  suite.corruptions.max_images=128)
# stream A: adversarial training with auxiliary rotation SSL, λ ∈ {0, 0.5, 1} (λ = 0: plain AT)
$TRAIN -m experiment=ssl_adversarial/mnist method.ssl_weight=0,0.5,1.0 seed=0,1,2 \
  "${BUDGET[@]}" "${EVAL[@]}" hydra.sweep.dir="$OUT/auxiliary" > "$OUT/auxiliary.log" 2>&1 &
# stream B: attacked SSL (rotation loss also inside the attack, w = λ = 0.5), then adversarial
# rotation pre-training followed by adversarial fine-tuning of all layers
(
  $TRAIN -m experiment=ssl_adversarial/mnist method.ssl_weight=0.5 method.attack_ssl_weight=0.5 \
    seed=0,1,2 "${BUDGET[@]}" "${EVAL[@]}" hydra.sweep.dir="$OUT/attacked"
  for seed in 0 1 2; do
    $TRAIN experiment=ssl_adversarial/mnist_pretrain seed=$seed "${BUDGET[@]}" \
      hydra.run.dir="$OUT/pretrain/$seed"
    $TRAIN experiment=ssl_adversarial/mnist_finetune seed=$seed "${BUDGET[@]}" "${EVAL[@]}" \
      method.init_from="$OUT/pretrain/$seed/checkpoints/last.ckpt" hydra.run.dir="$OUT/finetune/$seed"
  done
) > "$OUT/stream_b.log" 2>&1 &
wait
$REPORT "$OUT/auxiliary" "$OUT/attacked" "$OUT/finetune" \
  --reference experiments/ssl_adversarial/reference.yaml \
  --output "$OUT/report" --plots pgd_linf/acc pgd_l2/acc
