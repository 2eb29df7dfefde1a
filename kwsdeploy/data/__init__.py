"""data (imports nothing heavy)."""
