#!/usr/bin/env bash
# The reduced-scale runs behind experiments/introspective/RESULTS.md, then their tables.
# Usage (from the repository root):
#   ROBUSTLAB_DATA=$ROBUSTLAB_DATA ROBUSTLAB_RUNS=$RUNS bash experiments/introspective/run_reduced.sh [part ...]
# Parts (default: all, in this order; each skips its finished runs and resumes unfinished ones):
#   mnist     full MNIST: ERM, ICN (K+1 form) and WINN, seeds 0-2; ICN's one-vs-rest form, seed 0
#   transfer  FGSM at eps 0.125 crafted on the ERM model of the next seed ((s+1) mod 3) and scored
#             on every model of the mnist part (WINN's "referee" transfer; robustlab-eval)
#   sizes     MNIST subsets of 10, 30, 100 and 300 images per class (subset drawn by the seed),
#             ERM, ICN and WINN, seeds 0-2; an epoch is floor(1000 / N) passes over the subset
#   cifar10   the CIFAR-10 copy: ERM, ICN and WINN, seeds 0-2
#   report    robustlab-report tables with the error reduction over ERM, in $RUNS/introspective/report
# Every run: experiment=introspective/<data>_reduced[_erm] (small_cnn, 5 epochs of batch 128, Adam
# 1e-3 betas (0, 0.9), cosine; 30 pseudo-negatives per class per epoch), suite clean + FGSM 0.125.
set -euo pipefail
RUNS=${ROBUSTLAB_RUNS:?set ROBUSTLAB_RUNS to the folder that holds the runs}
TRAIN=${TRAIN:-.venv/bin/robustlab-train}
EVAL=${EVAL:-.venv/bin/robustlab-eval}
REPORT=${REPORT:-.venv/bin/robustlab-report}
ROOT=$RUNS/introspective
PARTS=${*:-mnist transfer sizes cifar10 report}
SEEDS="0 1 2"
QUIET=(trainer.enable_progress_bar=false)

# the method overrides of each model name
method_args() {
  case $1 in
    erm)     echo "" ;;
    icn)     echo "method.variant=icn method.icn_form=kplus1" ;;
    icn_ovr) echo "method.variant=icn method.icn_form=one_vs_rest" ;;
    winn)    echo "method.variant=winn" ;;
  esac
}

# train DIR DATA NAME SEED [override ...]: one run in DIR unless it has finished
train() {
  local dir=$1 data=$2 name=$3 seed=$4
  shift 4
  if grep -qs '"status": "ok"' "$dir/results.json"; then return; fi
  local experiment=introspective/${data}_reduced
  [ "$name" = erm ] && experiment=${experiment}_erm
  # shellcheck disable=SC2046
  $TRAIN experiment="$experiment" seed="$seed" $(method_args "$name") "$@" resume=auto \
    "${QUIET[@]}" hydra.run.dir="$dir"
}

for part in $PARTS; do
  case $part in
    mnist)
      for seed in $SEEDS; do
        names="erm icn winn"
        [ "$seed" = 0 ] && names="erm icn icn_ovr winn"
        for name in $names; do
          train "$ROOT/mnist/full/$name/seed$seed" mnist "$name" "$seed"
        done
      done ;;
    transfer)
      for seed in $SEEDS; do
        source_dir=$ROOT/mnist/full/erm/seed$(((seed + 1) % 3))
        for name in erm icn icn_ovr winn; do
          [ -d "$ROOT/mnist/full/$name/seed$seed" ] || continue
          dir=$ROOT/mnist/transfer/$name/seed$seed
          if grep -qs '"status": "ok"' "$dir/results.json"; then continue; fi
          $EVAL checkpoint="$ROOT/mnist/full/$name/seed$seed" 'suite=[fgsm]' \
            'suite.fgsm.epsilons=[0.125]' suite.fgsm.source="$source_dir" \
            suite.fgsm.whitebox=false hydra.run.dir="$dir"
        done
      done ;;
    sizes)
      for seed in $SEEDS; do
        for n in 10 30 100 300; do
          for name in erm icn winn; do
            train "$ROOT/mnist/sizes/n$n/$name/seed$seed" mnist "$name" "$seed" \
              data.samples_per_class="$n" data.epoch_images_per_class=1000
          done
        done
      done ;;
    cifar10)
      for seed in $SEEDS; do
        for name in erm icn winn; do
          train "$ROOT/cifar10/$name/seed$seed" cifar10 "$name" "$seed"
        done
      done ;;
    report)
      out=$ROOT/report
      $REPORT "$ROOT/mnist/full" --baseline method=erm --reference experiments/introspective/reference.yaml \
        --output "$out/mnist"
      # robustlab-eval runs: the variant is in the evaluated run's config (train.*)
      $REPORT "$ROOT/mnist/transfer" --baseline method=erm --output "$out/mnist_transfer" \
        --group-by method train.method.variant train.method.icn_form
      for n in 10 30 100 300; do
        $REPORT "$ROOT/mnist/sizes/n$n" --baseline method=erm --output "$out/mnist_sizes/n$n"
      done
      $REPORT "$ROOT/cifar10" --baseline method=erm --output "$out/cifar10" ;;
    *) echo "run_reduced.sh: unknown part '$part'; use mnist, transfer, sizes, cifar10 or report" >&2
       exit 2 ;;
  esac
done
