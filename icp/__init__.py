"""ICP: a reproducible benchmark of Iterative Constructive Perturbations and self-knowledge distillation."""

__version__ = "0.1.0"
