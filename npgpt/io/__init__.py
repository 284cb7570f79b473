"""Files: atomic writes (atomic.py) < safetensors (safetensors.py).  Both standard library and NumPy only."""
