"""calibration (imports nothing heavy)."""
