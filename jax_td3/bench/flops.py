"""FLOPs of one TD3, OurDDPG or FastTD3 update, counted from the layer shapes.

Only matrix products are counted (2 FLOPs per multiply-add); bias adds, ReLU,
tanh, the losses, Adam and Polyak are element-wise and below 1% of the total at
every benchmarked size. A ``Linear(n_in, n_out)`` on a batch of B rows costs

- forward: one (B x n_in) @ (n_in x n_out) product;
- backward, input gradient: (B x n_out) @ (n_out x n_in), only where something
  upstream needs it (not for a network's first layer when its input is data);
- backward, weight gradient: (n_in x B) @ (B x n_out), only for trained weights.

One update (README.md, "FLOP count") is: target actor forward; every target
critic forward; every critic forward + backward (weight gradients, input
gradients except the first layer); and on actor iterations (1 in ``policy_freq``,
so weighted ``1 / policy_freq``) actor forward, Q1 forward, Q1 input gradients
through every layer (the action is an input of Q1's first layer), actor weight
gradients and input gradients except its first layer. Critic weight gradients
during the actor step are not needed and not counted (torch_ref computes them anyway).

Products are keyed by shape with a leading stack size s: the critics of TD3 (and
N vmapped agents) run as one batched product, which is how the fast paths execute
them and how ``matmul_rate`` times them.

FastTD3 (``critic_arch`` "distributional"): the same products with each critic's
output layer ``num_atoms`` wide; its target action comes from the online actor
(no actor target), and its actor step runs both critics (the minimum or the mean
of their expected values), so those critic products are stacked 2. Its
element-wise work is not negligible (101 atoms, AdamW on about 0.8 M parameters)
and is counted by ``elementwise_flops``; the floor charges it at the update's
matmul rate.
"""

from __future__ import annotations

from jax_td3.config import FastTD3Config, TD3Config

Shape = tuple[int, int, int, int]  # (s, m, k, n): s independent (m x k) @ (k x n) products, batched


def layer_sizes(config: TD3Config) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(n_in, n_out) of every Linear of the actor and of one critic."""
    if config.critic_arch not in ("mlp", "distributional"):
        raise ValueError(f"FLOP count implemented for the MLP and C51 critics (TD3, OurDDPG, FastTD3), "
                         f"not {config.algo}")
    actor = [config.obs_dim, *config.actor_hidden, config.act_dim]
    critic = [config.obs_dim + config.act_dim, *config.critic_hidden_sizes, _critic_outputs(config)]
    pairs = lambda sizes: list(zip(sizes[:-1], sizes[1:]))
    return pairs(actor), pairs(critic)


Gemms = dict[Shape, float]   # {shape: count}; counts are fractional (actor products: 1 / policy_freq)


def _add(gemms: Gemms, shape: Shape, share: float) -> None:
    gemms[shape] = gemms.get(shape, 0.0) + share


def _forward(layers: list[tuple[int, int]], batch: int, stack: int, share: float, gemms: Gemms) -> None:
    for n_in, n_out in layers:
        _add(gemms, (stack, batch, n_in, n_out), share)


def _backward(layers: list[tuple[int, int]], batch: int, stack: int, share: float, gemms: Gemms, weights: bool,
              input_grad_first: bool) -> None:
    for i, (n_in, n_out) in enumerate(layers):
        if weights:
            _add(gemms, (stack, n_in, batch, n_out), share)
        if i > 0 or input_grad_first:
            _add(gemms, (stack, batch, n_out, n_in), share)


def update_gemms(config: TD3Config, batch: int, agents: int = 1) -> Gemms:
    """Matrix products of one update of ``agents`` agents at once, averaged over the ``policy_freq``
    cycle: {(stack, m, k, n): count}."""
    actor, critic = layer_sizes(config)
    critics = config.num_critics * agents
    # TD3/OurDDPG ascend Q1; FastTD3 the minimum (or mean) of both critics.
    ascended = critics if _distributional(config) else agents
    actor_share = 1.0 / config.policy_freq
    gemms: Gemms = {}
    _forward(actor, batch, agents, 1.0, gemms)                           # target actor (FastTD3: the actor)
    _forward(critic, batch, critics, 1.0, gemms)                         # target critics
    _forward(critic, batch, critics, 1.0, gemms)                         # critics
    _backward(critic, batch, critics, 1.0, gemms, weights=True, input_grad_first=False)
    _forward(actor, batch, agents, actor_share, gemms)                   # actor step: mu(s)
    _forward(critic, batch, ascended, actor_share, gemms)                # Q1(s, mu(s)) (FastTD3: both)
    _backward(critic, batch, ascended, actor_share, gemms, weights=False, input_grad_first=True)
    _backward(actor, batch, agents, actor_share, gemms, weights=True, input_grad_first=False)
    return gemms


def gemm_flops(shape: Shape) -> int:
    s, m, k, n = shape
    return 2 * s * m * k * n


def matmul_flops(config: TD3Config, batch: int) -> float:
    """Matmul FLOPs of one update of one agent (averaged over the delayed-actor cycle)."""
    return sum(gemm_flops(shape) * count for shape, count in update_gemms(config, batch).items())


def update_flops(config: TD3Config, batch: int) -> float:
    """FLOPs of one update of one agent (averaged over the delayed-actor cycle): its matmuls, plus
    FastTD3's counted element-wise work (``elementwise_flops``; none counted for TD3/OurDDPG)."""
    return matmul_flops(config, batch) + elementwise_flops(config, batch)


# FastTD3's element-wise FLOPs, per element of what they touch (a max or a comparison counts as one):
PER_ATOM = 19           # per critic, sample and atom, every update: target softmax 4 (subtract the max, exp,
#                         sum, divide); projection 4 (2 multiplies and the scatter's 2 adds; the index
#                         arithmetic is not counted); expected value for clipped double Q 2; log-softmax of
#                         the online logits 4; cross-entropy 2; its gradient (softmax - target) / B 3
PER_TARGET_ATOM = 9     # per sample and atom (shared by the critics): r + bootstrap * discount * z 3, clamp 2,
#                         (Tz - v_min) / delta_z 2, the neighbours' weights u - b and b - l 2
PER_TARGET_ACTION = 9   # per sample and action dimension: scale * tanh + bias 3, noise scaled and clipped 3,
#                         added and clipped to the box 3
PER_ACTOR_ATOM = 9      # per critic, sample and atom on actor steps: softmax 4, expected value 2, its
#                         gradient p * (z - v) 3
PER_ADAMW_PARAM = 12    # both moments 7, bias-corrected step with sqrt and eps 3, decay and step 2
PER_CLIP_PARAM = 3      # with max_grad_norm: square, sum, scale
PER_POLYAK_PARAM = 3    # lerp: subtract, multiply, add (every update, critic targets)


def elementwise_flops(config: TD3Config, batch: int) -> float:
    """FastTD3's element-wise FLOPs of one update (per-element costs above; bias adds, ReLU, LayerNorm
    and the reductions to scalars are not counted). 0 for TD3/OurDDPG, whose element-wise work is
    below 1% of their matmuls and not counted."""
    if not isinstance(config, FastTD3Config):
        return 0.0
    actor, critic = layer_sizes(config)
    critics, atoms = config.num_critics, config.num_atoms
    actor_params = sum(n_in * n_out + n_out for n_in, n_out in actor)
    critic_params = critics * sum(n_in * n_out + n_out for n_in, n_out in critic)
    per_param = PER_ADAMW_PARAM + (PER_CLIP_PARAM if config.max_grad_norm > 0 else 0)
    every_update = (PER_ATOM * critics * batch * atoms + PER_TARGET_ATOM * batch * atoms
                    + PER_TARGET_ACTION * batch * config.act_dim
                    + (per_param + PER_POLYAK_PARAM) * critic_params)
    actor_step = PER_ACTOR_ATOM * critics * batch * atoms + per_param * actor_params
    return float(every_update + actor_step / config.policy_freq)


def _distributional(config: TD3Config) -> bool:
    return config.critic_arch == "distributional"


def _critic_outputs(config: TD3Config) -> int:
    return config.num_atoms if isinstance(config, FastTD3Config) else 1
