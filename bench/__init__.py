"""Benchmarks: fastconv backends against PyTorch CPU (``python -m bench`` or ``fastconv bench``)."""
