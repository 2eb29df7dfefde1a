"""Run a benchmark: every model x runtime x precision x mode x packet x batch combination is one row.

A combination that cannot run (no exact step form, a runtime or precision missing here, an export
or runtime error) is a row with status 'skipped' or 'failed' and a one-line reason, never a crash.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from kwsdeploy.bench import backends, roofline, subjects
from kwsdeploy.bench.timing import Timing, time_calls

SCHEMA = 1
PARITY_PACKETS = 3


@dataclass
class Settings:
    """What to run and how (the CLI's options)."""

    models: Sequence[str] = ("tcresnet8-causal", "kwm")
    runtimes: Sequence[str] = ("torch", "ort")
    precisions: Sequence[str] = ("fp32",)
    modes: Sequence[str] = ("step",)
    packet_frames: Sequence[int | None] = (None,)
    batches: Sequence[int] = (1,)
    frontend: bool = False
    device: str = "cpu"
    threads: int = 1
    calls: int = 300
    warmup: int = 10
    max_seconds: float = 1.0
    rounds: int = 5
    audio_seconds: float = 10.0
    exporter: str = "legacy"
    data: Path | None = None
    data_clips: int = 20
    peers: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["data"] = None if self.data is None else Path(self.data).name
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass
class Combination:
    model: str
    runtime: str
    precision: str
    mode: str
    packet_frames: int | None
    batch: int


@dataclass
class Result:
    settings: dict
    environment: dict
    machine: dict
    rows: list[dict]
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "settings": self.settings, "environment": self.environment,
                "machine": self.machine, "rows": self.rows, "wall_s": self.wall_s, "notes": self.notes}


def combinations(s: Settings) -> list[Combination]:
    """Every row the settings ask for, in table order (model, mode, packet, runtime, precision, batch)."""
    from kwsdeploy.models.registry import get_card

    pairs = backends.expand(list(s.runtimes), list(s.precisions))
    names = list(dict.fromkeys(get_card(m).name for m in s.models))
    out = []
    for model in names:
        for mode in s.modes:
            packets = [None] if mode == "offline" else list(dict.fromkeys(s.packet_frames))
            for packet in packets:
                for runtime, precision in pairs:
                    for batch in s.batches:
                        out.append(Combination(model, runtime, precision, mode, packet, int(batch)))
    return out


def bench_audio(seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """The one input recording every row sees: demo-corpus clips (real speech, FSDD) joined, cycled."""
    from kwsdeploy.audio import load_audio
    from kwsdeploy.data.demo import demo_corpus_dir

    need = int(seconds * sample_rate)
    pieces, have = [], 0
    try:
        for f in sorted(demo_corpus_dir().glob("*/*.flac"))[::37]:
            if f.parent.name.startswith("_"):
                continue
            pieces.append(load_audio(f, sample_rate)[0])
            have += len(pieces[-1])
            if have >= need:
                break
    except (OSError, ValueError):
        pieces = []
    if not pieces:  # no corpus: seeded noise, still the same for every row
        pieces = [0.05 * np.random.default_rng(0).standard_normal(need).astype(np.float32)]
    return np.resize(np.concatenate(pieces), need).astype(np.float32)


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) <= 240 else msg[:237] + "..."


class Runner:
    """Prepares subjects once, times each combination, keeps the parity reference per subject."""

    def __init__(self, settings: Settings, machine: roofline.Machine, workdir: Path,
                 audio: np.ndarray, corpus=None) -> None:
        self.s, self.machine, self.workdir, self.audio, self.corpus = settings, machine, workdir, audio, corpus
        self._subjects: dict[subjects.SubjectKey, Any] = {}
        self._refs: dict[subjects.SubjectKey, np.ndarray] = {}
        self._quality: dict[tuple, dict] = {}
        self._seen: set[tuple] = set()

    def subject(self, key: subjects.SubjectKey):
        if key not in self._subjects:
            try:
                self._subjects[key] = subjects.prepare(key, exporter=self.s.exporter)
            except subjects.NotApplicable as exc:
                self._subjects[key] = exc
        got = self._subjects[key]
        if isinstance(got, Exception):
            raise got
        return got

    def reference(self, subj) -> np.ndarray:
        """Torch logits of the first packets from the zero state (batch 1): what every runtime must give."""
        if subj.key not in self._refs:
            r = backends.torch_runner(subj, 1, "cpu")
            self._refs[subj.key] = np.stack([r.step(p)[0] for p in subj.packets(self.audio, PARITY_PACKETS)])
        return self._refs[subj.key]

    def row(self, c: Combination) -> tuple[dict[str, Any] | None, "Timed | None"]:
        """The row's facts and parity (and accuracy), and what to time; (row, None) when it cannot run,
        (None, None) when an earlier combination already is this row."""
        key = subjects.SubjectKey(c.model, c.mode, c.packet_frames, self.s.frontend)
        row: dict[str, Any] = {"model": c.model, "runtime": c.runtime, "precision": c.precision, "mode": c.mode,
                               "packet_frames": c.packet_frames, "batch": c.batch, "frontend": self.s.frontend,
                               "device": self.s.device, "threads": self.s.threads}
        try:
            subj = self.subject(key)
        except subjects.NotApplicable as exc:
            return {**row, "status": "skipped", "reason": _one_line(exc)}, None
        except Exception as exc:  # noqa: BLE001 - any failure is the row's reason
            return {**row, "status": "failed", "reason": f"prepare: {_one_line(exc)}"}, None
        resolved = (c.model, c.runtime, c.precision, c.mode, subj.packet_frames, c.batch)
        if resolved in self._seen:  # e.g. 'natural' and 8 for a model whose natural packet is 8
            return None, None
        self._seen.add(resolved)
        row.update(packet_frames=subj.packet_frames, weights=subj.weights, params=subj.params,
                   state_bytes=subj.state_bytes,
                   macs_per_call=subj.macs_per_call, frontend_macs_per_call=subj.frontend_macs_per_call,
                   macs_per_second=subj.macs_per_call / subj.audio_seconds_per_call,
                   audio_ms_per_call=subj.audio_seconds_per_call * 1e3)
        try:
            runner, facts = backends.make_runner(c.runtime, c.precision, subj, c.batch, self.s.threads,
                                                 self.s.device, self.workdir, self.s.data)
            row.update(facts)
            if c.runtime != "torch" and c.batch == 1:
                ref = self.reference(subj)
                runner.reset()
                got = np.stack([runner.step(p)[0] for p in subj.packets(self.audio, PARITY_PACKETS)])
                row["max_abs_diff_vs_torch"] = float(np.max(np.abs(got - ref)))
            if self.corpus is not None:
                row.update(self._score(runner, subj, c))
            packets = [np.repeat(p, c.batch, axis=0) for p in subj.packets(self.audio, 16)]
            runner.reset()
            row["status"], row["reason"] = "ok", ""
            return row, Timed(row, runner, packets, subj.audio_seconds_per_call * c.batch)
        except backends.Unavailable as exc:
            row.update(status="skipped", reason=_one_line(exc))
        except Exception as exc:  # noqa: BLE001
            row.update(status="failed", reason=f"{type(exc).__name__}: {_one_line(exc)}")
        return row, None

    def _score(self, runner, subj, c: Combination) -> dict[str, Any]:
        if subj.weights != "demo checkpoint":
            return {"accuracy": None, "fa_per_hour": None}
        key = (subj.key, c.runtime, c.precision)
        if key not in self._quality:
            from kwsdeploy.bench.quality import score

            if c.batch != 1:  # score with a batch-1 runner of the same kind
                one, _ = backends.make_runner(c.runtime, c.precision, subj, 1, self.s.threads, self.s.device,
                                              self.workdir, self.s.data)
                self._quality[key] = score(one, subj, self.corpus)
            else:
                self._quality[key] = score(runner, subj, self.corpus)
        return dict(self._quality[key])


@dataclass
class Timed:
    """One runnable row: its runner (a StepRunner, or a peer with the same `step`), inputs cycled, and the
    audio seconds one call streams (all streams of the batch together)."""

    row: dict[str, Any]
    runner: Any
    packets: list
    audio_s_per_call: float
    ns: list = field(default_factory=list)
    cpu_ns: int = 0

    def call(self, i: int) -> None:
        self.runner.step(self.packets[i % len(self.packets)])


def time_rows(timed: list[Timed], s: Settings, progress: Callable[[int, int, str], None] | None = None) -> None:
    """Time every row in `s.rounds` interleaved rounds (row 1, row 2, ..., then again), so that the load
    of a shared machine falls on all rows alike and ratios within a run hold; stats over all rounds."""
    rounds = max(1, int(s.rounds))
    per_round = max(1, -(-s.calls // rounds))
    for r in range(rounds):
        for j, t in enumerate(timed):
            if progress:
                progress(j, len(timed), f"timing round {r + 1}/{rounds}: {t.row['model']} {t.row['runtime']} b{t.row['batch']}")
            # every round re-warms its row (a big row before it evicts the caches a small one runs from)
            warm = s.warmup if r == 0 else max(2, s.warmup // 2)
            got = time_calls(t.call, per_round, warm, s.max_seconds / rounds, min_calls=2)
            t.ns.append(got.ns)
            t.cpu_ns += got.cpu_ns
    for t in timed:
        st = Timing(ns=np.concatenate(t.ns), cpu_ns=t.cpu_ns).stats()
        runner = t.runner
        if hasattr(runner, "time_calls"):  # the contract's own per-call timing: the backend call alone
            runner.clear_times()
            runner.time_calls = True
            for i in range(min(st["calls"], 20)):
                t.call(i)
            runner.time_calls = False
            st["backend_p50_us"] = float(np.median(runner.call_seconds)) * 1e6 if runner.call_seconds else None
        per_call = t.row["audio_ms_per_call"] * 1e-3
        cpu_s = t.cpu_ns * 1e-9
        streamed_s = t.audio_s_per_call * st["calls"]
        t.row.update(st, cpu_ms_per_s=cpu_s * 1e3 / streamed_s, rtf=st["mean_us"] * 1e-6 / per_call,
                     streams_per_core=streamed_s / cpu_s if cpu_s > 0 else None,
                     cpu_us_per_call=cpu_s * 1e6 / st["calls"] if st["calls"] else None)
        t.runner = None


def add_bound(row: dict[str, Any], machine: roofline.Machine) -> None:
    """The row's physical bound and measured (p50) / bound."""
    if row.get("status") != "ok" or not row.get("weight_bytes"):
        return
    macs = int(row["macs_per_call"]) * int(row["batch"])
    # the int8 GEMM peak only where the graph computes in integers (an INT8 recipe may ship fp32)
    precision = row["precision"] if row.get("integer_graph", row["precision"].startswith("int8")) else "fp32"
    state = 2 * int(row.get("state_bytes") or 0) * int(row["batch"])  # read the state, write the new one
    b = machine.bound_seconds(int(row["weight_bytes"]), macs, precision, state_bytes=state)
    row.update(bound_us=b["bound_s"] * 1e6, bound_kind=b["bound_kind"], bound_bytes=b["bytes"],
               memory_bound_us=b["memory_s"] * 1e6, compute_bound_us=b["compute_s"] * 1e6,
               measured_over_bound=row["p50_us"] / (b["bound_s"] * 1e6) if b["bound_s"] > 0 else None)
    if row.get("cpu_us_per_call") and b["bound_s"] > 0:  # CPU time: what other jobs' time slices do not inflate
        row["cpu_over_bound"] = row["cpu_us_per_call"] / (b["bound_s"] * 1e6)
    # the bound without the state (the first formula), kept beside it for comparison
    w = machine.bound_seconds(int(row["weight_bytes"]), macs, precision)
    row["weights_only_bound_us"] = w["bound_s"] * 1e6


def run(settings: Settings, progress: Callable[[int, int, str], None] | None = None) -> Result:
    """The whole benchmark: environment, machine bounds, every row (and the peers row when installed)."""
    from kwsdeploy.bench import environment

    t0 = time.perf_counter()
    _set_threads(settings.threads)
    combos = combinations(settings)
    env = environment.describe(settings.threads)
    machine = roofline.measure(settings.threads)
    audio = bench_audio(settings.audio_seconds)
    corpus = None
    if settings.data is not None:
        from kwsdeploy.bench.quality import load_corpus

        corpus = load_corpus(Path(settings.data), clips=settings.data_clips)
    rows: list[dict] = []
    notes: list[str] = []
    timed: list[Timed] = []
    with backends.scratch_dir() as tmp:
        runner = Runner(settings, machine, Path(tmp), audio, corpus)
        for i, c in enumerate(combos):
            if progress:
                progress(i, len(combos), f"preparing {c.model} {c.mode} p{c.packet_frames or '-'} {c.runtime} {c.precision} b{c.batch}")
            row, t = runner.row(c)
            if row is None:
                continue
            rows.append(row)
            if t is not None:
                timed.append(t)
        if settings.peers:
            from kwsdeploy.bench import peers

            for row, peer in peers.prepare(audio, notes):
                rows.append(row)
                if peer is not None:
                    timed.append(Timed(row, peer, list(range(peer.chunks)), peer.audio_s_per_call))
        time_rows(timed, settings, progress)
        if progress:
            progress(len(timed), len(timed), "done")
    for row in rows:
        add_bound(row, machine)
    env["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    return Result(settings=settings.to_dict(), environment=env, machine=machine.to_dict(), rows=rows,
                  wall_s=time.perf_counter() - t0, notes=notes)


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(int(threads))
