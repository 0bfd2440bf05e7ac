"""Experiments as data (definitions.py), one class per design (designs.py), the metrics they name (metrics.py), and
the training of their missing runs (running.py)."""
