"""ConvMixer: parameter counts at 64 and 40 features, MACs, shapes, and the reference key layout."""

from __future__ import annotations

import pytest
import torch

from kwsdeploy.models import count_params, create, get_card, load_reference_weights
from kwsdeploy.models.reference_weights import ReferenceWeightsError


def reference_layout(n_freq: int = 64, num_classes: int = 12, feat: int = 64, frames: int = 98) -> dict[str, tuple]:
    """Keys and shapes of KWSConvMixer(input_size=[frames, n_freq]).state_dict(), written from the reference."""
    keys: dict[str, tuple] = {}

    def bn(prefix: str, c: int) -> None:
        keys.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                     f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()})

    def sep1d(prefix: str, cin: int, cout: int, k: int) -> None:
        keys[f"{prefix}.conv1d.weight"] = (cin, 1, k)
        keys[f"{prefix}.pointwise.weight"] = (cout, cin, 1)

    def linear(prefix: str, i: int, o: int) -> None:
        keys[f"{prefix}.weight"] = (o, i)
        keys[f"{prefix}.bias"] = (o,)

    sep1d("conv1.0", n_freq, feat, 5)
    bn("conv1.1", feat)
    sep1d("preConvMixer.temporal_domain_encoding.0", feat, feat, 7)
    bn("preConvMixer.temporal_domain_encoding.1", feat)
    sep1d("preConvMixer.temporal_domain_encoding.3", feat, feat, 1)
    bn("preConvMixer.temporal_domain_encoding.4", feat)
    for i, (tk, fk, nf) in enumerate([(9, 5, 64), (11, 5, 32), (13, 7, 16), (15, 7, 8)], start=1):
        p = f"convMixer{i}"
        keys[f"{p}.frequency_domain_encoding.0.weight"] = (nf, 1, 3, 3)
        keys[f"{p}.frequency_domain_encoding.2.conv2d.weight"] = (nf, 1, fk, 1)
        keys[f"{p}.frequency_domain_encoding.4.weight"] = (1, nf, 1, 1)
        bn(f"{p}.frequency_domain_encoding.5", 1)
        sep1d(f"{p}.temporal_domain_encoding.0", feat, feat, tk)
        bn(f"{p}.temporal_domain_encoding.1", feat)
        for mix, dim, hidden in (("time_mix", frames, frames // 4), ("freq_mix", feat, feat // 2)):
            keys[f"{p}.mixer.0.{mix}.0.weight"] = (dim,)
            keys[f"{p}.mixer.0.{mix}.0.bias"] = (dim,)
            linear(f"{p}.mixer.0.{mix}.1.net.0", dim, hidden)
            linear(f"{p}.mixer.0.{mix}.1.net.3", hidden, dim)
    sep1d("conv2.0", feat, 2 * feat, 17)
    bn("conv2.1", 2 * feat)
    sep1d("conv3.0", 2 * feat, 2 * feat, 19)
    bn("conv3.1", 2 * feat)
    sep1d("conv4.0", 2 * feat, 2 * feat, 1)
    bn("conv4.1", 2 * feat)
    linear("mlp_head.0", 2 * feat, num_classes)
    return keys


def random_reference_state(layout: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in layout.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(shape, generator=g) * 0.2
    return state


def test_parameter_count_at_reference_input():
    card = get_card("convmixer")
    assert card.n_mfcc == 64
    assert count_params(create("convmixer", n_mfcc=64)) == 119_620 == card.expected_params


def test_builds_and_runs_at_40_features_as_documented():
    model = create("convmixer", n_mfcc=40).eval()
    assert count_params(model) == 117_964  # conv1: 40 input rows instead of 64 (-120 depthwise, -1,536 pointwise)
    assert "117,964" in get_card("convmixer").notes
    with torch.no_grad():
        assert model(torch.randn(2, 1, 40, 98)).shape == (2, 12)


def test_macs_match_facts():
    model = create("convmixer", n_mfcc=64).eval()
    total = [0]

    def hook(m, i, out):
        if isinstance(m, torch.nn.Linear):
            total[0] += out.numel() * m.in_features
        else:
            total[0] += out.numel() * (m.in_channels // m.groups) * int(torch.tensor(m.kernel_size).prod())

    kinds = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    with torch.no_grad():
        model(torch.zeros(1, 1, 64, 98))
    for h in handles:
        h.remove()
    assert abs(total[0] - 21.97e6) / 21.97e6 < 0.001
    assert get_card("convmixer").expected_macs == 21_970_000


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("num_classes", [12, 10, 35])
def test_output_shape_any_batch_and_classes(batch, num_classes):
    model = create("convmixer", num_classes=num_classes, n_mfcc=64).eval()
    with torch.no_grad():
        assert model(torch.randn(batch, 1, 64, 98)).shape == (batch, num_classes)


def test_wrong_frame_count_is_a_clear_error():
    with pytest.raises(ValueError, match="exactly that many frames"):
        create("convmixer", n_mfcc=64)(torch.randn(1, 1, 64, 100))


def test_reference_key_layout_loads_tensor_for_tensor():
    layout = reference_layout()
    state = random_reference_state(layout)
    model = load_reference_weights(create("convmixer", n_mfcc=64), state)
    ours = model.state_dict()
    assert set(ours) == set(layout)
    assert all(torch.equal(ours[k], state[k]) for k in layout)
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.randn(2, 1, 64, 98))).all()


def test_reference_layout_at_40_features_and_35_classes():
    state = random_reference_state(reference_layout(n_freq=40, num_classes=35))
    model = load_reference_weights(create("convmixer", num_classes=35, n_mfcc=40), state)
    assert torch.equal(model.mlp_head[0].weight, state["mlp_head.0.weight"])


def test_misshaped_tensor_is_one_line_error_naming_it():
    state = random_reference_state(reference_layout(n_freq=64))
    with pytest.raises(ReferenceWeightsError, match=r"'conv1\.0\.conv1d\.weight' has shape \(64, 1, 5\)") as err:
        load_reference_weights(create("convmixer", n_mfcc=40), state)
    assert "\n" not in str(err.value)


def test_missing_tensor_is_one_line_error_naming_it():
    state = random_reference_state(reference_layout())
    del state["convMixer3.mixer.0.time_mix.1.net.3.bias"]
    with pytest.raises(ReferenceWeightsError, match=r"convMixer3\.mixer\.0\.time_mix\.1\.net\.3\.bias") as err:
        load_reference_weights(create("convmixer", n_mfcc=64), state)
    assert "\n" not in str(err.value)


def functional_reference(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The reference forward, written out from TorchKWS networks/convmixer.py with plain functionals."""
    import torch.nn.functional as F

    def bn(t, p):
        return F.batch_norm(t, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"],
                            state[f"{p}.bias"], False, 0.0, 1e-5)

    def sep_bn_swish(t, p, q, pad, dil=1):
        c = t.shape[1]
        t = F.conv1d(t, state[f"{p}.conv1d.weight"], padding=pad, dilation=dil, groups=c)
        t = bn(F.conv1d(t, state[f"{p}.pointwise.weight"]), q)
        return t * torch.sigmoid(t)

    def ff(t, p, dim):
        t = F.layer_norm(t, (dim,), state[f"{p}.0.weight"], state[f"{p}.0.bias"])
        t = F.gelu(F.linear(t, state[f"{p}.1.net.0.weight"], state[f"{p}.1.net.0.bias"]))
        return F.linear(t, state[f"{p}.1.net.3.weight"], state[f"{p}.1.net.3.bias"])

    t = sep_bn_swish(x.squeeze(1), "conv1.0", "conv1.1", 2)
    pre = "preConvMixer.temporal_domain_encoding"
    t = t + sep_bn_swish(sep_bn_swish(t, f"{pre}.0", f"{pre}.1", 3), f"{pre}.3", f"{pre}.4", 0)
    for i, (tk, fk) in enumerate([(9, 5), (11, 5), (13, 7), (15, 7)], start=1):
        p = f"convMixer{i}"
        w0 = state[f"{p}.frequency_domain_encoding.0.weight"]
        e = F.silu(F.conv2d(t.unsqueeze(1), w0, padding=1))
        e = F.silu(F.conv2d(e, state[f"{p}.frequency_domain_encoding.2.conv2d.weight"], padding=(fk // 2, 0),
                            groups=w0.shape[0]))
        e = F.silu(bn(F.conv2d(e, state[f"{p}.frequency_domain_encoding.4.weight"]), f"{p}.frequency_domain_encoding.5"))
        e = e.squeeze(1)
        m = sep_bn_swish(e, f"{p}.temporal_domain_encoding.0", f"{p}.temporal_domain_encoding.1", tk // 2)
        m = m + ff(m, f"{p}.mixer.0.time_mix", m.shape[-1])
        m = m + ff(m.permute(0, 2, 1), f"{p}.mixer.0.freq_mix", m.shape[1]).permute(0, 2, 1)
        t = t + e + F.silu(m)
    t = sep_bn_swish(t, "conv2.0", "conv2.1", 8)
    t = sep_bn_swish(t, "conv3.0", "conv3.1", 18, dil=2)
    t = sep_bn_swish(t, "conv4.0", "conv4.1", 0)
    return F.linear(t.amax(dim=-1), state["mlp_head.0.weight"], state["mlp_head.0.bias"])


def test_imported_weights_give_the_reference_forward():
    state = random_reference_state(reference_layout(), seed=3)
    model = load_reference_weights(create("convmixer", n_mfcc=64), state).eval()
    x = torch.randn(3, 1, 64, 98)
    with torch.no_grad():
        ours, ref = model(x), functional_reference(state, x)
    assert (ours - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_channel_norm_removes_an_offset_per_coefficient_but_c0():
    torch.manual_seed(0)
    normed = create("convmixer", n_mfcc=64, channel_norm=True).eval()
    plain = create("convmixer", n_mfcc=64).eval()
    plain.load_state_dict(normed.state_dict())
    x = torch.randn(2, 1, 64, 98)
    tilt = torch.zeros(1, 1, 64, 1)
    tilt[:, :, 1:, 0] = 20.0 * torch.randn(63)
    level = torch.zeros(1, 1, 64, 1)
    level[:, :, 0] = 10.0
    with torch.no_grad():
        assert (normed(x + tilt) - normed(x)).abs().max() < 1e-5  # a channel's offsets do not reach the network
        assert (plain(x + tilt) - plain(x)).abs().max() > 1e-3  # they do without the option
        assert (normed(x + level) - normed(x)).abs().max() > 1e-4  # c0, the level, is kept


def test_channel_norm_adds_no_parameters_so_plain_weights_load():
    normed = create("convmixer", n_mfcc=40, channel_norm=True)
    plain = create("convmixer", n_mfcc=40)
    assert set(normed.state_dict()) == set(plain.state_dict())
    assert count_params(normed) == count_params(plain) == 117_964
    normed.load_state_dict(plain.state_dict(), strict=True)
