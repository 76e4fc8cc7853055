"""Compiled twins of the kernel contract (docs/KERNELS.md): Cython and Numba backends."""
