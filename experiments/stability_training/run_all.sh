#!/usr/bin/env bash
# Every run behind RESULTS.md, then its tables and figures in OUT_DIR/report. Usage:
#   ROBUSTLAB_DATA=../shared/data bash experiments/stability_training/run_all.sh OUT_DIR [PART]
# PART (default all): mnist | cifar10 | cifar10_plateau | report. One torch thread per job;
# wall time on a 2-core CPU: mnist ~1 h, cifar10 (2 epochs) ~1.5 h, cifar10_plateau ~3 h.
set -euo pipefail
R=${1:?usage: run_all.sh OUT_DIR [PART]}
PART=${2:-all}
# A part stopped midway is finished by running the same command again (finished jobs are skipped,
# interrupted ones continue)
TRAIN="${TRAIN:-robustlab-train} resume=auto skip_finished=true"
REPORT=${REPORT:-robustlab-report}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=0,1,2
mkdir -p "$R"

mnist() {
  $TRAIN -m experiment=stability/mnist_erm seed=$SEEDS hydra.sweep.dir="$R/mnist_erm"
  $TRAIN -m experiment=stability/mnist method.alpha=0.01,0.1,1.0 seed=$SEEDS \
    hydra.sweep.dir="$R/mnist_stability"
  $TRAIN -m experiment=stability/mnist method.perturbation=mix method.alpha=1.0 seed=$SEEDS \
    hydra.sweep.dir="$R/mnist_stability_mix"
  $TRAIN -m experiment=stability/mnist method.alpha=0.01,0.1,1.0 method.sigma=0.02,0.08,0.16,0.32 \
    seed=$SEEDS hydra.sweep.dir="$R/mnist_alpha_sigma"
}
cifar10() {  # 2 epochs
  $TRAIN -m experiment=stability/cifar10_erm seed=$SEEDS hydra.sweep.dir="$R/cifar10_erm"
  $TRAIN -m experiment=stability/cifar10 method.alpha=0.01,0.1,1.0 seed=$SEEDS \
    hydra.sweep.dir="$R/cifar10_stability"
  $TRAIN -m experiment=stability/cifar10 method.alpha=1.0 method.sigma=0.08,0.16 seed=$SEEDS \
    hydra.sweep.dir="$R/cifar10_alpha_sigma"
  $TRAIN -m experiment=stability/cifar10 method.perturbation=mix method.alpha=1.0 seed=$SEEDS \
    hydra.sweep.dir="$R/cifar10_stability_mix"
}
# Trained to a plateau of clean accuracy: 20 epochs (cosine to 0) on 45,000 images, a
# 5,000-image validation split for the per-epoch curve, clean accuracy on all 10,000 test images.
PLATEAU=(trainer.max_epochs=20 data.val_fraction=0.1 trainer.limit_test_batches=null seed=$SEEDS)
cifar10_plateau() {
  $TRAIN -m experiment=stability/cifar10_erm "${PLATEAU[@]}" \
    hydra.sweep.dir="$R/cifar10_plateau/erm"
  $TRAIN -m experiment=stability/cifar10 method.alpha=1.0 "${PLATEAU[@]}" \
    hydra.sweep.dir="$R/cifar10_plateau/gaussian"
  $TRAIN -m experiment=stability/cifar10 method.perturbation=mix method.alpha=1.0 "${PLATEAU[@]}" \
    hydra.sweep.dir="$R/cifar10_plateau/mix"
}
report() {
  local acc=(test/acc clean/acc distortions/mean_acc distortions/jpeg/mean_acc
    distortions/thumbnail/mean_acc distortions/crop/mean_acc distortions/gaussian_noise/mean_acc)
  local stab=(perturbation_sequences/mean_flip_prob near_duplicate/mean_auc near_duplicate/mean_ap
    near_duplicate/thumbnail/auc near_duplicate/crop/auc similar_ranking/mean_ranking_acc)
  local figs=(--plots distortions/acc near_duplicate/pr_precision)
  local cifar=("$R/cifar10_erm" "$R/cifar10_stability" "$R/cifar10_alpha_sigma"
    "$R/cifar10_stability_mix")
  $REPORT "$R/mnist_erm" "$R/mnist_stability" "$R/mnist_stability_mix" \
    --reference experiments/stability_training/reference.yaml --output "$R/report/mnist" \
    --metrics "${acc[@]}"
  $REPORT "$R/mnist_erm" "$R/mnist_stability" "$R/mnist_stability_mix" --decimals 3 --no-percent \
    --output "$R/report/mnist_stability_metrics" \
    --metrics "${stab[@]}" near_duplicate/mean_precision_at_recall_0.9 near_duplicate/jpeg/auc
  $REPORT "$R/mnist_erm" "$R/mnist_stability" "$R/mnist_alpha_sigma" \
    --output "$R/report/mnist_alpha_sigma" --metrics "${acc[@]}"
  $REPORT "$R/mnist_erm" "$R/mnist_stability" "$R/mnist_alpha_sigma" --decimals 3 --no-percent \
    --output "$R/report/mnist_alpha_sigma_stability_metrics" \
    --metrics train/stab_loss "${stab[@]}"
  $REPORT "$R/mnist_erm" "$R/mnist_stability"/{6,7,8} "$R/mnist_alpha_sigma"/{21,22,23} \
    "$R/mnist_stability_mix" \
    --output "$R/report/figures_mnist" "${figs[@]}" \
    --metrics test/acc distortions/mean_acc near_duplicate/mean_auc
  $REPORT "${cifar[@]}" \
    --output "$R/report/cifar10" --metrics "${acc[@]}"
  $REPORT "${cifar[@]}" \
    --decimals 3 --no-percent --output "$R/report/cifar10_stability_metrics" \
    --metrics train/stab_loss "${stab[@]}"
  $REPORT "$R/cifar10_erm" "$R/cifar10_stability"/{6,7,8} "$R/cifar10_stability_mix" \
    --output "$R/report/figures_cifar10" "${figs[@]}" \
    --metrics test/acc distortions/mean_acc perturbation_sequences/mean_flip_prob
  if [[ -d $R/cifar10_plateau ]]; then
    $REPORT "$R/cifar10_plateau" --output "$R/report/cifar10_plateau" "${figs[@]}" \
      --metrics "${acc[@]}" val/acc
    $REPORT "$R/cifar10_plateau" --decimals 3 --no-percent \
      --output "$R/report/cifar10_plateau_stability_metrics" \
      --metrics train/stab_loss "${stab[@]}"
  fi
}

case $PART in
  all) mnist; cifar10; cifar10_plateau; report ;;
  mnist | cifar10 | cifar10_plateau | report) "$PART" ;;
  *)
    echo "run_all.sh: unknown PART '$PART'; use mnist, cifar10, cifar10_plateau or report" >&2
    exit 2
    ;;
esac
