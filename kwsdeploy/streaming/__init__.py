"""streaming (imports nothing heavy)."""
