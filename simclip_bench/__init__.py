"""simclip-bench: Sim-CLIP adversarial fine-tuning and honest robustness evaluation of CLIP models."""
__version__ = "0.1.0"
