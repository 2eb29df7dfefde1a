"""Peak memory of `kwsdeploy stream` on long recordings: the file read whole vs in blocks.

    python benchmarks/stream_memory.py [--minutes 1,10,30] [--out benchmarks/results/stream_memory.md]

Each measurement runs in a fresh process (peak RSS from getrusage): a recording of N minutes
(noise with the demo corpus's test clips spliced in) streamed through the shipped tcresnet8-causal
demo checkpoint exported with the frontend inside (ONNX Runtime, one thread), once as before
(`load_audio` + `BundleSource.logits` over the whole array) and once block by block (`read_blocks`
+ `detect_blocks`, 10 s blocks). Both must give the same detections.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys
from pathlib import Path
from kwsdeploy.cli.stream import BundleSource, detect, detect_blocks, THRESHOLD, SMOOTHING_S, REFRACTORY_S
way, bundle, wav = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
src = BundleSource(bundle, "onnxruntime")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if way == "whole":
    from kwsdeploy.audio import load_audio
    audio, _ = load_audio(wav)
    events = detect(src, audio, THRESHOLD, SMOOTHING_S, REFRACTORY_S)
else:
    from kwsdeploy.audio import read_blocks
    events = list(detect_blocks(src, read_blocks(wav), THRESHOLD, SMOOTHING_S, REFRACTORY_S))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mib": peak / 1024, "before_mib": base / 1024, "events": [(e.label, round(e.time, 3)) for e in events]}))
"""


def make_recording(path: Path, minutes: float) -> None:
    import numpy as np
    import soundfile as sf

    from kwsdeploy.data.dataset import KwsDataset
    from kwsdeploy.data.demo import demo_corpus_dir

    ds = KwsDataset(demo_corpus_dir(), "test")
    rng = np.random.default_rng(0)
    n = int(minutes * 60 * 16000)
    with sf.SoundFile(str(path), "w", 16000, 1, subtype="PCM_16") as f:
        done = 0
        while done < n:
            gap = (0.01 * rng.standard_normal(int(rng.uniform(1.0, 3.0) * 16000))).astype(np.float32)
            clip = np.asarray(ds[int(rng.integers(len(ds)))][0], dtype=np.float32)
            chunk = np.concatenate([gap, clip])[: n - done]
            f.write(chunk)
            done += len(chunk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", default="1,10,30")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stream_memory.md")
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        subprocess.run([sys.executable, "-m", "kwsdeploy", "export", "--model", "tcresnet8-causal", "--frontend",
                        "--exporter", "legacy", "--out", str(bundle)], check=True, env=env, capture_output=True)
        for minutes in [float(m) for m in args.minutes.split(",")]:
            wav = Path(tmp) / f"rec{minutes:g}.wav"
            make_recording(wav, minutes)
            got = {}
            for way in ("whole", "blocks"):
                r = subprocess.run([sys.executable, "-c", CHILD, way, str(bundle), str(wav)], check=True, env=env,
                                   capture_output=True, text=True)
                got[way] = json.loads(r.stdout.strip().splitlines()[-1])
            same = got["whole"]["events"] == got["blocks"]["events"]
            rows.append((minutes, wav.stat().st_size / 2**20, got["whole"]["peak_mib"], got["blocks"]["peak_mib"],
                         len(got["blocks"]["events"]), same))
            print(rows[-1], flush=True)
    lines = ["# `kwsdeploy stream` peak memory: whole file vs blocks", "",
             f"`python benchmarks/stream_memory.py --minutes {args.minutes}`; peak RSS of a fresh process (MiB),",
             "tcresnet8-causal demo checkpoint, frontend inside the graph, ONNX Runtime, one thread.", "",
             "| minutes | WAV MiB | whole file: peak MiB | blocks: peak MiB | detections | same detections |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {m:g} | {w:.1f} | {a:.0f} | {b:.0f} | {n} | {'yes' if s else 'NO'} |" for m, w, a, b, n, s in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
