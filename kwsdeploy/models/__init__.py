"""The model zoo. `create(name)` builds any registered model; `load_reference_weights` imports a
reference (TorchKWS / KWM) state dict. Attributes are resolved lazily so that importing this
package does not import torch until a model is asked for."""

from __future__ import annotations

from typing import Any

__all__ = ["create", "get_card", "list_cards", "names", "load_reference_weights", "count_params"]


def __getattr__(name: str) -> Any:
    if name in ("create", "get_card", "list_cards", "names", "count_params"):
        from kwsdeploy.models import registry

        return getattr(registry, name)
    if name == "load_reference_weights":
        from kwsdeploy.models.reference_weights import load_reference_weights

        return load_reference_weights
    raise AttributeError(f"module 'kwsdeploy.models' has no attribute {name!r}")
