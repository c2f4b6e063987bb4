#!/usr/bin/env bash
# The GPU rows of benchmarks/README.md in one run, each figure's output kept in OUT:
#   bash benchmarks/gpu_rows.sh OUT [PRESET] [DEVICE]      (defaults: paper, cuda)
# Paper-size generation (10 s, 4 candidates, guidance 3) in bf16 without and with CUDA graphs, with
# grouped-query attention, with the fine stage's windows side by side and with the decoding step
# compiled (all three with CUDA graphs), then training tokens/s and MFU per stage LM and codec
# steps/s, and the stage LMs at batch 32, eager and compiled (one stage a command).
# `bash benchmarks/gpu_rows.sh OUT tiny cpu` runs the same commands small, as a check of the script.
# ROWS="train generate-graphs" runs only the rows named (default: all, in the order below).
set -euo pipefail
out=${1:?usage: gpu_rows.sh OUT [PRESET] [DEVICE]}
preset=${2:-paper}
device=${3:-cuda}
mkdir -p "$out"
dtype=bf16
graphs=--cuda-graphs
if [ "$device" = cpu ]; then dtype=fp32 graphs=""; fi
known="generate generate-graphs generate-gqa generate-windows generate-compiled train train-32
train-32-compiled-semantic train-32-compiled-coarse train-32-compiled-fine"
known=$(echo $known)  # one line
rows=${ROWS:-$known}
for row in $rows; do  # a misspelt row would otherwise run nothing, silently
    case " $known " in *" $row "*) ;; *) echo "gpu_rows.sh: ROWS names '$row'; rows: $known" >&2; exit 2 ;; esac
done
run() {  # NAME COMMAND...: the command's output to the terminal and to OUT/NAME.txt (if NAME is in ROWS)
    local name=$1
    shift
    case " $rows " in *" $name "*) ;; *) return 0 ;; esac
    echo "== $name: $*" | tee "$out/$name.txt"
    "$@" 2>&1 | tee -a "$out/$name.txt"
}
nvidia-smi -L >"$out/device.txt" 2>/dev/null || echo "$device" >"$out/device.txt"
rounds=${ROUNDS:-3}  # ROUNDS=1 for a quick pass
run generate python benchmarks/generate_audio.py --preset "$preset" --device "$device" --dtype "$dtype" \
    --rounds "$rounds"
if [ -n "$graphs" ]; then
    run generate-graphs python benchmarks/generate_audio.py --preset "$preset" --device "$device" \
        --dtype "$dtype" --rounds "$rounds" $graphs
fi
run generate-gqa python benchmarks/generate_audio.py --preset "$preset" --device "$device" --dtype "$dtype" \
    --rounds "$rounds" --kv-heads 1 $graphs
run generate-windows python benchmarks/generate_audio.py --preset "$preset" --device "$device" \
    --dtype "$dtype" --rounds "$rounds" --parallel-windows $graphs
run generate-compiled python benchmarks/generate_audio.py --preset "$preset" --device "$device" \
    --dtype "$dtype" --rounds "$rounds" --compile $graphs
run train python benchmarks/train_throughput.py --preset "$preset"
# the stage LMs at 32 windows a step, eager and compiled: what fills the GPU, and what fusion adds
run train-32 python benchmarks/train_throughput.py --preset "$preset" --batch-size 32 \
    --components semantic coarse fine
# one stage a command: each compiles for a minute or more on its own
for stage in semantic coarse fine; do
    run train-32-compiled-$stage python benchmarks/train_throughput.py --preset "$preset" --batch-size 32 \
        --components $stage --compile
done
