"""The ε-ball search engine: exact nearest tokens, anchor ranks and ball counts of vectors against a token table.

Layer: just above the foundations, below models. It works on plain arrays (numpy / torch tensors) and may import
only the foundations; `models.token_table.TokenTable` is how the rest of the project calls it.

- `search`: `prepare_table` and `eps_ball_stats` (fp32 BLAS tiles, decisions checked against an error bound,
  undecided tokens recomputed in fp64);
- `_kernels`: the fused Numba pass that reduces each tile on a CPU;
- `search_torch`: the same decisions as torch ops on a GPU.
"""
