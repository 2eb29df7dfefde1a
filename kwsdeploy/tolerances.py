"""Every numeric tolerance of the project, named once; tests and export-time checks import these."""

# MFCC frontend
MFCC_MAX_REL_ERROR = 1e-4          # ours vs a float64 NumPy reference, relative to max |value|
MFCC_REFERENCE_ATOL = 1e-2         # reference preset vs the reference's features.npy (values ~400)

# Models
REFERENCE_LOGIT_REL_ATOL = 1e-4    # imported reference weights: |ours - golden| <= this * max|golden|
REFERENCE_E2E_REL_ATOL = 1e-3      # import-reference + predict from WAV files, relative to max|golden|

# Streaming
STEP_PARITY_ATOL = 1e-4            # step form vs offline model, max abs logit difference
SCAN_PARITY_ATOL = 1e-4            # parallel selective scan vs unrolled recurrence
# Training scan (SelectiveScanFn, hand-written backward) vs the plain-autograd scan, fp32 gradients:
# |ours - autograd| <= this * max|autograd| per input (float summation order only; measured <= 1.3e-6
# at B 32, d 128, n 16, L 200).
SCAN_GRAD_REL_ATOL = 2e-5

# Export
ONNX_PARITY_ATOL = 1e-4            # ONNX Runtime step graph vs torch step form, fp32
ONNX_FP16_PARITY_ATOL = 5e-2       # fp16 graph vs torch fp32 step form
# The same over minutes of one stream (no reset; tcresnet8-causal with the MFCC inside, logits up to ~7):
# there the two fp32 step forms cannot agree to ONNX_PARITY_ATOL, because each is that far from exact
# arithmetic. Measured on the 2-minute stream of tests/cli/test_stream.py against a float64 run of the same
# torch step form: torch fp32 up to 1.9e-4 (2.2e-4 with the frame-outer MFCC layout), ONNX Runtime 1.1e-4
# (both layouts); their difference 0.8e-4 / 1.1e-4. The features themselves differ by up to 0.009 (fp32
# DFT rounding in quiet frames, before the log).
LONG_STREAM_PARITY_ATOL = 3e-4

# INT8 (Step 6)
INT8_MAX_ACCURACY_DROP = 0.02      # allowed top-1 drop of an INT8 graph vs fp32 (tests, small real-speech split)
# Selective precision: a layer whose isolated SQNR (INT8 vs fp32 on the calibration stream) is under
# this stays float. The first layer on raw MFCC (c0 dwarfs the other coefficients under a per-tensor
# activation scale) measures ~23 dB on the demo checkpoints and costs tcresnet8-causal 1.8 points of
# top-1 when quantized; the other layers measure 26-60 dB.
INT8_MIN_SQNR_DB = 25.0
# Selective precision, second pass (the stream gate): when the logits SQNR of the INT8 graph vs fp32,
# both streaming the calibration clips free-running (each its own state), is under
# INT8_STREAM_GATE_BELOW_DB, then while it is under INT8_MIN_STREAM_SQNR_DB the quantized layer whose
# quantization alone costs the stream most is kept float too (at most INT8_STREAM_MAX_ROUNDS layers).
# Measured on held-out data (benchmarks/results/int8_gate.md): graphs streaming over 25 dB without the
# gate (tcresnet8-causal, matchboxnet-causal, convmixer) gained nothing from any floor (30 dB cost
# convmixer one stream event); bcresnet1-causal (17.7 dB) got top-1 and stream detection back to fp32
# only at 40 dB (30 dB: top-1 -0.9, stream -8.1 points); kwm-causal-64-4 (15.8 dB) was unchanged at
# every floor within one clip.
INT8_STREAM_GATE_BELOW_DB = 20.0
INT8_MIN_STREAM_SQNR_DB = 40.0
INT8_STREAM_MAX_ROUNDS = 8
# The gate stops after a round that raised the stream SQNR by less than this: the rest is not one layer's
# (kwm-causal-64-4 with int8 weights on its float layers: 34.7 -> 34.8 -> 34.9 ... dB over 5 more rounds).
INT8_STREAM_MIN_GAIN_DB = 0.5
# Weight-only int8 storage of the float layers (calibration/weights.py) only in graphs with more float
# weights than this (the size target's domain, models over 50k parameters). Under it the bytes saved
# are a few KiB and it was measured to cost accuracy: bcresnet1-causal's int8 depthwise weights alone
# cap its free-running logits SQNR at 35 dB, and with them its tensorrt graph lost 1.8 top-1 and 8.1
# stream points.
INT8_WEIGHT_ONLY_MIN_PARAMS = 50_000
# Export-time parity gate of an INT8 graph: max |INT8 - torch fp32| logit on the parity clips. It
# catches a broken graph (the demo checkpoints' logits span about +-5..20; INT8 errors measured
# 0.05-0.6); what INT8 costs in accuracy is measured by the report, not by this gate.
INT8_PARITY_ATOL = 2.0
# Logits of a cpu-recipe candidate must reach this SQNR against fp32 when both stream the calibration
# clips free-running (each its own state). Window-mean readouts sum every frame's error, so this is far
# below the per-step figure (causal KWM 64-4, dynamic U8S8: 55 dB per step, 22 dB streamed, top-1 unchanged).
INT8_CPU_MIN_LOGITS_SQNR_DB = 20.0
# The cpu recipe ships an INT8 variant only when it is at least this much faster than fp32 at every
# measured batch size (a margin over timing noise: never slower than fp32).
INT8_CPU_MIN_SPEEDUP = 1.05

# Export with the MFCC frontend inside the graph (fp32). A float32 STFT written as a matmul leaves
# mel bands 60+ dB below a frame's peak with relative rounding errors near 0.1; torch and ONNX
# Runtime sum in different orders, so such bands differ by tenths of a dB and a trained model's
# logits by up to a few 1e-4 (bcresnet1-causal demo checkpoint: 6.5e-4, without the frontend 1.9e-6).
ONNX_FRONTEND_PARITY_ATOL = 2e-3

# Factorised DFT frontend (two MatMul stages) vs the direct DFT's MFCC, relative to max |value|
# (measured 2e-7 offline, 2e-6 between packet sizes: float32 summation order only).
MFCC_FACTORISED_REL = 1e-4

# Training on several ranks (DDP): weights after a few steps on W ranks vs one process with the same
# global batch differ only by the order of float sums (gradients reduced across ranks, accumulated
# over micro-batches); AdamW then moves each weight by up to lr per step.
DDP_WEIGHT_ATOL = 1e-5
