"""The single list of models. Family modules register their cards here; everything else iterates it.

A card is frozen: name, family, builder, default config, input feature count, expected parameter
count, streaming mode (`exact` step form or `windowed` recompute) and the reference it reproduces.
Family modules are discovered automatically: every module of `kwsdeploy.models` whose name does not
start with `_` is imported (private helpers are `_`-prefixed, e.g. `_time_conv`; public helper
modules such as `macs` register nothing), so adding a family is adding a file, with no list to edit.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

STREAMING_MODES = ("exact", "windowed")


@dataclass(frozen=True)
class ModelCard:
    """Everything the project knows about one model name, without building it."""

    name: str
    family: str
    builder: Callable[..., Any]  # builder(num_classes=..., n_mfcc=..., **config) -> nn.Module
    config: Mapping[str, Any] = field(default_factory=dict)
    n_mfcc: int = 40  # the input width the expected parameter count refers to
    expected_params: int | None = None  # at 12 classes and `n_mfcc` inputs
    expected_macs: int | None = None  # per 1 s clip, from FACTS.md where the reference has it
    streaming: str = "exact"
    reference: str = ""  # what it reproduces: paper + reference code, or "kwsdeploy" for ours
    description: str = ""
    notes: str = ""  # deviations, reference bugs fixed or kept, why a mode is windowed
    aliases: tuple[str, ...] = ()
    reference_name: str | None = None  # the name the reference's select_model() accepts, if any

    def __post_init__(self) -> None:
        if self.streaming not in STREAMING_MODES:
            raise ValueError(f"{self.name}: streaming must be one of {STREAMING_MODES}, got {self.streaming!r}")
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))

    def build(self, num_classes: int = 12, n_mfcc: int | None = None, **overrides: Any):
        """Build the model; it carries a frozen `KwsInfo` as `model.kws` (read it with `kws_info`)."""
        n_mfcc = self.n_mfcc if n_mfcc is None else n_mfcc
        model = self.builder(num_classes=num_classes, n_mfcc=n_mfcc, **{**self.config, **overrides})
        # Every built model knows its card: streaming, export and reference loading dispatch on it.
        model.kws = KwsInfo(self, int(num_classes), int(n_mfcc), overrides)
        return model


@dataclass(frozen=True)
class KwsInfo:
    """What kwsdeploy knows about one built model: its card, classes, input features, build overrides."""

    card: ModelCard
    num_classes: int
    n_mfcc: int
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))

    def __deepcopy__(self, memo: dict) -> "KwsInfo":  # immutable: a copied model shares it
        return self

    @property
    def name(self) -> str:
        """The registry name."""
        return self.card.name

    @property
    def family(self) -> str:
        """The family (module under kwsdeploy.models)."""
        return self.card.family


class NotAKwsModelError(ValueError):
    """A model without `model.kws`: not built by `kwsdeploy.models.create` (or a checkpoint loader)."""


def kws_info(model: Any) -> KwsInfo:
    """The `KwsInfo` of a model built by `create`; anything else is a one-line NotAKwsModelError."""
    info = getattr(model, "kws", None)  # the one read of the attribute
    if not isinstance(info, KwsInfo):
        raise NotAKwsModelError(
            f"{type(model).__name__} has no kwsdeploy card (model.kws); build it with "
            "kwsdeploy.models.create(name) or load it with kwsdeploy.train.checkpoint.load_checkpoint."
        )
    return info


def display_name(model: Any) -> str:
    """The registry name of a built model, else its class name (for messages only)."""
    info = getattr(model, "kws", None)
    return info.name if isinstance(info, KwsInfo) else type(model).__name__


_CARDS: dict[str, ModelCard] = {}
_ALIASES: dict[str, str] = {}
_discovered = False


def normalize(name: str) -> str:
    """Look-up key: case, '-' and '_' are ignored (`TC-ResNet8` == `tcresnet8`)."""
    return name.lower().replace("-", "").replace("_", "").strip()


def register(card: ModelCard) -> ModelCard:
    """Add a card (and its aliases); a name or alias registered twice is a ValueError."""
    key = normalize(card.name)
    if key in _CARDS and _CARDS[key] is not card:
        raise ValueError(f"Model name {card.name!r} is registered twice.")
    _CARDS[key] = card
    for alias in card.aliases:
        akey = normalize(alias)
        if akey in _CARDS or (akey in _ALIASES and _ALIASES[akey] != key):
            raise ValueError(f"Alias {alias!r} of {card.name!r} clashes with another name.")
        _ALIASES[akey] = key
    return card


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda i: i.name):
        if not info.name.startswith("_"):  # a module that registers no card (macs, registry) costs an import
            importlib.import_module(f"kwsdeploy.models.{info.name}")
    _discovered = True


def list_cards() -> list[ModelCard]:
    """Every registered card, in registration order (families alphabetically)."""
    _discover()
    return list(_CARDS.values())


def names() -> list[str]:
    """Every registered model name, in `list_cards` order."""
    return [c.name for c in list_cards()]


class UnknownModelError(KeyError):
    """An unknown model name (a KeyError whose message reads as a plain sentence)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want the plain sentence
        return str(self.args[0])


def get_card(name: str) -> ModelCard:
    """The card for a name or alias; an unknown name raises with the nearest suggestion."""
    _discover()
    key = normalize(name)
    key = _ALIASES.get(key, key)
    if key in _CARDS:
        return _CARDS[key]
    display = {normalize(c.name): c.name for c in _CARDS.values()}
    display.update({normalize(a): a for c in _CARDS.values() for a in c.aliases})
    near = difflib.get_close_matches(key, list(display), n=1, cutoff=0.5)
    hint = f" Did you mean {display[near[0]]!r}?" if near else ""
    raise UnknownModelError(f"Unknown model {name!r}.{hint} Run 'kwsdeploy models' for the list.")


def create(name: str, num_classes: int = 12, n_mfcc: int = 40, **overrides: Any):
    """Build the offline model `name`: [B, 1, n_mfcc, 98] features -> [B, num_classes] logits."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    return get_card(name).build(num_classes=num_classes, n_mfcc=n_mfcc, **overrides)


def count_params(model) -> int:
    """Number of parameters (trainable or not) of a model."""
    return sum(p.numel() for p in model.parameters())
