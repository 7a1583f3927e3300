"""FastTD3 (Seo et al. 2025) in JAX: distributional twin critics, n-step returns, observation
normalisation and AdamW, as one pure update like TD3's.

Modules, in the order an update uses them: ``state`` (the batch and train-state containers),
``normalizer`` (running observation statistics), ``networks`` (actor and C51 critics), ``losses``
(the categorical projection and both losses), ``update`` (one update).
"""
