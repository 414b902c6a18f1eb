"""Task models: one loader for real and tiny checkpoints (loading.py), tiny builders (tiny.py), adapters."""
