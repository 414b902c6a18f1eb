"""Task models: one loader for real and tiny checkpoints (loading.py), tiny builders (tiny.py), adapters.

Layer: models (docs/design.md, "Layers"; `make lint` enforces it). It may import eps_ball and the foundations; never
data or above.
"""
