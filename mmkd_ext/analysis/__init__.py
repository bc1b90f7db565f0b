"""Importable, tested analyses behind tools/analysis/: ``spectral`` (SpectralKD's per-layer spectral
analysis) and ``step_cost`` (what a distillation step costs: the measuring primitives of
tools/analysis/benchmark.py). Import the submodule you need."""
