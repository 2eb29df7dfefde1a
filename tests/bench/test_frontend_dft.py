"""The factorised DFT frontend: the same MFCC as the direct 480 x 482 DFT, in fewer MACs and bytes,
in ops TensorRT 10.3 parses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kwsdeploy.config import FeatureConfig
from kwsdeploy.features import MFCC, dft_basis, dft_factors, frontend_macs_per_frame
from kwsdeploy.tolerances import MFCC_FACTORISED_REL, ONNX_PARITY_ATOL


def _direct(cfg: FeatureConfig) -> MFCC:
    m = MFCC(cfg).eval()
    m.factors = None
    m.dft_kernel = torch.from_numpy(dft_basis(cfg.n_fft, cfg.win_length)[:, None, :]).float()
    return m


@pytest.mark.parametrize("cfg", [FeatureConfig.deployable(), FeatureConfig.reference()], ids=["deployable", "reference"])
def test_factorised_equals_direct_dft(cfg):
    rng = np.random.default_rng(0)
    wave = torch.from_numpy((0.1 * rng.standard_normal((3, 16000))).astype(np.float32))
    wave[1] *= 1e-3  # a quiet clip: dB of small powers is where float32 rounding shows
    fact, direct = MFCC(cfg).eval()(wave), _direct(cfg)(wave)
    assert MFCC(cfg).factors == (60, 8)
    err = float((fact - direct).abs().max()) / float(direct.abs().max())
    assert err <= MFCC_FACTORISED_REL
    # the power spectrum itself, against float64 numpy
    x = wave[0].double().numpy()
    frames = np.stack([x[i * 160:i * 160 + 480] for i in range(98)])
    spec = np.abs(np.fft.rfft(frames * np.hanning(481)[:480], axis=-1)) ** 2
    mel = spec @ MFCC(cfg).mel_fb.double().numpy().T
    got = MFCC(cfg)._mel_factorised(wave[:1]).double().numpy()[0]
    assert np.max(np.abs(got - mel)) <= 1e-5 * mel.max()


def test_costs_meet_the_targets():
    cfg = FeatureConfig.deployable()
    m = MFCC(cfg)
    direct_macs = 2 * 241 * 480 + 2 * 241 + 241 * 40 + 40 * 40  # the 480 x 482 conv, power, mel, DCT
    assert frontend_macs_per_frame(cfg) <= direct_macs / 4
    consts = sum(b.numel() * b.element_size() for n, b in m.named_buffers() if n != "mel_fb")
    assert consts <= 100_000
    assert dft_factors(480, 160) == (60, 8) and dft_factors(400, 160) is None  # not a multiple of the hop


def test_exported_frontend_runs_in_ort_and_passes_the_trt_check():
    from kwsdeploy.exporters.onnx import export_frontend_step
    from kwsdeploy.runtime.ort import make_session
    from kwsdeploy.streaming.frontend import StreamingMFCC
    from kwsdeploy.trt.compat import check_model

    cfg = FeatureConfig.deployable()
    front = StreamingMFCC(cfg).eval()

    class _Spec:
        feature_config, packet_frames = cfg, 4

    proto = export_frontend_step(front, _Spec(), exporter="legacy")
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"DFT", "STFT", "Conv"}
    consts = sum(int(np.prod(i.dims)) * 4 for i in proto.graph.initializer)
    assert consts <= 100_000
    (result,) = check_model(proto, ("10.3",))
    assert result.ok, result.findings
    audio = (0.1 * np.random.default_rng(1).standard_normal((2, 640))).astype(np.float32)
    cache = np.zeros((2, 320), np.float32)
    sess = make_session(proto.SerializeToString())
    got = sess.run(None, {"audio": audio, "state.frontend.samples": cache})[0]
    with torch.no_grad():
        ref = front(torch.from_numpy(audio), torch.from_numpy(cache))[0].numpy()
    assert np.max(np.abs(got - ref)) <= MFCC_FACTORISED_REL * np.abs(ref).max()
    assert np.max(np.abs(got - ref)) <= 1e3 * ONNX_PARITY_ATOL


def test_bench_frontend_script_writes_its_table(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "frontend.md"
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_frontend.py"), "--packets", "2",
                           "--batches", "1", "--rounds", "1", "--calls", "3", "--out", str(out)],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| factorised") or line.startswith("| direct")]
    assert [r.split("|")[1].strip() for r in rows] == ["factorised", "direct"]
    nodes = [int(r.split("|")[4]) for r in rows]
    assert nodes[0] <= 30 and all(float(r.split("|")[6]) > 0 for r in rows)
    assert float(rows[0].split("|")[5]) < 100.0 < float(rows[1].split("|")[5])  # constants KB
