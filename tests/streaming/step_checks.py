"""Helpers shared by the step-form tests of the 1-D conv families (TC-ResNet, MatchboxNet)."""

from __future__ import annotations

import io

import numpy as np
import torch


def randomize_batchnorm(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random affine and running statistics in every BatchNorm, so that folding is really tested."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(0.5 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))
                m.weight.copy_(1 + 0.3 * torch.randn(c, generator=gen))
                m.bias.copy_(0.3 * torch.randn(c, generator=gen))
    return model.eval()


def onnx_step_error(step: torch.nn.Module, batch: int):
    """Export one step (TorchScript exporter, opset 17) from a random state; return the ORT session
    and the max abs difference of all its outputs (logits and new state) from torch's."""
    import onnxruntime as ort

    spec = step.stream_spec
    x = torch.randn(batch, spec.n_mfcc, spec.packet_frames)
    state = [torch.randn_like(s) for s in step.init_state(batch)]
    buf = io.BytesIO()
    torch.onnx.export(
        step, (x, *state), buf, input_names=["features", *spec.state_names],
        output_names=["logits", *spec.new_state_names], dynamo=False, opset_version=17,
    )
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"features": x.numpy(), **{n: s.numpy() for n, s in zip(spec.state_names, state)}})
    with torch.no_grad():
        ref = step(x, *state)
    return sess, max(float(np.abs(o - r.numpy()).max()) for o, r in zip(outs, ref))
