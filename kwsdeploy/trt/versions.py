"""TensorRT versions: parsing, the versions our tables know, and what changed between them.

Facts (NVIDIA's release notes and the TensorRT OSS sources): TensorRT 11 builds every network
strongly typed (the STRONGLY_TYPED creation flag is accepted and ignored), removed the precision
builder flags (FP16, INT8, BF16, ...) and trtexec's --fp16/--int8/--best, and its trtexec leaves
host<->device copies out of the timed loop unless --includeDataTransfers is given (10.x included
them unless --noDataTransfers). Strong typing is the recommended mode from 10.12 on; 10.x before
that builds a Q/DQ graph weakly typed with the INT8 flag and an fp16 engine with the FP16 flag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

# JetPack / TensorRT pairs users deploy to (checked against NVIDIA's JetPack release notes).
TARGETS: dict[str, str] = {
    "10.3": "JetPack 6.1 / 6.2 (Jetson Orin)",
    "10.13": "JetPack 7.0 / 7.1 (Jetson Thor)",
    "10.16": "JetPack 7.2 (Jetson Orin Nano / NX / AGX, Thor)",
    "11.4": "JetPack 7.2.2+ (AGX Orin, Thor)",
}
# The versions `kwsdeploy check-trt --trt` documents as choices.
CHECK_CHOICES = ("10.3", "10.16", "11")
DEFAULT_CHECK = "10.3"  # the oldest target: our graphs must stay inside what it parses
STRONG_TYPING_FROM = (10, 12)


class UnknownVersionError(ValueError):
    """A TensorRT version string we cannot parse or our tables do not cover."""


@dataclass(frozen=True, order=True)
class TrtVersion:
    """major.minor of a TensorRT release (patch and build numbers do not change the parser table)."""

    major: int
    minor: int = 0

    @classmethod
    def parse(cls, text: str | "TrtVersion") -> "TrtVersion":
        """'10.3', '10.3.0.30', '11' -> TrtVersion; anything before 10.0 is refused."""
        if isinstance(text, TrtVersion):
            return text
        m = re.fullmatch(r"\s*v?(\d+)(?:\.(\d+))?(?:\.\d+)*\s*", str(text))
        if not m:
            raise UnknownVersionError(f"TensorRT version {text!r} is not of the form MAJOR[.MINOR] (e.g. 10.3, 11).")
        v = cls(int(m.group(1)), int(m.group(2) or 0))
        if v < cls(10, 0):
            raise UnknownVersionError(
                f"TensorRT {v} is older than 10.0, which our tables start at; use TensorRT 10.3 or newer (JetPack 6.1+)."
            )
        return v

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    # -- what this version has ------------------------------------------------------------------
    @property
    def always_strongly_typed(self) -> bool:
        """TensorRT 11+: every network is strongly typed."""
        return self.major >= 11

    @property
    def builds_strongly_typed(self) -> bool:
        """Whether kwsdeploy builds strongly typed here (10.12+: recommended; 11+: the only mode)."""
        return (self.major, self.minor) >= STRONG_TYPING_FROM

    @property
    def has_precision_flags(self) -> bool:
        """BuilderFlag.FP16/INT8 and trtexec --fp16/--int8 exist (removed in 11)."""
        return self.major < 11

    @property
    def trtexec_times_transfers_by_default(self) -> bool:
        """10.x trtexec includes host<->device copies in its latency; 11 needs --includeDataTransfers."""
        return self.major < 11

    @property
    def trtexec_cuda_graph_by_default(self) -> bool:
        """11's trtexec captures a CUDA graph by default; 10.x needs --useCudaGraph."""
        return self.major >= 11


def parse_all(texts: Iterable[str]) -> list[TrtVersion]:
    """Parse several version strings, sorted and de-duplicated."""
    return sorted({TrtVersion.parse(t) for t in texts})
