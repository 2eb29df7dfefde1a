"""What each TensorRT version's ONNX parser accepts: operators, their documented restrictions, opsets.

Sources (read, not copied):
- the operator support matrix of the TensorRT ONNX parser, `docs/operators.md` of onnx/onnx-tensorrt
  at tag release/10.1-GA ("TensorRT 10.0 supports operators in the inclusive range of opset 9 to
  opset 20"), taken as the 10.0 / 10.1 baseline below;
- the "Parser changes" sections of CHANGELOG.md in NVIDIA/TensorRT (10.2 to 11.1) for what was
  added or lifted since: Slice tensor axes 10.3, Pad tensor axes and the window ops 10.4, real STFT
  10.5, ONNX 1.17 (opset 22) 10.6, dynamic Squeeze/Unsqueeze axes 10.7, Einsum ellipsis / diagonal /
  broadcasting 10.12, Attention 10.14, RMSNormalization / RotaryEmbedding / TensorScatter 10.15,
  Swish 11.0.
Restrictions that no changelog lifts are kept for every version (CumSum's constant axis, Reduce*
constant axes, Q/DQ zero point 0, 2D/3D pooling). An operator absent from the matrix is treated
as unsupported. Opset ceilings after 10.5 follow the ONNX version the parser was built against
(1.17 -> opset 22 from 10.6; opset-23 operators parsed from 10.14).
"""

from __future__ import annotations

from kwsdeploy.trt.versions import TrtVersion

BASELINE = TrtVersion(10, 0)
# The newest version these tables describe; a newer one is assumed to accept what this one does.
LATEST_KNOWN = TrtVersion(11, 1)
MIN_OPSET = 9

# "Y" rows of the 10.0/10.1 matrix.
SUPPORTED_BASELINE = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
    "AveragePool", "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv", "DepthToSpace",
    "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike",
    "Flatten", "Floor", "GRU", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool",
    "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization",
    "HardSigmoid", "HardSwish", "Hardmax", "Identity", "If", "ImageScaler", "InstanceNormalization", "IsInf",
    "IsNaN", "LRN", "LSTM", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax",
    "Loop", "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization",
    "Min", "Mish", "Mod", "Mul", "Neg", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "PRelu", "Pad",
    "ParametricSoftplus", "Pow", "QuantizeLinear", "RNN", "RandomNormal", "RandomNormalLike", "RandomUniform",
    "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
    "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape",
    "Resize", "ReverseSequence", "RoiAlign", "Round", "ScaledTanh", "Scan", "Scatter", "ScatterElements",
    "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax",
    "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh",
    "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
})

# Operators a later parser added (changelog), and the first version that parses them.
ADDED: dict[str, TrtVersion] = {
    "BlackmanWindow": TrtVersion(10, 4),
    "HammingWindow": TrtVersion(10, 4),
    "HannWindow": TrtVersion(10, 4),
    "STFT": TrtVersion(10, 5),  # real-valued signals only
    "Attention": TrtVersion(10, 14),
    "RMSNormalization": TrtVersion(10, 15),
    "RotaryEmbedding": TrtVersion(10, 15),
    "TensorScatter": TrtVersion(10, 15),
    "Swish": TrtVersion(11, 0),
}

# "N" rows of the matrix that no later changelog adds (kept to say "never" rather than "unknown").
NEVER = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor",
    "CenterCropPad", "Col2Im", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det",
    "DynamicQuantizeLinear", "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix",
    "Multinomial", "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement",
    "QLinearConv", "QLinearMatMul", "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty",
    "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss",
    "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit", "TfIdfVectorizer", "Unique",
})

# Restrictions lifted by a later parser: (op, what) -> first version without the restriction.
LIFTED: dict[tuple[str, str], TrtVersion] = {
    ("Slice", "axes"): TrtVersion(10, 3),
    ("Pad", "axes"): TrtVersion(10, 4),
    ("Squeeze", "axes"): TrtVersion(10, 7),
    ("Unsqueeze", "axes"): TrtVersion(10, 7),
    ("Einsum", "ellipsis"): TrtVersion(10, 12),
    ("Einsum", "diagonal"): TrtVersion(10, 12),
}

# (first version, highest default-domain opset it parses)
_OPSET_CEILINGS: tuple[tuple[TrtVersion, int], ...] = (
    (TrtVersion(10, 0), 20),
    (TrtVersion(10, 6), 22),
    (TrtVersion(10, 14), 23),
)

REDUCE_OPS = frozenset({
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceProd", "ReduceSum", "ReduceSumSquare",
})
POOL_OPS = frozenset({"AveragePool", "MaxPool", "LpPool"})
RESIZE_MODES = frozenset({"nearest", "linear"})
RESIZE_COORDINATE_MODES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"})
RESIZE_NEAREST_MODES = frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})

# ONNX element types a TensorRT engine's inputs/outputs can carry (DOUBLE is cast down, UINT8 I/O only).
IO_TYPES = frozenset({"FLOAT", "FLOAT16", "BFLOAT16", "INT32", "INT64", "INT8", "UINT8", "BOOL", "DOUBLE"})


def effective(version: TrtVersion) -> TrtVersion:
    """The table row a version reads: versions newer than the table read its newest row."""
    return min(version, LATEST_KNOWN)


def op_since(op: str) -> TrtVersion | None:
    """First TensorRT version whose ONNX parser accepts `op` (default domain), or None for never."""
    if op in SUPPORTED_BASELINE:
        return BASELINE
    return ADDED.get(op)


def max_opset(version: TrtVersion) -> int:
    """Highest default-domain opset the parser of `version` accepts."""
    v = effective(version)
    return max(ceiling for since, ceiling in _OPSET_CEILINGS if since <= v)


def opset_since(opset: int) -> TrtVersion | None:
    """First version whose parser accepts graphs of `opset`, or None when none we know does."""
    for since, ceiling in _OPSET_CEILINGS:
        if opset <= ceiling:
            return since
    return None
