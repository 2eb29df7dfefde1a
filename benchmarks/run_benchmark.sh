#!/usr/bin/env bash
# Regenerates the README's benchmark tables and plots with `kwsdeploy benchmark` (1 thread, CPU):
#   benchmarks/results/<machine>/streaming/  frontend in the graph, the shipped demo checkpoints of
#       tcresnet8-causal and kwm, packets of 1-10 frames, batch 1 and 64, fp32 and INT8, beside
#       microWakeWord's okay_nabu (pymicro-wakeword, when installed) on the same audio;
#   benchmarks/results/<machine>/reference-size/  kwm-causal-192-12 (random weights): step vs
#       windowed recompute every 10 ms at batch 1, and the step at batch 64, against their bounds.
# Usage: benchmarks/run_benchmark.sh [extra options for every run, e.g. --calls 100]
set -euo pipefail
PY=${PYTHON:-python}
MACHINE=${MACHINE:-$($PY -c 'from kwsdeploy.bench.environment import machine_slug; print(machine_slug())')}
OUT=benchmarks/results/$MACHINE
$PY -m kwsdeploy.cli.main benchmark --models tcresnet8-causal,kwm --modes step --frontend \
    --packet-frames natural,8,10 --batch 1,64 --runtimes ort,ort-int8 --threads 1 --out "$OUT/streaming" "$@"
$PY -m kwsdeploy.cli.main benchmark --models kwm-causal-192-12 --modes step,windowed --packet-frames 1 \
    --batch 1 --runtimes ort --threads 1 --no-peers --calls 100 --out "$OUT/reference-size" "$@"
$PY -m kwsdeploy.cli.main benchmark --models kwm-causal-192-12 --modes step --packet-frames 1 \
    --batch 64 --runtimes ort --threads 1 --no-peers --out "$OUT/reference-size-batch64" "$@"
