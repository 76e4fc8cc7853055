"""Compiled twins of the kernel contract (docs/KERNELS.md): Cython and Numba backends."""
import os

# Idle OpenMP threads that spin after each parallel region starve OpenBLAS's threads (and the other
# way round) whenever cores are shared: a 2-thread training step of the LFW CNN took 2.9 s instead
# of 14 ms on a busy 2-core machine. Sleeping waiters cost microseconds per kernel call. This must
# be set before libgomp loads (the first compiled kernel import); an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
