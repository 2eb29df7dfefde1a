"""What a run trains with, built once: the device, the frontend, the seeded model (--stream-context
check, --init warm start, DDP wrap, --compile), the MFCC module, optimizer, schedule, precision and
the --teacher of a distillation run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from kwsdeploy.config import FeatureConfig
from kwsdeploy.train.distributed import World, default_micro_batch
from kwsdeploy.train.optimizer import mixed_precision, recipe_optimizer
from kwsdeploy.train.presets import TrainConfig
from kwsdeploy.train.schedule import WarmupCosine
from kwsdeploy.train.seeding import seed_everything, steps_per_epoch
from kwsdeploy.train.stream_context import check_streams_in_context


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; an unavailable CUDA request is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for CUDA but no CUDA device is available; use --device cpu.")
    return dev


def feature_config_for(cfg: TrainConfig) -> FeatureConfig:
    """The frontend a run trains with: the deployable (causal) preset unless told otherwise."""
    from kwsdeploy.models.registry import get_card

    n_mfcc = cfg.n_mfcc or get_card(cfg.model).n_mfcc
    return FeatureConfig.reference(n_mfcc) if cfg.features == "reference" else FeatureConfig.deployable(n_mfcc)


def create_model(cfg: TrainConfig, labels: Sequence[str], feature_config: FeatureConfig,
                 log: Callable[[str], None]) -> torch.nn.Module:
    """The run's model, freshly seeded (or warm-started from --init), on the CPU."""
    from kwsdeploy.models import create

    seed_everything(cfg.seed)
    model = create(cfg.model, num_classes=len(labels), n_mfcc=feature_config.n_mfcc, **cfg.model_config)
    if cfg.stream_context_s > 0:
        check_streams_in_context(model, cfg.model)
    if cfg.init_from:
        from kwsdeploy.train.warm_start import warm_start

        info = warm_start(model, Path(cfg.init_from), labels, feature_config)
        log(f"--init {cfg.init_from}: {info['copied']} tensors and {info['head_rows']} classifier rows copied")
    return model


@dataclass
class Parts:
    """Everything the epochs update or call."""

    model: torch.nn.Module  # the bare model: what checkpoints hold
    net: Any  # what the loop calls: the model or DDP around it
    mfcc: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosine
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # autocast's dtype; None: float32
    micro_batch: int  # clips per forward/backward pass of a rank
    teacher: Any = None  # a kwsdeploy.train.distill.Teacher (or TeacherEnsemble) under --teacher, else None


def build_parts(cfg: TrainConfig, labels: Sequence[str], feature_config: FeatureConfig, n_train: int,
                world: World, device: torch.device, log: Callable[[str], None]) -> Parts:
    """Build a run's parts in the order that fixes its random draws (threads, seed, model, the rest)."""
    from kwsdeploy.features import MFCC

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = create_model(cfg, labels, feature_config, log)
    model.to(device)
    net = world.wrap(model, device)
    if cfg.compile:
        model.compile()  # after wrap: SyncBatchNorm is in place before the forward is traced
    micro_batch = cfg.micro_batch or default_micro_batch(cfg.batch_size, world.size)
    mfcc = MFCC(feature_config).to(device)
    optimizer, scheduler = recipe_optimizer(model, cfg, steps_per_epoch(n_train, cfg.batch_size, cfg.seed))
    amp_dtype, scaler = mixed_precision(cfg.amp, device)
    teacher = None
    if cfg.teacher:
        from kwsdeploy.train.distill import load_teacher, teacher_paths

        teacher = load_teacher(cfg.teacher, labels, device, feature_config, cfg.distill_temperature)
        log(f"--teacher {' '.join(teacher_paths(cfg.teacher))}: {teacher.name}, soft targets at weight "
            f"{cfg.distill_weight:g}, temperature {cfg.distill_temperature:g}")
    return Parts(model, net, mfcc, optimizer, scheduler, scaler, amp_dtype, micro_batch, teacher)
