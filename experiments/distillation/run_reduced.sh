#!/usr/bin/env bash
# The reduced-scale CIFAR-10 runs behind experiments/distillation/RESULTS.md, then their tables.
# Usage (from the repository root):
#   ROBUSTLAB_DATA=$ROBUSTLAB_DATA ROBUSTLAB_RUNS=$RUNS bash experiments/distillation/run_reduced.sh [scarce|tenth|full]
# 1. the ResNet-14 teacher on the 45,000 training images (skipped once it has finished);
# 2. the small-CNN student alone, with KD, DKD, CRLD and KD+CRLD, seeds 0-2 (other students and
#    seeds: STUDENTS="ard" SEEDS="0" bash ... scarce, the ARD row of RESULTS.md):
#    scarce: 50 labelled images per class (each seed draws its own subset), batch 64, 100 epochs;
#    tenth:  500 labelled images per class (a tenth of the training split), batch 128, 20 epochs;
#    full:   all 45,000 training images, batch 128, the configs' 30 epochs (about 1.5 h per CRLD
#            student on a 2-core CPU: RESULTS.md reports scarce and tenth);
# 3. robustlab-report: mean ± std over the seeds, beside reference.yaml, in $RUNS/distill/cifar10/<budget>/report.
set -euo pipefail
BUDGET=${1:-scarce}
RUNS=${ROBUSTLAB_RUNS:?set ROBUSTLAB_RUNS to the folder that holds the runs}
TRAIN=${TRAIN:-.venv/bin/robustlab-train}
REPORT=${REPORT:-.venv/bin/robustlab-report}
ROOT=$RUNS/distill/cifar10
STUDENTS=${STUDENTS:-alone kd dkd crld kd_crld}  # also: ard (robust distillation)
SEEDS=${SEEDS:-0 1 2}
case $BUDGET in
  scarce) BUDGET_ARGS=(data.samples_per_class=50 data.batch_size=64 trainer.max_epochs=100
                       trainer.check_val_every_n_epoch=10) ;;
  tenth)  BUDGET_ARGS=(data.samples_per_class=500 trainer.max_epochs=20) ;;
  full)   BUDGET_ARGS=() ;;
  *) echo "run_reduced.sh: unknown budget '$BUDGET'; use scarce, tenth or full" >&2; exit 2 ;;
esac
if ! grep -qs '"status": "ok"' "$ROOT/teacher/seed0/results.json"; then
  $TRAIN experiment=distill/cifar10/teacher resume=auto trainer.enable_progress_bar=false \
    hydra.run.dir="$ROOT/teacher/seed0"
fi
# One run per (seed, student) in its own folder, seeds outermost so that an interrupted sweep
# leaves whole seeds; rerunning skips finished runs and resumes an unfinished one (resume=auto).
for seed in $SEEDS; do
  for student in $STUDENTS; do
    dir="$ROOT/$BUDGET/$student/seed$seed"
    if grep -qs '"status": "ok"' "$dir/results.json"; then continue; fi
    $TRAIN experiment=distill/cifar10/$student seed=$seed "${BUDGET_ARGS[@]}" resume=auto \
      trainer.enable_progress_bar=false hydra.run.dir="$dir"
  done
done
$REPORT "$ROOT/teacher" "$ROOT/$BUDGET" --reference experiments/distillation/reference.yaml \
  --group-by experiment --metrics test/acc corruptions/mean_acc pgd_linf/acc@2/255 pgd_linf/acc@8/255 \
  clean/ece --output "$ROOT/$BUDGET/report"
