"""`train --teacher CKPT`: knowledge distillation from a trained checkpoint (any family of the zoo).

The teacher hears each training clip as the student does after waveform augmentation (its own
frontend, no SpecAugment, no --stream-context prefix: the clip's one-second window), and the loss is

    (1 - w) * CE(student, label, label_smoothing) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))

(Hinton et al.'s soft targets; T^2 keeps the soft term's gradient scale independent of T). The
teacher must know every label of the student's data (in any order; its logits are reordered to the
student's, and labels the data lacks are left out).

Several teachers (`--teacher A --teacher B`) are one ensemble: its soft target is the mean of the
members' softened distributions, mean_i softmax(teacher_i / T), given to the loss as the logits
T * log(mean_i softmax(teacher_i / T)) (whose softmax at T is that mean exactly).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from kwsdeploy.train.presets import teacher_paths


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, weight: float,
                      temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """The mixed hard-label / soft-target loss of a batch (mean over clips)."""
    hard = F.cross_entropy(student, target, label_smoothing=label_smoothing)
    if weight == 0.0:
        return hard
    t = float(temperature)
    soft = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                    reduction="batchmean", log_target=True) * (t * t)
    return (1.0 - weight) * hard + weight * soft


def label_order(teacher_labels: Sequence[str], student_labels: Sequence[str], path: str) -> list[int]:
    """For each student label, the index of the teacher's logit for it (a teacher's extra labels are
    left out: its softmax over the rest is its belief given the clip is none of them); a one-line
    error when the teacher lacks one of the student's labels."""
    teacher_labels, student_labels = list(teacher_labels), list(student_labels)
    missing = [lab for lab in student_labels if lab not in teacher_labels]
    if missing:
        raise ValueError(f"--teacher {path} does not know {', '.join(missing)}: give a teacher trained on "
                         "every label of the training data.")
    return [teacher_labels.index(lab) for lab in student_labels]


class Teacher:
    """A frozen checkpoint that scores training waveforms with its own frontend."""

    def __init__(self, path: Path, labels: Sequence[str], device: torch.device, feature_config=None) -> None:
        from kwsdeploy.features import MFCC
        from kwsdeploy.train.checkpoint import load_checkpoint

        loaded = load_checkpoint(path)
        mine = loaded.feature_config
        if feature_config is not None and (mine.sample_rate, mine.clip_samples) != (
                feature_config.sample_rate, feature_config.clip_samples):
            raise ValueError(f"--teacher {path} hears {mine.clip_samples}-sample clips at {mine.sample_rate} Hz, the "
                             f"student {feature_config.clip_samples} at {feature_config.sample_rate} Hz; give a "
                             "teacher trained on clips like the student's.")
        self.order = torch.tensor(label_order(loaded.labels, labels, str(path)), dtype=torch.long, device=device)
        self.name = str(loaded.card.get("model"))
        self.clip_samples = loaded.feature_config.clip_samples
        self.model = loaded.model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.mfcc = MFCC(loaded.feature_config).to(device).eval()

    @torch.no_grad()
    def logits(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, classes] logits in the student's label order for waveforms [B, samples]."""
        wave = wave[:, -self.clip_samples:]
        out = self.model(self.mfcc(wave).unsqueeze(1))
        return out.float().index_select(1, self.order)


class TeacherEnsemble:
    """Several teachers as one: the mean of their distributions softened at `temperature`."""

    def __init__(self, members: Sequence[Teacher], temperature: float) -> None:
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two teachers")
        self.members = list(members)
        self.temperature = float(temperature)
        self.name = " + ".join(m.name for m in self.members)

    @torch.no_grad()
    def logits(self, wave: torch.Tensor) -> torch.Tensor:
        """Logits whose softmax at the temperature is the members' mean softened distribution."""
        t = self.temperature
        logp = torch.stack([F.log_softmax(m.logits(wave) / t, dim=-1) for m in self.members])
        return t * (torch.logsumexp(logp, dim=0) - math.log(len(self.members)))


def load_teacher(spec: str | Sequence[str] | None, labels: Sequence[str], device: torch.device, feature_config=None,
                 temperature: float = 2.0):
    """The Teacher of one path, a TeacherEnsemble of several, or None."""
    paths = teacher_paths(spec)
    members = [Teacher(Path(p), labels, device, feature_config) for p in paths]
    if len(members) <= 1:
        return members[0] if members else None
    return TeacherEnsemble(members, temperature)
