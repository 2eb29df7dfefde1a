#!/usr/bin/env bash
# Rebuild the checkpoints shipped in kwsdeploy/assets/checkpoints/<registry-name>/ from the whole
# FSDD-derived tree (real speech: train george, nicolas, yweweler; valid theo; test jackson, a
# speaker no training step sees) + SYNTHETIC speakers (`kwsdeploy data synth`, training voices
# only) + `_unknown_` (synthetic hard negatives and sentence cuts).
# Each model is evaluated on all of jackson's FSDD clips (+ _silence_), beside the checkpoint
# shipped now, and copied into the package only if it is better there (SHIP=0: never copied).
# Results: benchmarks/results/demo_checkpoints.{json,md}. After shipping, run the test suite: it
# asserts how the shipped checkpoints stream (tests/cli/test_detection.py), and
# benchmarks/detection.sh measures them on the long recordings; the copy rule is clip accuracy on
# jackson only, so a checkpoint that streams much better but scores a little lower is copied by hand
# (kwm-causal-64-4 was: demo_checkpoints.md says why).
#
# Usage: benchmarks/train_shipped_checkpoints.sh FSDD_ROOT [MODEL ...]   (FSDD_ROOT: the FSDD folder
#        with recordings/; or set FSDD_ROOT; default models: all below, in order)
# Env:   WORK=<dir> (data and runs; default a fresh temp dir), REUSE=1 (a finished run in WORK is
#        recorded, not retrained), KWS=<kwsdeploy command>, PY=<python>, SHIP=0|1 (default 1),
#        INIT_DIR=<dir> (one checkpoint folder per model to fine-tune from; default: made first by
#        benchmarks/train_demo_checkpoints.sh with SHIP=0, the demo-corpus recipe of the checkpoints
#        shipped before; the shipped run used those checkpoints as they were shipped).
# CPU, one thread per training, deployable features (the trainer's default), seed 0.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FSDD_ROOT=${1:-${FSDD_ROOT:-}}
[ $# -gt 0 ] && shift
if [ -z "$FSDD_ROOT" ] || [ ! -d "$FSDD_ROOT" ]; then
  echo "usage: $0 FSDD_ROOT [MODEL ...]  (the Free Spoken Digit Dataset folder, with recordings/)" >&2
  exit 2
fi
KWS=${KWS:-kwsdeploy}
PY=${PY:-python}
SHIP=${SHIP:-1}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/kws-ship.XXXXXX")}
DEST="$ROOT/kwsdeploy/assets/checkpoints"
RESULTS="$ROOT/benchmarks/results/demo_checkpoints"
DIGITS=zero,one,two,three,four,five,six,seven,eight,nine
mkdir -p "$WORK"

# --- data (each step skipped when its output is already in WORK) -------------------------------
[ -f "$WORK/fsdd_tree/kwsdeploy_corpus.json" ] || $KWS data prepare-fsdd --fsdd-root "$FSDD_ROOT" --out "$WORK/fsdd_tree"
[ -f "$WORK/synth_tree2/kwsdeploy_corpus.json" ] || \
  $KWS data synth --words $DIGITS --per-voice 1 --unknown-per-voice 4 --speed 0.55,1.3 --seed 0 --out "$WORK/synth_tree2"
# real only (the yardstick: every jackson clip + _silence_), and real + synthetic + _unknown_
[ -f "$WORK/fsdd_real/labels.json" ] || \
  $KWS data prepare-gsc --data-root "$WORK/fsdd_tree" --keywords $DIGITS --out "$WORK/fsdd_real"
[ -f "$WORK/fsdd_syn2/labels.json" ] || \
  $KWS data prepare-gsc --data-root "$WORK/fsdd_tree" --keywords $DIGITS --extra-train "$WORK/synth_tree2" \
    --unknown-share 0.3 --out "$WORK/fsdd_syn2"
# a second synthetic tree (other draws, 8 _unknown_ clips a voice) for the second stage: more
# non-keyword speech (_unknown_ 31 % of the training clips instead of 21 %)
[ -f "$WORK/synth_tree3/kwsdeploy_corpus.json" ] || \
  $KWS data synth --words $DIGITS --per-voice 1 --unknown-per-voice 8 --speed 0.55,1.3 --seed 1 --out "$WORK/synth_tree3"
[ -f "$WORK/fsdd_syn3/labels.json" ] || \
  $KWS data prepare-gsc --data-root "$WORK/fsdd_tree" --keywords $DIGITS --extra-train "$WORK/synth_tree2" \
    --extra-train "$WORK/synth_tree3" --unknown-share 0.5 --out "$WORK/fsdd_syn3"
DATA="$WORK/fsdd_syn2"
TEST="$WORK/fsdd_real"

# Each model's preset and overrides: the `speakers` augmentation preset (speed, tempo, reverb, EQ,
# telephone band, low-pass down to 0.7 kHz, level, SNR noise, shift) plus VTLP and a stronger EQ.
# tcresnet8-causal trains from scratch; the others are fine-tuned (--init) from the demo-corpus
# checkpoints (benchmarks/train_demo_checkpoints.sh): CPU time. kwm keeps its stream-context
# training (a never-reset recurrent state). Measured in benchmarks/results/speakers_ablation.md.
AUG="--preset speakers --vtlp 0.1 --eq-db 10 --lowpass-p 0.5"
FT="--lr 3e-3 --warmup-epochs 0.3"
declare -A OVERRIDES=(
  [tcresnet8-causal]="$AUG --epochs 40"
  [kwm-causal-64-4]="$AUG --init INIT --epochs 12 --lr 3e-3 --warmup-epochs 0.5 --stream-context 1.0"
  [bcresnet1-causal]="$AUG --init INIT --epochs 10 $FT"
  [matchboxnet-causal]="$AUG --init INIT --epochs 10 $FT"
  [convmixer]="$AUG --init INIT --epochs 2 $FT"
)
# Later stages where listed: each a fine-tune of the stage before's best checkpoint (STAGE1, STAGE2),
# on the data named in STAGE2_DATA / STAGE3_DATA (fsdd_syn3: more _unknown_; fsdd_syn2: the first stage's data).
# TEACHER: tcresnet8-causal, this run's, else the shipped one (sessions 13-14's distilled checkpoints
# learned from the shipped one).
declare -A STAGE2=(
  [tcresnet8-causal]="$AUG --init STAGE1 --epochs 10 $FT"
  [convmixer]="$AUG --init STAGE1 --epochs 6 $FT"  # session 12's D ran with --threads 2
  [matchboxnet-causal]="$AUG --init STAGE1 --teacher TEACHER --epochs 8 $FT"  # session 13's H
)
declare -A STAGE2_DATA=([tcresnet8-causal]=fsdd_syn3 [convmixer]=fsdd_syn3 [matchboxnet-causal]=fsdd_syn3)
declare -A STAGE3=(
  [convmixer]="$AUG --init STAGE2 --teacher TEACHER --epochs 6 $FT"  # session 14's K, --threads 2
)
declare -A STAGE3_DATA=([convmixer]=fsdd_syn3)
ORDER=(tcresnet8-causal kwm-causal-64-4 bcresnet1-causal matchboxnet-causal convmixer)
MODELS=("$@")
[ ${#MODELS[@]} -eq 0 ] && MODELS=("${ORDER[@]}")
if [ -z "${INIT_DIR:-}" ]; then
  INIT_DIR="$WORK/demo"
  missing=()
  for model in "${MODELS[@]}"; do
    [[ ${OVERRIDES[$model]:-} == *INIT* ]] && [ ! -f "$INIT_DIR/$model/best/card.json" ] && missing+=("$model")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    WORK="$INIT_DIR" SHIP=0 KWS="$KWS" PY="$PY" "$ROOT/benchmarks/train_demo_checkpoints.sh" "${missing[@]}"
  fi
  INIT_OF() { echo "$INIT_DIR/$1/best"; }
else
  INIT_OF() { echo "$INIT_DIR/$1"; }
fi

for model in "${MODELS[@]}"; do
  if [ -z "${OVERRIDES[$model]+x}" ]; then
    echo "unknown model '$model'; choose from: ${ORDER[*]}" >&2
    exit 2
  fi
  over=${OVERRIDES[$model]/INIT/$(INIT_OF "$model")}
  run="$WORK/$model"
  recipe="kwsdeploy train --model $model ${OVERRIDES[$model]} --data FSDD_SYN2 --threads 1 --out RUN_DIR"
  stages=("$over --data $DATA")
  outs=("$run")
  data_last=$DATA
  for n in 2 3; do
    declare -n later="STAGE$n" later_data="STAGE${n}_DATA"
    if [ -z "${later[$model]+x}" ]; then unset -n later later_data; break; fi
    prev=$((n - 1))
    outs[$((prev - 1))]="$run.stage$prev"
    s=${later[$model]/STAGE$prev/$run.stage$prev/best}
    teacher_note=""
    if [[ ${later[$model]} == *TEACHER* ]]; then
      teacher="$WORK/tcresnet8-causal/best"
      [ -f "$teacher/card.json" ] || teacher="$DEST/tcresnet8-causal"
      s=${s/TEACHER/$teacher}
      teacher_note="; TEACHER: tcresnet8-causal, this run's or the shipped one"
    fi
    data_last="$WORK/${later_data[$model]}"
    stages+=("$s --data $data_last")
    outs+=("$run")
    recipe="$recipe; then kwsdeploy train --model $model ${later[$model]} --data ${later_data[$model]^^} --threads 1 --out RUN_DIR (STAGE$prev: the run before's best$teacher_note)"
    unset -n later later_data
  done
  if [ "${REUSE:-0}" = 1 ] && [ -f "$run/test_metrics.json" ]; then
    echo "== $model: REUSE=1, $run already trained; recording it" >&2
  else
    for i in "${!stages[@]}"; do
      out=${outs[$i]}
      cmd="$KWS train --model $model ${stages[$i]} --out $out --threads 1 --no-progress --json"
      echo "== $model (stage $((i + 1))): $cmd" >&2
      [ -f "$out/test_metrics.json" ] && [ "${REUSE:-0}" = 1 ] || $cmd > "$out.train.json"
    done
  fi
  DATA_USED=$data_last  # the data of the run shipped (its last stage)
  "$PY" "$ROOT/benchmarks/record_checkpoint.py" --annotate "$run/best" "$DATA_USED"  # synthetic data named in the card
  # jackson (every FSDD clip of him + _silence_): the new run and the checkpoint shipped now
  $KWS eval --checkpoint "$run/best" --data "$TEST" --split test --json > "$run.eval.json"
  if [ -f "$DEST/$model/card.json" ]; then
    $KWS eval --checkpoint "$DEST/$model" --data "$TEST" --split test --json > "$run.old.eval.json"
  else
    echo '{"accuracy": -1}' > "$run.old.eval.json"
  fi
  shipped=$("$PY" -c "import json,sys; n,o=(json.load(open(p))['accuracy'] for p in sys.argv[1:]); print(int(n>o))" \
    "$run.eval.json" "$run.old.eval.json")
  if [ "$SHIP" = 1 ] && [ "$shipped" = 1 ]; then
    tmp="$DEST/.$model.tmp-$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    cp "$run/best/model.safetensors" "$run/best/card.json" "$tmp/"
    rm -rf "$DEST/$model"
    mv "$tmp" "$DEST/$model"
    echo "   shipped $model" >&2
  else
    shipped=0
    echo "   not shipped (SHIP=$SHIP, or not better than the shipped checkpoint on jackson)" >&2
  fi
  # the demo corpus's test split too (110 of jackson's clips: the numbers of the older table)
  $KWS eval --checkpoint "$run/best" --data "$ROOT/kwsdeploy/assets/demo_corpus" --split test --json > "$run.demo.eval.json"
  "$PY" "$ROOT/benchmarks/record_checkpoint.py" "$model" "$run" "$RESULTS" "$shipped" "$recipe"
done
