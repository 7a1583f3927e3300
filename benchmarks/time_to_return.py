"""Return against wall-clock time on a JAX-native environment: three TD3 recipes, side by side, one job.

Methods (each trains ``--num-seeds`` agents together, vmapped, in one compiled program per chunk):

- ``fasttd3``: ``--preset fasttd3-cpu`` as ``jax-td3 train --compiled`` runs it (256 environments per agent,
  3-step returns, 2 updates per vector step, batch 1,024, distributional critics, normaliser).
- ``td3``: our classic compiled TD3: ``--preset fujimoto`` (256-256, batch 256, 25,000 random steps) with 16
  environments per agent and one update per vector step.
- ``rejax``: Rejax 0.1.3's TD3 on the same Brax environment and physics with the same sizes as ``td3`` (16
  environments, 256-256 ReLU, batch 256, learning rate 3e-4, 25,000 random steps, one critic update per
  vector step and the actor every second, exploration 0.1, target noise 0.2 clipped at 0.5, tau 0.005).

The methods take turns: the one with the least training time so far runs its next chunk, so that the
machine's load (shared, noisy) falls on all three alike. Training time counts the chunks' run time only;
compilation and evaluations are timed apart (and reported). Every ``--eval-every-seconds`` of a method's
training time, and at the budget, its agents are evaluated: ``--eval-episodes`` episodes each with the
deterministic policy, the mean return per agent. The JSON at ``--out`` is rewritten after every event, so
an interrupted job keeps what it measured.

    python benchmarks/time_to_return.py run --budget-seconds 1800 --eval-every-seconds 150 \
        --out benchmarks/results/time_to_return_halfcheetah.json
    python benchmarks/time_to_return.py report benchmarks/results/time_to_return_halfcheetah.json

``report`` draws the curves (PNG beside the JSON) and prints, at the budget, the interquartile mean over
seeds with a 95% stratified bootstrap interval (``rliable``). Needs ``jax-td3[brax]``, ``rejax==0.1.3``,
``gymnax==0.0.9`` (for ``rejax``), ``rliable`` and ``matplotlib`` (for ``report``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


class OurMethod:
    """One of our compiled recipes as a ``ChunkedRun``: ``advance`` runs ``chunk_steps`` transitions."""

    def __init__(self, name: str, preset: str, values: dict, num_seeds: int, chunk_steps: int,
                 eval_episodes: int):
        from jax_td3.config import config_for_env
        from jax_td3.envs import make_jax_env
        from jax_td3.loops.compiled import ChunkedRun, compiled_settings
        from jax_td3.loops.host import fasttd3_run_config
        from jax_td3.run.training import plan_run

        out = tempfile.mkdtemp(prefix=f"ttr-{name}-")
        # total_steps only bounds the run (it is stopped by time); the replay holds buffer_size either way.
        values = {**values, "total_steps": 200 * chunk_steps * 1_000, "eval_every": chunk_steps,
                  "eval_episodes": eval_episodes, "out": out}
        plan = plan_run(values, preset, compiled=True, num_seeds=num_seeds)
        self.settings = plan.settings
        loop = compiled_settings(plan.settings)
        env = make_jax_env(plan.settings.env, brax_backend=plan.settings.brax_backend)
        config = config_for_env(plan.algo, env.spec, **plan.config_overrides)
        if config.algo == "fasttd3":
            config = fasttd3_run_config(config, plan.settings, loop.num_envs)
        self.name, self.chunk_steps, self.num_envs = name, chunk_steps, loop.num_envs
        self.updates_per_env_step = loop.updates_per_step / loop.num_envs
        self.learning_starts = loop.learning_starts
        self.run = ChunkedRun(config, loop, plan.settings.seed + np.arange(num_seeds), env=env,
                              chunk_steps=chunk_steps)
        self.description = {"preset": preset, "values": {k: v for k, v in values.items() if k != "out"},
                            "config": {k: (list(v) if isinstance(v, tuple) else v)
                                       for k, v in vars(config).items()},
                            "loop": {k: getattr(loop, k) for k in ("num_envs", "updates_per_step", "buffer_size",
                                                                  "learning_starts", "expl_noise")}}
        self.agents = None
        self.done = 0

    def compile(self) -> None:
        self.run.compile_ahead()
        self.agents = self.run.initial_agents()

    def advance(self) -> None:
        self.agents, self.done = self.run.advance(self.agents, self.done)
        jax.block_until_ready(self.agents)

    def evaluate(self) -> np.ndarray:
        self.agents, evaluation = self.run.evaluate(self.agents, self.done)
        return evaluation.returns.mean(axis=1)

    def updates(self) -> float:
        return max(0, self.done - self.learning_starts) * self.updates_per_env_step


class RejaxMethod:
    """Rejax's TD3, ``num_seeds`` agents vmapped; each chunk continues its train state (``train(train_state=)``)."""

    def __init__(self, env_id: str, backend: str, num_seeds: int, chunk_steps: int, eval_episodes: int,
                 num_envs: int = 16, learning_starts: int = 25_000, buffer_size: int = 1_000_000):
        from rejax import TD3
        from rejax.evaluate import evaluate

        class WideTD3(TD3):
            """Rejax's TD3 with 256-256 networks (its ``create_agent`` fixes 64-64 and takes no size)."""

            @classmethod
            def create_agent(cls, config, env, env_params):
                agent = super().create_agent(config, env, env_params)
                return {role: net.clone(hidden_layer_sizes=(256, 256)) for role, net in agent.items()}

        name = env_id.split(":", 1)[1]
        self.algo = WideTD3.create(
            env=f"brax/{name}", env_params={"backend": backend}, num_envs=num_envs, total_timesteps=chunk_steps,
            eval_freq=chunk_steps, skip_initial_evaluation=True, fill_buffer=learning_starts,
            buffer_size=buffer_size, batch_size=256, learning_rate=3e-4, policy_delay=2, polyak=0.995,
            gamma=0.99, exploration_noise=0.1, target_noise=0.2, target_noise_clip=0.5,
            actor_kwargs={"activation": "relu"}, critic_kwargs={"activation": "relu"})
        self.algo = self.algo.replace(eval_callback=lambda algo, ts, rng: jnp.zeros(()))
        if chunk_steps % (num_envs * 2):
            raise ValueError(f"rejax chunk {chunk_steps} must be a multiple of num_envs x policy_delay")
        algo = self.algo

        def evaluate_all(ts, keys):
            def one(ts, key):
                _, returns = evaluate(algo.make_act(ts), key, algo.env, algo.env_params, eval_episodes,
                                      algo.env_params.max_steps_in_episode)
                return returns.mean()
            return jax.vmap(one)(ts, keys)

        self.name, self.chunk_steps, self.num_envs = "rejax", chunk_steps, num_envs
        self.learning_starts = learning_starts
        self.keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
        self.eval_keys = jax.random.split(jax.random.PRNGKey(1), num_seeds)
        self._init = jax.jit(jax.vmap(algo.init_state))
        self._train = jax.jit(jax.vmap(lambda ts: algo.train(train_state=ts)[0]), donate_argnums=0)
        self._evaluate = jax.jit(evaluate_all)
        self.description = {"library": "rejax 0.1.3", "env": f"brax/{name}", "backend": backend,
                            "num_envs": num_envs, "hidden": [256, 256], "activation": "relu", "batch_size": 256,
                            "learning_rate": 3e-4, "fill_buffer": learning_starts, "buffer_size": buffer_size,
                            "policy_delay": 2, "polyak": 0.995, "gamma": 0.99, "exploration_noise": 0.1,
                            "target_noise": 0.2, "target_noise_clip": 0.5}
        self.ts = None
        self.done = 0

    def compile(self) -> None:
        self.ts = jax.block_until_ready(self._init(self.keys))
        self._train = self._train.lower(self.ts).compile()
        self._evaluate = self._evaluate.lower(self.ts, self.eval_keys).compile()

    def advance(self) -> None:
        self.ts = jax.block_until_ready(self._train(self.ts))
        self.done += self.chunk_steps

    def evaluate(self) -> np.ndarray:
        return np.asarray(self._evaluate(self.ts, self.eval_keys))

    def updates(self) -> float:
        return max(0, self.done - self.learning_starts) / self.num_envs


def make_methods(args: argparse.Namespace) -> list:
    chunks = dict(item.split("=") for item in args.chunk_steps.split(","))
    methods = []
    for name in args.methods.split(","):
        if name == "fasttd3":
            methods.append(OurMethod("fasttd3", "fasttd3-cpu", {"env": args.env, **json.loads(args.fasttd3_values)},
                                     args.num_seeds,
                                     int(chunks["fasttd3"]), args.eval_episodes))
        elif name == "td3":
            methods.append(OurMethod("td3", "fujimoto", {"env": args.env, "num_envs": 16, "updates_per_step": 1.0},
                                     args.num_seeds, int(chunks["td3"]), args.eval_episodes))
        elif name == "rejax":
            methods.append(RejaxMethod(args.env, args.brax_backend, args.num_seeds, int(chunks["rejax"]),
                                       args.eval_episodes))
        else:
            raise SystemExit(f"unknown method {name!r}; choose from fasttd3, td3, rejax")
    return methods


def write(path: Path, result: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> None:
    from jax_td3.bench.machine import load_average, machine_info

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    methods = make_methods(args)
    result = {"benchmark": "time to return", "env": args.env, "command": " ".join(sys.argv),
              "settings": vars(args), "machine": machine_info(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "methods": {}}
    state = {}
    for method in methods:
        start = time.perf_counter()
        method.compile()
        compile_seconds = time.perf_counter() - start
        start = time.perf_counter()
        returns = method.evaluate()
        eval_seconds = time.perf_counter() - start
        state[method.name] = {"train_seconds": 0.0, "since_eval": 0.0, "finished": False}
        result["methods"][method.name] = {
            "description": method.description, "compile_seconds": round(compile_seconds, 1),
            "eval_seconds": round(eval_seconds, 1), "chunk_steps": method.chunk_steps, "chunks": [],
            "curve": [{"train_seconds": 0.0, "env_steps": 0, "updates": 0.0, "returns": returns.tolist()}]}
        print(f"{method.name}: compiled in {compile_seconds:.0f} s; returns at 0 {np.round(returns, 1)}", flush=True)
        write(out, result)
    while not all(s["finished"] for s in state.values()):
        method = min((m for m in methods if not state[m.name]["finished"]),
                     key=lambda m: state[m.name]["train_seconds"])
        s, record = state[method.name], result["methods"][method.name]
        start = time.perf_counter()
        method.advance()
        seconds = time.perf_counter() - start
        s["train_seconds"] += seconds
        s["since_eval"] += seconds
        record["chunks"].append([round(seconds, 3), round(os.getloadavg()[0], 2)])
        s["finished"] = s["train_seconds"] >= args.budget_seconds
        if s["since_eval"] >= args.eval_every_seconds or s["finished"]:
            start = time.perf_counter()
            returns = method.evaluate()
            record["eval_seconds"] = round(record["eval_seconds"] + time.perf_counter() - start, 1)
            s["since_eval"] = 0.0
            record["curve"].append({"train_seconds": round(s["train_seconds"], 2), "env_steps": method.done,
                                    "updates": method.updates(), "returns": returns.tolist()})
            print(f"{method.name}: {s['train_seconds']:.0f} s, {method.done:,} steps per agent, "
                  f"returns {np.round(returns, 1)}, load {load_average()}", flush=True)
        record["train_seconds"] = round(s["train_seconds"], 2)
        record["env_steps"] = method.done
        write(out, result)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write(out, result)


def returns_at(curve: list, seconds: float) -> np.ndarray:
    """Each agent's last evaluated return at or before ``seconds`` of training."""
    points = [p for p in curve if p["train_seconds"] <= seconds + 1e-6]
    return np.asarray(points[-1]["returns"])


def report(args: argparse.Namespace) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library as rly
    from rliable import metrics

    path = Path(args.result)
    result = json.loads(path.read_text())
    methods = result["methods"]
    # Default: each method's last evaluation, the one at its budget (reached to within one chunk).
    budget = args.at_seconds or result["settings"]["budget_seconds"]
    cut = {name: (args.at_seconds or m["curve"][-1]["train_seconds"]) for name, m in methods.items()}
    scores = {name: returns_at(m["curve"], cut[name])[:, None] for name, m in methods.items()}
    iqm = lambda x: np.array([metrics.aggregate_iqm(x)])  # noqa: E731
    point, interval = rly.get_interval_estimates(scores, iqm, reps=args.reps, confidence_interval_size=0.95)
    summary = {"budget_seconds": round(budget, 1), "iqm": {}}
    for name, m in methods.items():
        last = [p for p in m["curve"] if p["train_seconds"] <= cut[name] + 1e-6][-1]
        summary["iqm"][name] = {
            "iqm": round(float(point[name][0]), 1), "ci95": [round(float(x), 1) for x in interval[name][:, 0]],
            "returns": [round(float(x), 1) for x in scores[name][:, 0]], "env_steps_per_agent": last["env_steps"],
            "updates_per_agent": last["updates"], "train_seconds": last["train_seconds"],
            "compile_seconds": m["compile_seconds"], "eval_seconds": m["eval_seconds"]}
    print(json.dumps(summary, indent=1))
    (path.with_name(path.stem + "_iqm.json")).write_text(json.dumps(summary, indent=1))

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (name, m), colour in zip(methods.items(), ("C0", "C1", "C2", "C3")):
        t = np.array([p["train_seconds"] for p in m["curve"]]) / 60
        r = np.array([p["returns"] for p in m["curve"]])
        for seed in r.T:
            ax.plot(t, seed, color=colour, alpha=0.25, linewidth=0.8)
        ax.plot(t, np.median(r, axis=1), color=colour, linewidth=2, label=f"{name} (median of {r.shape[1]})")
    ax.axvline(budget / 60, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("training wall-clock (minutes; compilation and evaluation excluded)")
    ax.set_ylabel("evaluation return")
    ax.set_title(f"{result['env']}: return against wall-clock, one job")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)
    print(f"wrote {path.with_suffix('.png')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("run", help="train the methods in turns for a wall-clock budget each")
    p.add_argument("--env", default="brax:halfcheetah")
    p.add_argument("--brax-backend", default="spring")
    p.add_argument("--methods", default="fasttd3,td3,rejax")
    p.add_argument("--num-seeds", type=int, default=4)
    p.add_argument("--budget-seconds", type=float, default=1800.0, help="training seconds per method")
    p.add_argument("--eval-every-seconds", type=float, default=120.0)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--chunk-steps", default="fasttd3=10240,td3=4096,rejax=4096",
                   help="transitions per agent per compiled call, per method")
    p.add_argument("--fasttd3-values", default="{}", help="JSON of values over the fasttd3-cpu preset's")
    p.add_argument("--out", default="benchmarks/results/time_to_return_halfcheetah.json")
    r = sub.add_parser("report", help="curves (PNG) and the IQM at the budget with a 95%% bootstrap interval")
    r.add_argument("result")
    r.add_argument("--at-seconds", type=float, default=None,
                   help="the last evaluation at or before this training time (default: each method's last)")
    r.add_argument("--reps", type=int, default=50_000)
    args = parser.parse_args()
    run(args) if args.mode == "run" else report(args)


if __name__ == "__main__":
    main()
