"""Evaluation: the three task metrics (metrics.py), pycocotools AP (coco.py), bootstrap cell statistics
(stats.py) and the runner that evaluates every trained token in-domain and transferred (runner.py)."""
