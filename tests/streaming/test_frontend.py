"""Streaming MFCC: packet by packet from the zero cache equals the offline MFCC of [cache zeros + audio]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kwsdeploy.audio import load_audio
from kwsdeploy.config import FeatureConfig
from kwsdeploy.features import MFCC, dft_factors
from kwsdeploy.streaming.frontend import FRONTEND_STATE, StreamingMFCC
from kwsdeploy.tolerances import ONNX_PARITY_ATOL

FSDD = sorted((Path(__file__).parent.parent / "fixtures" / "fsdd").glob("*.wav"))
STREAM_REL = 1e-5  # of max |value| (~500): float32 summation order only; the factorised DFT's GEMMs sum
# in an order that depends on the frames per call (measured 2e-6; the direct DFT 6e-8)


def run_stream(front: StreamingMFCC, audio: torch.Tensor, packet_frames: list[int]) -> torch.Tensor:
    """Feed `audio` [B, T] in packets of the given frame counts (cycled) and concatenate the frames."""
    (cache,) = front.init_state(audio.shape[0])
    out, pos, i = [], 0, 0
    hop = front.stream_spec.hop_samples
    while pos + hop <= audio.shape[1]:
        k = min(packet_frames[i % len(packet_frames)], (audio.shape[1] - pos) // hop)
        frames, cache = front(audio[:, pos : pos + hop * k], cache)
        assert frames.shape == (audio.shape[0], front.config.n_mfcc, k)
        out.append(frames)
        pos, i = pos + hop * k, i + 1
    return torch.cat(out, dim=-1)


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    clips = [load_audio(p)[0] for p in FSDD[:3]]
    n = max(len(c) for c in clips)
    n += -n % 160  # a whole number of hops
    return torch.from_numpy(np.stack([np.pad(c, (0, n - len(c))) for c in clips]))


@pytest.mark.parametrize("packets", [[1], [10], [1, 3, 7, 2]])
def test_stream_equals_offline(packets, speech):
    cfg = FeatureConfig.deployable()
    front = StreamingMFCC(cfg)
    streamed = run_stream(front, speech, packets)
    padded = torch.cat([torch.zeros(speech.shape[0], front.cache_samples), speech], dim=1)
    offline = MFCC(cfg)(padded)
    assert streamed.shape == offline.shape
    err = float((streamed - offline).abs().max())
    print(f"packets {packets}: max abs {err:.2e} (max |value| {float(offline.abs().max()):.1f})")
    scale = float(offline.abs().max())
    assert err <= STREAM_REL * scale
    # after the delay, stream frame j + 2 is offline frame j of the audio itself
    d = front.stream_spec.delay_frames
    assert d == 2
    assert float((streamed[..., d:] - MFCC(cfg)(speech)).abs().max()) <= STREAM_REL * scale


def test_cache_is_last_samples():
    front = StreamingMFCC(FeatureConfig())
    a = torch.arange(800, dtype=torch.float32)[None] / 1000.0
    (cache,) = front.init_state(1)
    _, new_cache = front(a, cache)
    assert torch.equal(new_cache, a[:, -320:])
    _, newer = front(a[:, :160], new_cache)
    assert torch.equal(newer, torch.cat([a[:, -160:], a[:, :160]], dim=1))


def test_spec_describes_the_step():
    front = StreamingMFCC(FeatureConfig.deployable())
    spec = front.stream_spec
    assert spec.state_names == [FRONTEND_STATE] == ["state.frontend.samples"]
    assert spec.new_state_names == ["new_state.frontend.samples"]
    assert spec.states[0].shape == (320,) and spec.hop_samples == 160 and spec.packet_samples(10) == 1600
    assert spec.to_dict()["feature_config"]["log_floor"] == "fixed"
    assert front.init_state(3)[0].shape == (3, 320)


def test_clip_relative_floor_cannot_stream():
    with pytest.raises(ValueError, match="causal"):
        StreamingMFCC(FeatureConfig.reference())


@pytest.mark.parametrize("hop", [480, 960])
def test_frames_that_do_not_overlap_are_refused(hop):
    # hop = n_fft left a zero-sample cache that `buf[:, -0:]` replaced by the whole buffer (the second call
    # then failed its cache-shape check); hop > n_fft a negative cache size
    with pytest.raises(ValueError, match="hop_length < n_fft"):
        StreamingMFCC(FeatureConfig(n_fft=480, win_length=480, hop_length=hop))


def test_bad_packets_are_refused():
    front = StreamingMFCC()
    (cache,) = front.init_state(1)
    with pytest.raises(ValueError, match="multiples of the hop"):
        front(torch.zeros(1, 100), cache)
    with pytest.raises(ValueError, match="init_state"):
        front(torch.zeros(2, 160), cache)


def test_onnx_export_dynamic_packet(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    front = StreamingMFCC().eval()
    path = tmp_path / "frontend.onnx"
    batch, k = torch.export.Dim("batch", min=1, max=256), torch.export.Dim("k", min=1, max=100)
    spec = front.stream_spec
    torch.onnx.export(
        front, (torch.zeros(2, 1600), torch.zeros(2, 320)), str(path), dynamo=True, opset_version=18,
        input_names=[spec.input_name, *spec.state_names],
        output_names=[spec.output_name, *spec.new_state_names],
        dynamic_shapes={"audio": {0: batch, 1: 160 * k}, "cache": {0: batch}}, verbose=False,
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    for b, kk in ((1, 1), (3, 10), (2, 4)):
        audio, cache = 0.1 * torch.randn(b, 160 * kk, generator=g), 0.1 * torch.randn(b, 320, generator=g)
        got = sess.run(None, {"audio": audio.numpy(), FRONTEND_STATE: cache.numpy()})
        want = front(audio, cache)
        err = float(np.abs(got[0] - want[0].numpy()).max() / want[0].abs().max())
        print(f"frontend onnx b={b} k={kk}: max rel err {err:.2e}")
        assert err <= ONNX_PARITY_ATOL
        assert np.array_equal(got[1], want[1].numpy())


@pytest.mark.parametrize("packet", [1, 8])
def test_step_graph_keeps_the_factorised_dft_on_fast_kernels(packet):
    """The step frontend's graph (as bundles export it), laid out as `MFCC._mel_gathered` says: one
    Gather of whole rows of streams with a small int32 index, the window one value per row of streams
    (a last axis of 1), no Re/Im pair reduced over a last axis of 2 (ReduceSumSquare), no sum over k2
    (the mel is one GEMM), four GEMMs in all (stage 1, stage 2, mel, DCT), at most three Transposes
    (the audio's, the block one before stage 2, the output's), and constants under 100 KB."""
    import onnx.numpy_helper

    from kwsdeploy.exporters.onnx import export_frontend_step

    cfg = FeatureConfig.deployable()
    n2, n1 = dft_factors(cfg.n_fft, cfg.hop_length, cfg.n_mels)

    class Spec:
        feature_config, packet_frames = cfg, packet

    proto = export_frontend_step(StreamingMFCC(cfg).eval(), Spec(), exporter="legacy")
    ops = [n.op_type for n in proto.graph.node]
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    assert not {"ReduceSumSquare", "ReduceSum", "Conv"} & set(ops)
    assert ops.count("Transpose") <= 3 and ops.count("MatMul") == 4 and ops.count("Gather") == 1
    gather = next(n for n in proto.graph.node if n.op_type == "Gather")
    assert consts[gather.input[1]].dtype == np.int32 and consts[gather.input[1]].shape == (packet, n2)
    windows = [consts[i] for n in proto.graph.node if n.op_type == "Mul" for i in n.input if i in consts
               and consts[i].size == cfg.n_fft]
    assert len(windows) == 1 and windows[0].shape == (1, n2, n1, 1)
    assert sum(c.nbytes for c in consts.values()) < 100_000
