"""exporters (imports nothing heavy)."""
