"""Causal Keyword Mamba step form: per-frame recurrence and chunked scan vs the parallel forward,
the step contract, ONNX exportability, and a bounded state over 10 minutes of real speech."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from kwsdeploy import tolerances
from kwsdeploy.models import create
from kwsdeploy.models.kwm import KeywordMamba
from kwsdeploy.streaming.convert import to_streaming
from kwsdeploy.streaming.kwm import CausalKwmStream, chunk_mix
from kwsdeploy.streaming.windowed import WindowedStream


def _randomised(model: torch.nn.Module, seed: int = 3) -> torch.nn.Module:
    """Perturb every parameter (norm weights, D, dt biases ...) so that no term is trivially 1 or 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def _step_all(stream: CausalKwmStream, features: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """Feed [B, n_mfcc, T] packet by packet; logits after each packet [B, T/packet, classes]."""
    p = stream.stream_spec.packet_frames
    state = stream.init_state(features.shape[0])
    out = []
    with torch.no_grad():
        for i in range(features.shape[-1] // p):
            logits, *state = stream(features[..., i * p : (i + 1) * p], *state)
            out.append(logits)
    return torch.stack(out, 1), tuple(state)


@pytest.mark.parametrize("batch", [1, 3])
def test_step_logits_equal_the_parallel_forward_at_every_step(batch):
    torch.manual_seed(0)
    model = _randomised(create("kwm", readout="last"))  # per-frame logits, no window mean
    x = torch.randn(batch, 40, 98, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        want = model.forward_sequence(x[:, None])  # [B, 98, classes]
    got, _ = _step_all(to_streaming(model), x)
    err = (got - want).abs().max().item()
    assert err <= tolerances.STEP_PARITY_ATOL, err
    assert want.abs().max().item() > 0.1  # the logits are not trivially small


def test_step_form_with_ffn_blocks_equals_the_parallel_forward():
    """KWMT's per-token FFN half streams as it is (post_mix)."""
    torch.manual_seed(0)
    model = _randomised(KeywordMamba(num_classes=5, embed_dim=32, depth=2, ffn=True, causal=True))
    x = torch.randn(2, 40, 30)
    with torch.no_grad():
        want = model.forward_sequence(x[:, None])
    got, _ = _step_all(CausalKwmStream(model), x)
    assert (got - want).abs().max().item() <= tolerances.STEP_PARITY_ATOL


@pytest.mark.parametrize("chunk", [7, 49])
def test_chunked_step_equals_the_per_frame_step(chunk):
    torch.manual_seed(0)
    model = _randomised(create("kwm", readout="last"))
    x = torch.randn(2, 40, 98)
    per_frame, state_1 = _step_all(to_streaming(model), x)
    chunked, state_n = _step_all(to_streaming(model, packet_frames=chunk), x)
    assert (chunked - per_frame[:, chunk - 1 :: chunk]).abs().max().item() <= tolerances.STEP_PARITY_ATOL
    for a, b in zip(state_1, state_n):
        assert (a - b).abs().max().item() <= tolerances.STEP_PARITY_ATOL
    # Inside a chunk, every frame's logits are available too.
    stream = to_streaming(model, packet_frames=chunk)
    with torch.no_grad():
        all_logits, _ = stream.chunk(x[..., :chunk], stream.init_state(2))
    assert (all_logits - per_frame[:, :chunk]).abs().max().item() <= tolerances.STEP_PARITY_ATOL


@pytest.mark.parametrize("packet", [1, 7])
def test_mean_readout_streams_the_last_second_mean_at_every_step(packet):
    """The causal cards' readout: at step t the output is the mean of the per-frame logits of the
    last 98 frames (zeros before the stream's start), so after one second it is the offline output."""
    torch.manual_seed(0)
    model = _randomised(create("kwm"))
    assert model.readout == "mean"
    x = torch.randn(2, 40, 196, generator=torch.Generator().manual_seed(5))
    stream = to_streaming(model, packet_frames=packet)
    assert stream.stream_spec.states[-1].name == "state.logits.pool"
    assert stream.stream_spec.states[-1].shape == (12, 97)
    got, _ = _step_all(stream, x)  # [B, 196 / packet, classes]
    with torch.no_grad():
        frame_logits = model.forward_sequence(x[:, None])  # [B, 196, classes]
        padded = torch.cat([torch.zeros(2, 97, 12), frame_logits], dim=1)
        want = torch.stack([padded[:, t : t + 98].mean(1) for t in range(packet - 1, 196, packet)], 1)
        offline = model(x[:, None, :, :98])
    assert (got - want).abs().max().item() <= tolerances.STEP_PARITY_ATOL
    # after exactly one second from the zero state: the offline model on that second
    assert (got[:, 98 // packet - 1] - offline).abs().max().item() <= tolerances.STEP_PARITY_ATOL


@pytest.mark.parametrize("length", [1, 2, 13])
def test_chunk_mix_equals_the_mixers_scan_from_a_carried_state(length):
    """The step form's unrolled chunk scan (time kept on axis 1) vs MambaMixer.forward_with_state."""
    torch.manual_seed(0)
    mixer = _randomised(create("kwm")).layers[1].mixer
    g = torch.Generator().manual_seed(length)
    hidden = torch.randn(2, length, 64, generator=g)
    conv = 0.5 * torch.randn(2, 128, 3, generator=g)
    ssm = 0.5 * torch.randn(2, 128, 16, generator=g)
    with torch.no_grad():
        want = mixer.forward_with_state(hidden, conv, ssm)
        # the step form keeps its states transposed (d_inner last): [B, d_conv-1, d_inner], [B, d_state, d_inner]
        out, got_conv, got_ssm = chunk_mix(mixer, hidden, conv.transpose(1, 2), ssm.transpose(1, 2))
    assert got_conv.shape == (2, 3, 128) and got_ssm.shape == (2, 16, 128)
    for a, b in zip((out, got_conv.transpose(1, 2), got_ssm.transpose(1, 2)), want):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= tolerances.SCAN_PARITY_ATOL
    assert want[0].abs().max().item() > 0.1 and want[2].abs().max().item() > 0.1


def test_stream_spec_names_and_shapes():
    stream = to_streaming(create("kwm-causal-64-4"))
    spec = stream.stream_spec
    assert (spec.mode, spec.packet_frames, spec.delay_frames, spec.window_frames) == ("exact", 1, 0, 98)
    assert (spec.n_mfcc, spec.num_classes) == (40, 12)
    assert spec.state_names == [f"state.layer{i}.{k}" for i in range(4) for k in ("conv", "ssm")] + [
        "state.logits.pool"
    ]
    assert [s.shape for s in spec.states] == [(3, 128), (16, 128)] * 4 + [(12, 97)]  # d_inner last
    assert spec.new_state_names[1] == "new_state.layer0.ssm"
    assert spec.feature_config.causal
    state = stream.init_state(3)
    assert all(s.shape[0] == 3 and torch.count_nonzero(s) == 0 for s in state)
    assert to_streaming(create("kwm"), packet_frames=10).stream_spec.packet_frames == 10


def test_chunk_frames_is_an_alias_of_packet_frames():
    model = create("kwm")
    old = to_streaming(model, chunk_frames=10)
    assert old.stream_spec.packet_frames == old.packet_frames == old.chunk_frames == 10
    assert to_streaming(model, chunk_frames=7, packet_frames=7).stream_spec.packet_frames == 7
    with pytest.raises(ValueError, match=r"^packet_frames=10 and chunk_frames=7 disagree"):
        to_streaming(model, packet_frames=10, chunk_frames=7)
    with pytest.raises(ValueError, match=r"^chunk_frames must be a positive integer, got 0\.$"):
        to_streaming(model, chunk_frames=0)


def test_bidirectional_models_stream_windowed_only():
    model = create("kwm-64-12")
    assert isinstance(to_streaming(model), WindowedStream)
    with pytest.raises(ValueError, match="windowed"):
        to_streaming(model, mode="exact")
    with pytest.raises(ValueError, match="bidirectional"):
        CausalKwmStream(model)
    with pytest.raises(ValueError, match="packet_frames"):
        to_streaming(create("kwm"), packet_frames=0)


def test_per_frame_step_exports_to_onnx_and_runs_in_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    stream = to_streaming(_randomised(create("kwm")))
    spec = stream.stream_spec
    g = torch.Generator().manual_seed(0)
    state = tuple(0.3 * torch.randn(1, *s.shape, generator=g) for s in spec.states)
    frame = torch.randn(1, 40, 1, generator=g)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            stream, (frame, *state), buf, input_names=["features", *spec.state_names],
            output_names=["logits", *spec.new_state_names], opset_version=17, dynamo=False,
        )
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"features": frame.numpy(), **{n: s.numpy() for n, s in zip(spec.state_names, state)}})
    with torch.no_grad():
        want = stream(frame, *state)
    assert len(got) == 1 + len(spec.states)
    err = max(np.abs(a - b.numpy()).max() for a, b in zip(got, want))
    assert err <= tolerances.ONNX_PARITY_ATOL, err
    import onnx

    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    assert not ops & {"Loop", "Scan", "If"}  # one frame is straight-line code


def _ten_minutes_of_speech(reference_dir, frames: int = 60_000) -> torch.Tensor:
    """Real MFCC (the 8 reference clips: speech, then the silence floor) in a random order."""
    clips = torch.from_numpy(np.load(reference_dir / "features.npy"))  # [8, 40, 98]
    order = torch.randint(0, clips.shape[0], (frames // clips.shape[-1] + 1,), generator=torch.Generator().manual_seed(0))
    return torch.cat([clips[i] for i in order], dim=-1)[None, :, :frames]


@pytest.mark.slow
def test_state_stays_finite_and_bounded_over_ten_minutes(reference_dir):
    torch.manual_seed(0)
    model = create("kwm").eval()
    chunk = 1000
    stream = to_streaming(model, packet_frames=chunk)
    features = _ten_minutes_of_speech(reference_dir)
    state = stream.init_state(1)
    peaks = []
    with torch.no_grad():
        for i in range(features.shape[-1] // chunk):
            logits, *state = stream(features[..., i * chunk : (i + 1) * chunk], *state)
            assert torch.isfinite(logits).all() and all(torch.isfinite(s).all() for s in state)
            peaks.append(max(s.abs().max().item() for s in state[1::2]))
    assert len(peaks) == 60
    early, late = max(peaks[:10]), max(peaks[-10:])
    # A fading memory: the state after ten minutes is no larger than in the first ten seconds' range.
    assert late <= 1.5 * early, (early, late)
    assert max(peaks) < 10.0, max(peaks)
    # And the stream is still exact after all that: a reset reproduces the offline logits of a clip.
    clip = features[..., :98]
    with torch.no_grad():
        again = stream.chunk(clip, stream.init_state(1)[:-1])[0].mean(1)  # mean readout over the second
        assert (again - model(clip[:, None])).abs().max().item() <= tolerances.STEP_PARITY_ATOL


def test_step_graph_runs_fused_norms_and_no_scalar_softplus(tmp_path):
    """The exported kwm step graph: no Softplus (ONNX Runtime's is scalar), every RMSNorm (4 layers +
    the final one) fused by ONNX Runtime into one SimplifiedLayerNormalization node, state d_inner-last."""
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from kwsdeploy.exporters.onnx import export_step

    torch.manual_seed(0)
    proto = export_step(to_streaming(create("kwm")), exporter="legacy")
    assert not [n for n in proto.graph.node if n.op_type == "Softplus"]
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim[1:]] for i in proto.graph.input}
    assert shapes["state.layer0.ssm"] == [16, 128] and shapes["state.layer0.conv"] == [3, 128]
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
    assert ops.count("SimplifiedLayerNormalization") == 5
    assert len(ops) < len(proto.graph.node) - 30  # ORT runs fewer nodes than the file holds
