"""cli (imports nothing heavy)."""
