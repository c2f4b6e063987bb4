#!/usr/bin/env bash
# Train every component of a MusicLM bundle on one captioned manifest, on one machine.
#
#   scripts/train_bundle.sh components DATA.jsonl RUN   # codec, semantic tokenizer, MuLaN, melody (in parallel)
#   scripts/train_bundle.sh lms        DATA.jsonl RUN   # tokenize DATA, then the three stage LMs (in parallel)
#   scripts/train_bundle.sh bundle     DATA.jsonl RUN   # assemble RUN/bundle from the trained parts
#
# Each trainer resumes from RUN/<part> if it was interrupted. Budgets are wall-clock minutes per
# phase (the learning-rate schedule follows them): MINUTES_COMPONENTS, MINUTES_LMS. PRESET picks the
# config preset, PYTHON the interpreter, WORKERS the data-loading processes per trainer.
set -euo pipefail
PHASE=$1 DATA=$2 RUN=$3
PRESET=${PRESET:-tiny}
PYTHON=${PYTHON:-python3}
WORKERS=${WORKERS:-3}
MINUTES_COMPONENTS=${MINUTES_COMPONENTS:-8}
MINUTES_LMS=${MINUTES_LMS:-8}
mkdir -p "$RUN"
ml() { "$PYTHON" -m musiclm "$@"; }
common=(--preset "$PRESET" --no-progress --num-workers "$WORKERS" --log-every 100)

run_parallel() {  # name:command pairs; fails if any fails, after all have finished
  local pids=() names=() status=0
  for spec in "$@"; do
    local name=${spec%%:*}
    bash -c "${spec#*:}" >"$RUN/$name.log" 2>&1 &
    pids+=($!) names+=("$name")
  done
  for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then echo "${names[$i]}: done"; else echo "${names[$i]}: FAILED (see $RUN/${names[$i]}.log)"; tail -5 "$RUN/${names[$i]}.log"; status=1; fi
  done
  return $status
}

case $PHASE in
components)
  export -f ml; export PYTHON
  c="${common[*]}"
  run_parallel \
    "codec:ml train codec --data $DATA --out $RUN/codec $c --steps 200000 --batch-size 32 --crop-seconds 1.0 --lr 1e-3 --adversarial-start 100000000 --waveform-l1 0.1 --max-minutes $MINUTES_COMPONENTS --checkpoint-every 2000" \
    "semantic:ml train semantic --data $DATA --out $RUN/semantic $c --steps 100000 --batch-size 32 --lr 5e-4 --max-minutes $MINUTES_COMPONENTS --checkpoint-every 2000" \
    "mulan:ml train mulan --data $DATA --out $RUN/mulan $c --text-tower own --steps 100000 --batch-size 64 --lr 5e-4 --max-minutes $MINUTES_COMPONENTS --checkpoint-every 2000" \
    "melody:ml train melody --out $RUN/melody $c --steps 100000 --batch-size 64 --lr 5e-4 --max-minutes $MINUTES_COMPONENTS --checkpoint-every 2000"
  ;;
lms)
  ml tokenize --data "$DATA" --out "$RUN/tokens" --codec "$RUN/codec/model" --semantic "$RUN/semantic/model" \
    --mulan "$RUN/mulan/model" --melody "$RUN/melody/model" --segment-seconds 30
  export -f ml; export PYTHON
  c="${common[*]}"
  run_parallel \
    "semantic-lm:ml train semantic-lm --melody --tokens $RUN/tokens --out $RUN/semantic-lm $c --steps 200000 --batch-size 64 --lr 5e-4 --max-minutes $MINUTES_LMS --checkpoint-every 2000" \
    "coarse-lm:ml train coarse-lm --melody --tokens $RUN/tokens --out $RUN/coarse-lm $c --steps 200000 --batch-size 64 --lr 5e-4 --max-minutes $MINUTES_LMS --checkpoint-every 2000" \
    "fine-lm:ml train fine-lm --tokens $RUN/tokens --out $RUN/fine-lm $c --steps 200000 --batch-size 64 --lr 5e-4 --max-minutes $MINUTES_LMS --checkpoint-every 2000"
  ;;
bundle)
  ml bundle --half --name "${NAME:-musiclm-tiny}" --out "$RUN/bundle" --codec "$RUN/codec/model" --semantic "$RUN/semantic/model" \
    --mulan "$RUN/mulan/model" --melody "$RUN/melody/model" --semantic-lm "$RUN/semantic-lm/model" \
    --coarse-lm "$RUN/coarse-lm/model" --fine-lm "$RUN/fine-lm/model"
  ;;
*)
  echo "unknown phase $PHASE (components, lms, bundle)" >&2
  exit 2
  ;;
esac
