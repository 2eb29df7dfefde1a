"""runtime (imports nothing heavy)."""
