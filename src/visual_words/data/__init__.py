"""Datasets -> per-concept manifests (train / held-out images with boxes and labels) and feature caches."""
