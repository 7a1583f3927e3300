"""FLOPs of one TD3/OurDDPG update, counted from the layer shapes.

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
"""

from __future__ import annotations

from jax_td3.config import TD3Config

Shape = tuple[int, int, int, int]  # (s, m, k, n): s independent (m x k) @ (k x n) products, batched


def layer_sizes(config: TD3Config) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(n_in, n_out) of every Linear of the actor and of one critic."""
    if config.critic_arch != "mlp":
        raise ValueError(f"FLOP count implemented for the MLP critic (TD3, OurDDPG), not {config.algo}")
    actor = [config.obs_dim, *config.actor_hidden, config.act_dim]
    critic = [config.obs_dim + config.act_dim, *config.critic_hidden_sizes, 1]
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
    actor_share = 1.0 / config.policy_freq
    gemms: Gemms = {}
    _forward(actor, batch, agents, 1.0, gemms)                           # target actor
    _forward(critic, batch, critics, 1.0, gemms)                         # target critics
    _forward(critic, batch, critics, 1.0, gemms)                         # critics
    _backward(critic, batch, critics, 1.0, gemms, weights=True, input_grad_first=False)
    _forward(actor, batch, agents, actor_share, gemms)                   # actor step: mu(s)
    _forward(critic, batch, agents, actor_share, gemms)                  # Q1(s, mu(s))
    _backward(critic, batch, agents, actor_share, gemms, weights=False, input_grad_first=True)
    _backward(actor, batch, agents, actor_share, gemms, weights=True, input_grad_first=False)
    return gemms


def gemm_flops(shape: Shape) -> int:
    s, m, k, n = shape
    return 2 * s * m * k * n


def update_flops(config: TD3Config, batch: int) -> float:
    """Matmul FLOPs of one update of one agent (averaged over the delayed-actor cycle)."""
    return sum(gemm_flops(shape) * count for shape, count in update_gemms(config, batch).items())
