#!/usr/bin/env bash
# Every run behind RESULTS.md (MNIST trained to convergence: 3 epochs; CIFAR-10 for 10 epochs;
# see the experiment configs), then its tables and robust-accuracy-vs-ε plots in OUT_DIR/report.
# Two parallel streams, one torch thread each (about 8 h of training and 7 h of AutoAttack on a
# 2-core CPU: run it again after an interruption, it picks up where it stopped). Usage:
#   ROBUSTLAB_DATA=../shared/data bash experiments/ssl_adversarial/run_converged.sh OUT_DIR [PART]
# PART (default all): aux | attacked | pretrain | control | trades | l2 | cifar10 | aa | report
set -euo pipefail
OUT=${1:?usage: run_converged.sh OUT_DIR [PART]}
PART=${2:-all}
# A part stopped midway (a killed session, a time limit) is finished by running the same command
# again: finished jobs are left as they are (skip_finished), interrupted ones continue (resume).
TRAIN="${TRAIN:-robustlab-train} resume=auto skip_finished=true"
EVAL="${EVAL:-robustlab-eval} skip_finished=true"
REPORT=${REPORT:-robustlab-report}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=0,1,2
mkdir -p "$OUT"
want() { [[ $PART == all || $PART == "$1" ]]; }

# Table 1: adversarial training with an auxiliary rotation loss of weight λ (λ = 0: plain AT)
aux() {
  $TRAIN -m experiment=ssl_adversarial/mnist method.ssl_weight=0,0.25,0.5,1.0,2.0 seed=$SEEDS \
    hydra.sweep.dir="$OUT/auxiliary"
}
# Table 2: attacked SSL (the rotation loss also inside the attack, w = λ = 0.5)
attacked() {
  $TRAIN -m experiment=ssl_adversarial/mnist method.ssl_weight=0.5 method.attack_ssl_weight=0.5 \
    seed=$SEEDS hydra.sweep.dir="$OUT/attacked"
}
# Table 3: adversarial SSL pre-training (rotation, jigsaw, both) → adversarial fine-tuning
pretrain() {
  local name pretext seed
  for name in rotation jigsaw ensemble; do
    case $name in ensemble) pretext='[rotation,jigsaw]' ;; *) pretext="[$name]" ;; esac
    for seed in ${SEEDS//,/ }; do
      $TRAIN experiment=ssl_adversarial/mnist_pretrain "method.pretext=$pretext" seed=$seed \
        hydra.run.dir="$OUT/pretrain/$name/$seed"
      $TRAIN experiment=ssl_adversarial/mnist_finetune seed=$seed \
        method.init_from="$OUT/pretrain/$name/$seed/checkpoints/last.ckpt" \
        hydra.run.dir="$OUT/finetune/$name/$seed"
    done
  done
}
# Table 3's compute-matched control: adversarial training for the pre-training + fine-tuning epochs
control() {
  $TRAIN -m experiment=ssl_adversarial/mnist_finetune trainer.max_epochs=6 seed=$SEEDS \
    hydra.sweep.dir="$OUT/control_at6"
}
# Table 4: TRADES (β = 6) and l2 PGD adversarial training (ε_train = 1.0, step 2.5·ε/5)
trades() {
  $TRAIN -m experiment=ssl_adversarial/mnist method.ssl_weight=0 method.loss=trades seed=$SEEDS \
    hydra.sweep.dir="$OUT/trades"
}
l2() {
  $TRAIN -m experiment=ssl_adversarial/mnist method.ssl_weight=0 method.attack.norm=l2 \
    method.attack.eps=1.0 method.attack.step_size=0.5 seed=$SEEDS hydra.sweep.dir="$OUT/l2"
}
# CIFAR-10 at a few CPU hours (10 epochs, see the config): plain AT against the auxiliary
# rotation loss λ = 0.5 (about 1 h of training per job on one core)
cifar10() {
  $TRAIN -m experiment=ssl_adversarial/cifar10 method.ssl_weight=0,0.5 seed=$SEEDS \
    hydra.sweep.dir="$OUT/cifar10"
}
# AutoAttack (reference implementation, standard version) at ε_train = 0.1 (l∞) on the first
# AA_IMAGES (500) test images of every l∞-trained classifier, one sweep per variant folder (on
# the 2-core CPU about 17 min per classifier: 500 of 1,000 images keeps the part near 7 h)
aa() {
  local variant runs
  for variant in auxiliary attacked finetune/rotation finetune/jigsaw finetune/ensemble \
    control_at6 trades; do
    [[ -d $OUT/$variant ]] || continue
    runs=$(find "$OUT/$variant" -name results.json -printf '%h\n' | sort -V | paste -sd,)
    [[ -n $runs ]] || continue
    $EVAL -m "checkpoint=$runs" 'suite=[autoattack]' 'suite.autoattack.epsilons=[0.1]' \
      suite.autoattack.max_images=${AA_IMAGES:-500} hydra.sweep.dir="$OUT/aa/${variant//\//_}"
  done
}
report() {  # Table 3's and 4's random-init AT row is Table 1's λ = 0 row
  local pgd=(test/acc 'pgd_linf/acc@*' 'pgd_l2/acc@*' corruptions/mean_acc)
  $REPORT "$OUT/auxiliary" "$OUT/attacked" --reference experiments/ssl_adversarial/reference.yaml \
    --output "$OUT/report/table1_2" --plots pgd_linf/acc pgd_l2/acc --metrics "${pgd[@]}" \
    --mark pgd_linf/acc=0.1 pgd_l2/acc=1.0
  $REPORT "$OUT"/finetune/{rotation,jigsaw,ensemble} "$OUT/control_at6" --group-by path \
    --output "$OUT/report/table3" --plots pgd_linf/acc --metrics "${pgd[@]}" \
    --mark pgd_linf/acc=0.1
  $REPORT "$OUT"/pretrain/{rotation,jigsaw,ensemble} --group-by path \
    --output "$OUT/report/table3_pretrain" --metrics test/acc val/ssl_acc
  $REPORT "$OUT/trades" "$OUT/l2" --output "$OUT/report/table4" --metrics "${pgd[@]}"
  [[ ! -d $OUT/cifar10 ]] || $REPORT "$OUT/cifar10" --output "$OUT/report/cifar10" \
    --plots pgd_linf/acc pgd_l2/acc --metrics "${pgd[@]}" val/acc --mark pgd_linf/acc=8/255
  $REPORT "$OUT"/aa/* --group-by path train.method.ssl_weight --output "$OUT/report/autoattack" \
    --metrics test/acc 'autoattack/acc@*'
}

if [[ $PART == all ]]; then
  ( aux; trades ) > "$OUT/stream_a.log" 2>&1 &
  ( attacked; pretrain; control; l2; cifar10 ) > "$OUT/stream_b.log" 2>&1 &
  wait
  aa > "$OUT/aa.log" 2>&1
  report
else
  want "$PART" && "$PART"
fi
