#!/usr/bin/env bash
# Regenerates the README's benchmark tables and plots with `kwsdeploy benchmark` (1 thread, CPU), under
# benchmarks/results/<machine>/ (<machine>: CPU model and usable cores):
#   streaming/       frontend in the graph (audio in), the shipped demo checkpoints of tcresnet8-causal
#                    and kwm, packets of 1, 8 and 10 frames, batch 1, fp32 and ort-int8 (int8-cpu),
#                    beside microWakeWord's okay_nabu (pymicro-wakeword, when installed), same audio;
#   batched/         the same models (features in and audio in), batch 1, 64 and 256: streams per core;
#   frontend.md      the MFCC frontend step graph alone, factorised vs direct DFT (bench_frontend.py);
#   reference-size/  kwm-causal-192-12 (random weights): step vs the window recomputed every 10 ms,
#                    batch 1, and the step at batch 64, each against its physical bound;
#   reference-size-int8/  its step at batch 1 and 64, fp32 beside the int8-cpu recipe (ort-int8).
# Every run times its rows in interleaved rounds, so ratios within a run hold on a loaded machine.
# Usage: benchmarks/run_benchmark.sh [extra options for every run, e.g. --calls 100]
set -euo pipefail
PY=${PYTHON:-python}
MACHINE=${MACHINE:-$($PY -c 'from kwsdeploy.bench.environment import machine_slug; print(machine_slug())')}
OUT=benchmarks/results/$MACHINE
KWS="$PY -m kwsdeploy.cli.main benchmark --threads 1"
$KWS --models tcresnet8-causal,kwm --modes step --frontend --packet-frames natural,8,10 --batch 1 \
    --runtimes ort,ort-int8 --rounds 10 --out "$OUT/streaming" "$@"
$KWS --models tcresnet8-causal,kwm --modes step --packet-frames natural,8 --batch 1,64,256 \
    --runtimes ort --no-peers --out "$OUT/batched" "$@"
$KWS --models tcresnet8-causal,kwm --modes step --frontend --packet-frames natural,8 --batch 1,64,256 \
    --runtimes ort --no-peers --out "$OUT/batched-frontend" "$@"
$KWS --models kwm-causal-192-12 --modes step,windowed --packet-frames 1 --batch 1 --runtimes ort \
    --no-peers --calls 100 --rounds 1 --max-seconds 5 --out "$OUT/reference-size" "$@"  # rows 100x apart in cost: not interleaved
$KWS --models kwm-causal-192-12 --modes step --packet-frames 1 --batch 64 --runtimes ort --no-peers \
    --out "$OUT/reference-size-batch64" "$@"
$KWS --models kwm-causal-192-12 --modes step --packet-frames 1 --batch 1,64 --runtimes ort,ort-int8 --no-peers --rounds 10 \
    --out "$OUT/reference-size-int8" "$@"  # issue 17: the cpu recipe (int8-cpu) against fp32, same run
$PY benchmarks/bench_frontend.py --packets 1,8 --batches 1,64 --out "$OUT/frontend.md"
