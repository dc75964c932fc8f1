"""Storage: the only source of truth. One interface (base.py), one module per backend."""
