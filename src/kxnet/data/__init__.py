"""Data: image folders, on-device degradation synthesis, benchmark test sets, the DataModule."""
