"""The global random generators (Python's ``random``, NumPy's, torch's CPU one): seed, preserve."""
import random
from contextlib import contextmanager

import numpy as np
import torch


def seed_global_rngs(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def preserved_rngs(seed=None):
    """Run the block, then put the CPU generators of Python, NumPy and torch back as they were:
    what the block draws does not shift anyone else's stream. With ``seed``, they are seeded for
    the block."""
    state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])
