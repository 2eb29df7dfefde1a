"""One training epoch on every rank: this rank's micro-batches of the epoch's global batches, gradient
accumulation up to each optimizer step, clipping, the LR schedule per iteration, and the epoch's
training metrics reduced over ranks."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from kwsdeploy.config import FeatureConfig
from kwsdeploy.train.batch_features import BatchFeatures
from kwsdeploy.train.build import Parts
from kwsdeploy.train.distill import distillation_loss
from kwsdeploy.train.distributed import World, passes, plan_epoch, sync_gradients, train_loader
from kwsdeploy.train.neighbours import add_neighbours, neighbour_generator
from kwsdeploy.train.presets import TrainConfig
from kwsdeploy.train.progress import EpochBar
from kwsdeploy.train.seeding import epoch_batches, seed_rank_dropout, spec_augment_generator
from kwsdeploy.train.stream_context import context_samples
from kwsdeploy.train.throughput import WaitTimer, epoch_throughput


def train_epoch(epoch: int, parts: Parts, cfg: TrainConfig, train_set, feature_config: FeatureConfig,
                world: World, device: torch.device, progress: bool = False) -> dict[str, Any]:
    """Train epoch `epoch` (0-based); its metrics row (train_loss, train_acc, throughput)."""
    if hasattr(train_set, "set_epoch"):
        train_set.set_epoch(epoch)
    batches = epoch_batches(len(train_set), cfg.batch_size, cfg.seed, epoch)
    plan = plan_epoch(batches, world.rank, world.size, parts.micro_batch)
    loader = WaitTimer(iter(train_loader(train_set, plan, cfg.num_workers, device.type == "cuda")))
    context = context_samples(cfg.stream_context_s, feature_config, parts.model)
    features = BatchFeatures(parts.mfcc, context, cfg.spec_augment, spec_augment_generator(cfg.seed, epoch))
    seed_rank_dropout(cfg.seed, world.rank, epoch)
    neighbours = neighbour_generator(cfg.seed, epoch)
    model, net, optimizer, scaler = parts.model, parts.net, parts.optimizer, parts.scaler
    model.train()
    seen, correct, loss_sum, t0 = 0, 0, 0.0, time.perf_counter()
    with EpochBar(progress, f"epoch {epoch + 1}/{cfg.epochs}", len(batches)) as bar:
        for step, mb, last in passes(plan):
            if mb is step.micro[0]:
                optimizer.zero_grad(set_to_none=True)
            wave, target = next(loader)
            wave = wave.to(device, non_blocking=True).float()
            wave = add_neighbours(wave, cfg.neighbour_p, neighbours, feature_config.sample_rate)
            target = target.to(device, non_blocking=True).long()
            feats = features(wave, step, mb).unsqueeze(1)
            with sync_gradients(net, last):
                with torch.autocast(device.type, dtype=parts.amp_dtype or torch.float32,
                                    enabled=parts.amp_dtype is not None):
                    logits = net.forward_window(feats, feature_config.clip_frames) if context else net(feats)
                if parts.teacher is None:
                    loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing)
                else:
                    loss = distillation_loss(logits.float(), parts.teacher.logits(wave), target, cfg.distill_weight,
                                             cfg.distill_temperature, cfg.label_smoothing)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"Loss became {loss.item()} at epoch {epoch + 1}; lower --lr.")
                scaler.scale(loss if mb.loss_scale == 1.0 else loss * mb.loss_scale).backward()
            if mb.real:
                seen += mb.real
                loss_sum += loss.item() * mb.real
                correct += int((logits.argmax(1) == target).sum())
            if not last:
                continue
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            parts.scheduler.step()
            rate = seen / max(1e-9, time.perf_counter() - t0)
            bar.advance(f"loss {loss_sum / max(seen, 1):.4f}  acc {correct / max(seen, 1):.2%}  {rate:.0f} clips/s")
    return epoch_throughput(world, seen, correct, loss_sum, time.perf_counter() - t0, loader.waited)
