"""audiotrain: one experiment framework for fine-tuning audio generation models."""
__version__ = "0.1.0"
