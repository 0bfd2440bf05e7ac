"""Experiments as data (definitions.py) and the training of their missing runs (running.py)."""
