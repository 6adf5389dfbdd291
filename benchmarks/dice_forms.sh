#!/usr/bin/env bash
# The loss default's measurement (docs/fidelity.md): the demo's data and training recipe
# (src/boltzformer/apps/demo.py, `boltzformer demo --minutes 6`) run twice side by side, one thread
# each, same seed, data and minutes, once per Dice form; then both best checkpoints evaluated
# on the test split. Usage: benchmarks/dice_forms.sh OUT_DIR [MINUTES]
set -euo pipefail
out=${1:?usage: benchmarks/dice_forms.sh OUT_DIR [MINUTES]}
minutes=${2:-6}
bf="${PYTHON:-python} -m boltzformer"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
[ -f "$out/data/test.json" ] || $bf synth "$out/data" --images 1200 --size 256 --seed 0
demo=(model.preset=tiny model.image_size=256 model.text_encoder=labels data.workers=2
      data.val_fraction=0.05
      optim.lr=2e-3 optim.warmup_steps=20 train.batch_size=4 train.prompts_per_image=8
      train.epochs=100 train.patience=null "train.max_minutes=$minutes" train.seed=0
      train.checkpoint_every=200)
for form in mask2former vnet; do
  $bf train --data "$out/data" --out "$out/run-$form" --no-progress "${demo[@]}" \
      "loss.dice=$form" > "$out/train-$form.log" 2>&1 &
done
wait
for form in mask2former vnet; do
  $bf evaluate --checkpoint "$out/run-$form" --data "$out/data" --split test \
      --out "$out/eval-$form" --seed 0 --no-progress > "$out/eval-$form.log" 2>&1 &
done
wait
for form in mask2former vnet; do
  python - "$out/eval-$form/metrics.json" "$form" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
w = m["size_strata"]["weighted"]
print(f"| {sys.argv[2]} | {100 * w['small']['dice_mean']:.1f} | {100 * w['large']['dice_mean']:.1f} "
      f"| {100 * m['overall']['dice_mean']:.1f} | {100 * m['overall']['failure_rate']:.1f} |")
PY
done
