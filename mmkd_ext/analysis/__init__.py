"""Importable, tested analyses behind tools/analysis/: ``spectral`` (SpectralKD's per-layer spectral
analysis) and ``benchmark`` (the cost of a distillation step). Import the submodule you need."""
