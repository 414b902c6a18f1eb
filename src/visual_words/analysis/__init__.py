"""Where trained tokens land: ε-ball statistics against a token table (BLAS + Numba) and layer-wise t-SNE."""
