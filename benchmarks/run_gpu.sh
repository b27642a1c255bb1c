#!/usr/bin/env bash
# Issue-4 measurements on one GPU, in one call: this project's train step
# beside timm + torch.compile for the same configs, then the cifar10_fast
# recipe end to end. Prints JSON lines; copies them and the run folder to $OUT.
# ONLY_SEEDS=1 instead runs configs/sweeps/seed_recipes.py (issue 4's table of
# every seed model under one recipe).
#
# Prerequisites on the GPU machine (see docs/benchmarks.md):
#   /tmp/site    ml_collections + clu wheels (pip --target), on PYTHONPATH
#   /tmp/data/cifar10/{train_0..4,test}.npz
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
export MIXER_DATA_DIR="${MIXER_DATA_DIR:-/tmp/data}"
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
log() { echo "$@" | tee -a "$OUT/bench.jsonl"; }

bench_pair() {  # config batch [extra flags...]
  local cfg=$1 batch=$2; shift 2
  log "$(python -m mixer.benchmark --config="$cfg" --batch_size="$batch" \
        --dtype=bfloat16 --steps=50 --repeats=5 "$@" 2>/dev/null | tail -1)"
  log "$(python -m mixer.benchmark --config="$cfg" --batch_size="$batch" \
        --dtype=bfloat16 --steps=50 --repeats=5 --steps_per_dispatch=10 \
        "$@" 2>/dev/null | tail -1)"
  log "$(python benchmarks/timm_peer.py --config="$cfg" --batch_size="$batch" \
        --steps=50 --repeats=5 2>/dev/null | tail -1)"
}

if [ "${ONLY_SEEDS:-0}" = 1 ]; then
  # Every seed model under the cifar10_fast recipe. Resumable: call again
  # (while the machine is warm) until all six runs are done.
  python sweep.py --sweep=configs/sweeps/seed_recipes.py --workdir=/tmp/seeds \
      2>&1 | grep -E "^sweep|error" ; cp /tmp/seeds/summary.* "$OUT/"
  exit 0
fi

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
bench_pair configs/cifar10_baseline.py 512
bench_pair configs/cifar10_baseline.py 2048
bench_pair configs/mixer_b16.py 256
# The step beside the minimal jit'd step and timm (issue 21), interleaved.
for b in 512 2048; do
  python benchmarks/side_by_side.py --config=configs/cifar10_baseline.py \
      --batch_size=$b --dtype=bfloat16 --steps=20 --rounds=7 \
      --peers=project,project_augment,minimal,timm 2>/dev/null \
      | tee -a "$OUT/side_by_side.txt"
done

if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  rm -rf /tmp/fast
  /usr/bin/time -v python train.py --config=configs/cifar10_fast.py \
      --workdir=/tmp/fast 2>&1 | grep -E "step .*ETA|eval loss|Elapsed" | tail -40
  cp /tmp/fast/results.json "$OUT/fast_results.json"
  cp /tmp/fast/metrics.jsonl "$OUT/fast_metrics.jsonl"
  python - <<'PY'
import json
r = json.load(open('/tmp/fast/results.json'))
print(json.dumps({k: r[k] for k in ('final_eval_accuracy', 'best_eval_accuracy',
      'eval_examples', 'wall_seconds', 'train_seconds', 'images_per_second',
      'num_params', 'epochs')}))
PY
fi
