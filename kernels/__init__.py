"""numba kernels of safemeta_fast (installed as ``safemeta_fast.kernels``).

Kernels take C-contiguous float64/int64 arrays and scalars, hold no Python objects,
never raise on bad data (inputs are validated at the public boundary) and return
status codes where something can go wrong. They import numpy, numba and each other
only, never the orchestrator.
"""
