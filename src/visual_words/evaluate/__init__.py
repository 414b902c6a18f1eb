"""Evaluation: the three task metrics (metrics.py), pycocotools AP (coco.py), bootstrap cell statistics
(stats.py) and the runner that evaluates every trained token in-domain and transferred (runner.py).

Layer: evaluate (beside toolkit, which it does not import) (docs/design.md, "Layers"; `make lint` enforces it). It
may import train, transfer, plan, reuse, data, models, eps_ball and the foundations; never analysis or above.
"""
