"""Self-supervised training of simulated physical neural networks, and what it buys in robustness."""

__version__ = "0.1.0"
