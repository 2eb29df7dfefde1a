"""train (imports nothing heavy)."""
