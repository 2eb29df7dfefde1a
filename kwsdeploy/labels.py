"""Label orders of the reference's checkpoints (TorchKWS main.py); a reference best.pt has none inside.

Torch-free. `reference_labels(spec, num_classes)` turns `gsc12|gsc30|gsc35|w1,w2,...` (or None:
chosen from the number of classes) into the list of labels for output indices 0..C-1.
"""

from __future__ import annotations

GSC12: tuple[str, ...] = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "unknown", "silence",
)
GSC30: tuple[str, ...] = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
)
GSC35: tuple[str, ...] = GSC30 + ("backward", "forward", "follow", "learn", "visual")

REFERENCE_ORDERS: dict[str, tuple[str, ...]] = {"gsc12": GSC12, "gsc30": GSC30, "gsc35": GSC35}


def default_order_name(num_classes: int) -> str | None:
    """The reference order with `num_classes` labels (gsc12/gsc30/gsc35), or None."""
    for name, labels in REFERENCE_ORDERS.items():
        if len(labels) == num_classes:
            return name
    return None


def reference_labels(spec: str | None, num_classes: int) -> list[str]:
    """Labels for a model with `num_classes` outputs from `spec` (an order name or a comma list)."""
    if spec is None or not spec.strip():
        name = default_order_name(num_classes)
        if name is None:
            raise ValueError(
                f"The model has {num_classes} classes and no reference label order has that many "
                f"(gsc12, gsc30, gsc35); give the order with --labels w1,w2,... ({num_classes} words)."
            )
        return list(REFERENCE_ORDERS[name])
    key = spec.strip().lower()
    if key in REFERENCE_ORDERS:
        labels = list(REFERENCE_ORDERS[key])
    else:
        labels = [w.strip() for w in spec.split(",")]
        if any(not w for w in labels):
            raise ValueError(f"--labels {spec!r} has an empty word; give gsc12, gsc30, gsc35 or w1,w2,...")
        if len(labels) == 1:
            raise ValueError(
                f"--labels {spec!r} is neither a reference order (gsc12, gsc30, gsc35) nor a comma-separated list."
            )
    if len(set(labels)) != len(labels):
        dup = sorted({w for w in labels if labels.count(w) > 1})
        raise ValueError(f"--labels repeats {dup}; every label must be unique.")
    if len(labels) != num_classes:
        raise ValueError(f"--labels gives {len(labels)} labels but the model has {num_classes} outputs.")
    return labels
