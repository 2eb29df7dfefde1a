"""Per-call timing: warm-up calls, then timed calls with perf_counter_ns, and the process CPU time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Timing:
    """Wall nanoseconds of each timed call and the process CPU nanoseconds of the whole timed loop."""

    ns: np.ndarray
    cpu_ns: int

    def stats(self) -> dict[str, float]:
        """p50/p90/p99/mean/min per call in microseconds, and the number of calls."""
        us = self.ns / 1e3
        out = {f"p{p}_us": float(np.percentile(us, p)) for p in PERCENTILES}
        out.update(mean_us=float(us.mean()), min_us=float(us.min()), calls=int(us.size))
        return out


def time_calls(call: Callable[[int], object], calls: int, warmup: int, max_seconds: float,
               min_calls: int = 5) -> Timing:
    """`warmup` untimed calls of call(i), then up to `calls` timed ones (stopping after `max_seconds`
    once `min_calls` are in)."""
    for i in range(warmup):
        call(i)
    ns = np.empty(calls, dtype=np.int64)
    clock, cpu = time.perf_counter_ns, time.process_time_ns
    deadline = clock() + int(max_seconds * 1e9)
    c0 = cpu()
    n = 0
    for i in range(calls):
        t0 = clock()
        call(warmup + i)
        t1 = clock()
        ns[i] = t1 - t0
        n += 1
        if n >= min_calls and t1 > deadline:
            break
    return Timing(ns=ns[:n].copy(), cpu_ns=cpu() - c0)
