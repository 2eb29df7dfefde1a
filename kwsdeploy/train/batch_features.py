"""What the network sees of a training micro-batch: MFCC of its waveforms (after --stream-context's
context) with SpecAugment drawn once per global batch, so the masks do not depend on the world size."""

from __future__ import annotations

import torch

from kwsdeploy.train.stream_context import prepend_context


class BatchFeatures:
    """MFCC (+ SpecAugment) of micro-batches; `generator` draws one mask set per global step."""

    def __init__(self, mfcc, context: int, spec_augment: bool, generator: torch.Generator) -> None:
        self.mfcc, self.context, self.spec_augment, self.generator = mfcc, context, spec_augment, generator
        self._step, self._keep = None, None

    @torch.no_grad()
    def __call__(self, wave: torch.Tensor, step, mb) -> torch.Tensor:
        """Features [B, n_mfcc, frames] of micro-batch `mb` of global step `step`."""
        feats = self.mfcc(prepend_context(wave, self.context))
        if self.spec_augment:
            feats = feats.masked_fill(~self._kept(step, feats)[mb.positions].to(feats.device), 0.0)
        return feats

    def _kept(self, step, feats: torch.Tensor) -> torch.Tensor:
        """The global batch's keep mask [step.size, F, T], drawn at the step's first micro-batch."""
        from kwsdeploy.data.augment import spec_augment_keep

        if self._step is not step:
            self._step, self._keep = step, spec_augment_keep(step.size, feats.shape[-2], feats.shape[-1], self.generator)
        return self._keep
