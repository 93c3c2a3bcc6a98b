"""Make the shared test helpers importable as ``helpers`` from every test folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch

# The library flushes denormals in `setup_runtime`; tests that call lower-level functions directly
# do the same, since denormal arithmetic slows tiny CPU problems down by up to 10x.
torch.set_flush_denormal(True)
