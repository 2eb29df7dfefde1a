"""matplotlib, the optional `plot` extra, loaded one way for every plot kwsdeploy writes."""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
