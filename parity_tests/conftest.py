"""Parity tests run float64 with JAX's x64 mode on (float32 cases cast explicitly)."""

import jax
import pytest
import torch

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    # The networks here are small: one thread is faster and immune to oversubscription on CI.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
