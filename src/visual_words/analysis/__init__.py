"""Where trained tokens land: ε-ball statistics against a token table (on the eps_ball engine) and layer-wise t-SNE.

Layer: analysis (docs/design.md, "Layers"; `make lint` enforces it). It may import evaluate, toolkit, train,
transfer, plan, reuse, data, models, eps_ball and the foundations; never claims, report or commands.
"""
