"""What the parity engine needs from an implementation under test, and the neutral state it speaks.

The parity engine (``jax_td3.parity``) never looks inside an implementation. It holds two
*adapters*, gives both the same starting state and the same batches, and compares what their
updates report. Adding another TD3/DDPG implementation (Stable-Baselines3's TD3, a CleanRL
script ...) to the cross-check means writing one adapter class; nothing in the engine changes.

The neutral state
-----------------
A flat ``dict`` that any implementation can be read into and written from. Tensors are NumPy
arrays named ``<family>.<tensor>``; ``<tensor>`` is the parameter's name in Fujimoto's TD3.py
(and ``torch_ref``), with ``nn.Linear``'s shapes: ``l1.weight`` is (out, in), ``l1.bias`` (out,).

- families ``actor``, ``critic``, ``actor_target``, ``critic_target``: the weights;
- families ``actor_adam_m``, ``actor_adam_v``, ``critic_adam_m``, ``critic_adam_v``: Adam's first
  and second moments of every parameter, shaped like the parameter (optax's ``mu`` and ``nu``;
  ``torch.optim.Adam``'s two moment buffers);
- integer counters (Python ``int``): ``step`` (updates done; the next update is number ``step + 1``,
  so the actor moves on the updates where ``(step + 1) % policy_freq == 0``), ``actor_adam_count`` and
  ``critic_adam_count`` (Adam steps taken by each optimizer, which set its bias correction).

Tensor names per network:

- actor: ``l1`` .. ``l{k+1}`` for ``k`` hidden layers (the last one outputs the pre-tanh action);
- TD3's twin critic: Q1 is ``l1`` .. ``l{n}`` and Q2 is ``l{n+1}`` .. ``l{2n}`` (``n`` layers per
  critic; with two hidden layers, ``l1``-``l3`` and ``l4``-``l6`` as in TD3.py);
- OurDDPG's critic: ``l1`` .. ``l{n}``; DDPG's critic: ``l1`` (obs), ``l2`` (after the action joins),
  ``l3``; the seed-ddpg critic: ``fc_s``, ``fc_a``, ``fc1``, ``fc2``.

Values are in the implementation's precision; a receiver casts them to its own.

Writing an adapter
------------------
A class (no base class needed: ``Adapter`` below is a ``typing.Protocol``) with:

``name: str``
    Short label for reports, e.g. ``"sb3"``.
``quantities: tuple[str, ...]``
    Every name ``update`` may report, in the order a report should list them (use
    ``quantity_names``). The engine compares the names both adapters list; a quantity your
    implementation cannot reach (e.g. its gradients) is simply left out.
``load(state)``
    Make the implementation hold the neutral ``state`` exactly: weights, targets, both Adam
    moments and counts, and the update counter. A state whose names or shapes do not fit raises
    ``jax_td3.errors.ConversionError`` naming the tensor.
``state() -> dict``
    The implementation's current state as a neutral state (copies, not views of live buffers).
``update(batch, target_noise) -> dict``
    Run exactly one update and report it. ``batch`` is five NumPy arrays in Fujimoto's order,
    ``(obs, action, next_obs, reward, not_done)``, shapes (B, obs_dim), (B, act_dim),
    (B, obs_dim), (B, 1), (B, 1), already in the comparison's dtype. ``target_noise`` is standard
    normal, (B, act_dim): TD3 scales it by ``policy_noise * action_scale`` and clips it to
    ``noise_clip * action_scale`` itself; the DDPG variants ignore it. The implementation must not
    draw its own random numbers. Return NumPy arrays (copies) under these names:

    ===========================  ========================================================  ==========
    name                         value                                                     required
    ===========================  ========================================================  ==========
    ``actor_updated``            ``bool``: did this update step the actor and the targets  yes
    ``critic_loss``              scalar: the loss minimised (TD3: the sum of both critics' yes
                                 MSE, times ``critic_loss_scale``)
    ``actor.*``, ``critic.*``    every parameter after this update                         yes
    ``actor_target.*``,          every target parameter after this update                  yes
    ``critic_target.*``
    ``critic_adam_m.*``, ...     all four Adam moment families after this update           yes
    ``actor_loss``               scalar, only when ``actor_updated``                       yes
    ``target_action``            (B, act_dim): target policy plus clipped noise            if reachable
    ``target_q``                 (B, 1): the TD target the critics are fitted to           if reachable
    ``current_q``                (num_critics, B, 1): Q of the batch, before the step      if reachable
    ``critic_grad.*``            critic gradients (before Adam; weight decay not added)    if reachable
    ``actor_q``                  (B, 1): the Q the actor step ascends, Q1(s, mu(s)) (min   if reachable
                                 over the critics with ``actor_q="min"``), when updated
    ``actor_grad.*``             actor gradients, only when ``actor_updated``              if reachable
    ``step``                     ``int``: the update counter after this update             optional
    ===========================  ========================================================  ==========

    Report the actor-step quantities (``actor_loss``, ``actor_q``, ``actor_grad.*``) only on
    updates that stepped the actor; the engine compares them (and the actor's Adam moments) only
    on the updates where ``step % policy_freq == 0``, and checks on the others that ``actor.*`` and
    both target families did not change at all (only ``actor.*`` when the config's ``target_update``
    is "every_update").

``config_settings: dict`` (optional)
    Config fields and values under which our update computes what this implementation computes, for
    an implementation whose update is a variant of Fujimoto's (SBX: ``critic_loss_scale`` 0.5 ...).
    The adapter still runs under other settings (the comparison then reports the differences);
    ``jax-td3 parity --their-settings`` applies these. Declare them in ``ADAPTER_SETTINGS`` in
    ``jax_td3/adapters/__init__.py`` too, so the command line can read them without importing the
    library.

``state()`` after ``load(s)`` must give back ``s`` bit for bit (only copies, no arithmetic); the
parity tests check this for the shipped adapters (``test_neutral_state_round_trip_is_exact``).

Running it::

    from jax_td3.adapters.jax import JaxAdapter
    from jax_td3.parity import compare_adapters

    report = compare_adapters(JaxAdapter(config, "float64"), MyAdapter(config, "float64"), config,
                              dtype="float64", updates=1000)
    print(report.table())

``jax_td3.adapters.jax`` and ``jax_td3.adapters.torch_ref`` are the two adapters the project
ships; each is also the one place that knows its implementation's layout.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

NeutralState = dict[str, Any]   # "<family>.<tensor>" -> np.ndarray, plus the COUNTERS -> int

NETWORKS = ("actor", "critic", "actor_target", "critic_target")
ADAM_FAMILIES = ("actor_adam_m", "actor_adam_v", "critic_adam_m", "critic_adam_v")
STATE_FAMILIES = NETWORKS + ADAM_FAMILIES
COUNTERS = ("step", "actor_adam_count", "critic_adam_count")

# Update quantities in the order a report lists them: the critic step as it is computed, then the
# actor step, then what must hold still between actor steps. A family in PER_TENSOR stands for one
# quantity per parameter tensor of the network it is paired with.
QUANTITY_FAMILIES = (
    "target_action", "target_q", "current_q", "critic_loss",
    "critic_grad", "critic_adam_m", "critic_adam_v", "critic",
    "actor_q", "actor_loss", "actor_grad", "actor_adam_m", "actor_adam_v",
    "actor", "critic_target", "actor_target",
)
PER_TENSOR = {"critic_grad": "critic", "critic_adam_m": "critic", "critic_adam_v": "critic", "critic": "critic",
              "actor_grad": "actor", "actor_adam_m": "actor", "actor_adam_v": "actor", "actor": "actor",
              "critic_target": "critic", "actor_target": "actor"}
# Reported (and compared) only on the updates that step the actor.
ACTOR_STEP_FAMILIES = ("actor_q", "actor_loss", "actor_grad", "actor_adam_m", "actor_adam_v")
# Must not change on the updates that do not step the actor.
DELAYED_FAMILIES = ("actor", "actor_target", "critic_target")


# FastTD3 (``jax_td3.adapters.fasttd3_jax``, ``fasttd3_torch_ref``): no actor target, AdamW's moments in
# the Adam families, and the observation normaliser's statistics (``obs_normalizer.mean``/``.var``: arrays;
# ``obs_normalizer.count``: an integer). Tensor names are ``torch_ref.fasttd3``'s module paths
# (``actor.net.0.weight``, ``critic.qnet2.fc_head.0.bias``: the twin critic is one module). Its batch is
# seven arrays: the observations the loop collected this step (folded into the normaliser first), then
# the n-step batch ``(obs, action, next_obs, reward, bootstrap, discount)``, reward/bootstrap/discount (B,).
FASTTD3_NETWORKS = ("actor", "critic", "critic_target")
FASTTD3_STATE_FAMILIES = FASTTD3_NETWORKS + ADAM_FAMILIES
NORMALIZER_ENTRIES = ("obs_normalizer.mean", "obs_normalizer.var", "obs_normalizer.count")
FASTTD3_QUANTITY_FAMILIES = (
    "target_action", "projected", "cdq_choice", "target_dist", "critic_logits", "critic_loss", "critic_lr",
    "critic_grad", "critic_grad_norm", "critic_adam_m", "critic_adam_v", "critic",
    "actor_lr", "actor_q", "actor_loss", "actor_grad", "actor_grad_norm", "actor_adam_m",
    "actor_adam_v", "actor", "critic_target", *NORMALIZER_ENTRIES, *COUNTERS,
)


def family(name: str) -> str:
    """The family of a quantity or state entry: ``critic_grad.l1.weight`` -> ``critic_grad``."""
    return name.split(".", 1)[0]


def tensor_names(state: NeutralState, network: str) -> list[str]:
    """The tensor names (``l1.weight`` ...) of ``network`` in a neutral state, in its order."""
    prefix = network + "."
    return [key[len(prefix):] for key in state if key.startswith(prefix)]


def quantity_names(actor: Sequence[str], critic: Sequence[str],
                   families: Sequence[str] = QUANTITY_FAMILIES) -> tuple[str, ...]:
    """Full quantity names in report order, given the actor's and the critic's tensor names."""
    tensors = {"actor": actor, "critic": critic}
    names = []
    for fam in families:
        if fam in PER_TENSOR:
            names += [f"{fam}.{t}" for t in tensors[PER_TENSOR[fam]]]
        else:
            names.append(fam)
    return tuple(names)


@runtime_checkable
class Adapter(Protocol):
    """An implementation under test, as the parity engine sees it (see the module docstring)."""

    name: str
    quantities: tuple[str, ...]

    def load(self, state: NeutralState) -> None:
        """Hold ``state`` exactly (weights, targets, Adam moments and counts, update counter)."""

    def state(self) -> NeutralState:
        """The current state, as copies."""

    def update(self, batch: Sequence[np.ndarray], target_noise: np.ndarray) -> dict[str, Any]:
        """One update on ``batch`` with standard-normal ``target_noise``; the reported quantities."""
