"""Benchmarks of the TD3/DDPG update (JAX vs PyTorch, against the machine's compute floor).

Run ``jax-td3 bench`` or ``python -m benchmarks`` (see README.md here). Importing
this package imports neither Gymnasium nor PyBullet; only the end-to-end part
(``--e2e``) starts training runs, in subprocesses.
"""
