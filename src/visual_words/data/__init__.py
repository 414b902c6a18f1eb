"""Datasets -> per-concept manifests (train / held-out images with boxes and labels) and feature caches.

Layer: data (docs/design.md, "Layers"; `make lint` enforces it). It may import models, eps_ball and the foundations;
never reuse or above.
"""
