"""--stream-context: a causal step model (KWM, causal convnets) learns from clips that follow other audio, as when streaming."""

from __future__ import annotations

import pytest
import torch

from kwsdeploy.train.checkpoint import load_checkpoint
from kwsdeploy.train.presets import TrainConfig
from kwsdeploy.train.run import train


def _cfg(**kw) -> TrainConfig:
    base = dict(model="kwm", epochs=1, batch_size=8, lr=3e-3, warmup_epochs=0, augment=False, spec_augment=False,
                device="cpu", threads=1)
    return TrainConfig(**{**base, **kw})


def test_context_changes_what_is_learned_and_stays_finite(tiny_prepared, tmp_path):
    train(_cfg(), tiny_prepared, tmp_path / "plain", progress=False, test=False)
    train(_cfg(stream_context_s=1.0), tiny_prepared, tmp_path / "ctx", progress=False, test=False)
    a = load_checkpoint(tmp_path / "plain" / "last").model.state_dict()
    b = load_checkpoint(tmp_path / "ctx" / "last").model.state_dict()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff > 1e-6  # the loss really saw the context
    assert all(torch.isfinite(v).all() for v in b.values())


def test_context_needs_a_causal_step_model(tiny_prepared, tmp_path):
    with pytest.raises(ValueError, match="tcresnet8-causal"):
        train(_cfg(model="tcresnet8", stream_context_s=1.0), tiny_prepared, tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="stream_context_s"):
        _cfg(stream_context_s=-1.0)


@pytest.mark.parametrize("name", ["tcresnet8-causal", "bcresnet1-causal", "matchboxnet-causal", "kwm"])
def test_forward_window_is_what_the_step_form_says_after_the_context(name):
    """The loss of --stream-context reads exactly the logits the never-reset stream gives at the clip's end."""
    from kwsdeploy.models import create
    from kwsdeploy.streaming.convert import to_streaming

    from ..streaming.step_checks import randomize_batchnorm

    torch.manual_seed(0)
    model = randomize_batchnorm(create(name, num_classes=5, n_mfcc=40), seed=3).eval()
    step = to_streaming(model)
    packet = step.stream_spec.packet_frames
    frames = -(-(96 + 98) // packet) * packet  # context + clip, whole packets
    feats = 3.0 * torch.randn(2, 40, frames, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        offline = model.forward_window(feats[:, None], 98)
        state = step.init_state(2)
        for i in range(0, frames, packet):
            logits, *state = step(feats[..., i: i + packet], *state)
        clip_only = model.forward_window(feats[:, None, :, -98:], 98) if packet == 1 else None
    scale = offline.abs().max().item()
    assert scale > 0.01 and (logits - offline).abs().max().item() < 1e-3 * scale
    if clip_only is not None:  # the context changes the answer (the stream remembers it)
        assert (clip_only - offline).abs().max().item() > 1e-5
        np_full = model(feats[:, None, :, -98:])
        assert (np_full - clip_only).abs().max().item() < 1e-4  # no context: the plain offline logits


def test_convnet_trains_with_context(tiny_prepared, tmp_path):
    cfg = dict(model="tcresnet8-causal", lr=1e-2)
    train(_cfg(**cfg), tiny_prepared, tmp_path / "plain", progress=False, test=False)
    train(_cfg(stream_context_s=1.0, **cfg), tiny_prepared, tmp_path / "ctx", progress=False, test=False)
    a = load_checkpoint(tmp_path / "plain" / "last").model.state_dict()
    b = load_checkpoint(tmp_path / "ctx" / "last").model.state_dict()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) > 1e-6


def test_context_is_whole_packets_of_the_step_form():
    from kwsdeploy.config import FeatureConfig
    from kwsdeploy.train.stream_context import context_samples

    fc = FeatureConfig.deployable(40)  # hop 160 samples at 16 kHz

    class Strided:
        time_stride = 8

    assert context_samples(1.0, fc, object()) == 16000  # stride 1: whole hops (100 of 160)
    assert context_samples(0.5, fc, Strided()) == 7680  # 8000 / 1280 = 6.25 packets: 6
    assert context_samples(0.01, fc, object()) == 160 and context_samples(0.0, fc, Strided()) == 0


def test_each_clip_follows_the_tail_of_the_previous_one():
    from kwsdeploy.train.stream_context import prepend_context

    wave = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    assert prepend_context(wave, 2).tolist() == [[8, 9, 1, 2, 3], [2, 3, 4, 5, 6], [5, 6, 7, 8, 9]]
    assert prepend_context(wave, 0) is wave


def test_which_models_stream_in_context():
    from kwsdeploy.models import create
    from kwsdeploy.train.stream_context import check_streams_in_context, streams_in_context

    assert [streams_in_context(create(n, num_classes=3, n_mfcc=40)) for n in ("tcresnet8-causal", "kwm", "tcresnet8")] == [
        True, True, False]

    class LastReadout:
        causal, readout = True, "last"

        def forward_window(self, feats, frames):
            return feats

    assert not streams_in_context(LastReadout())
    with pytest.raises(ValueError, match="mine is not one"):
        check_streams_in_context(LastReadout(), "mine")
