"""Adapters: each implementation under test behind one small interface (``adapters.base``).

``jax_td3.adapters.jax`` wraps our JAX update and owns the JAX layout; ``jax_td3.adapters.torch_ref``
wraps the PyTorch reference and owns torch_ref's layout. The parity engine (``jax_td3.parity``)
and ``jax_td3.convert`` go through them and know neither layout.
"""

from jax_td3.adapters.base import Adapter, NeutralState

__all__ = ["Adapter", "NeutralState"]
