"""The shape of the code, checked: imports go one way and the layers keep to their jobs.

The import graph is read from the source (every ``import`` statement, including those inside
functions, which the package uses to stay light at import time), so a cycle through a lazy
import counts too.
"""

import ast
import dataclasses
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jax_td3"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every module name ``path`` imports (``from a.b import c`` gives a.b.c if that is a module, else a.b)."""
    names = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                names.add(full if full in MODULES else base)
    return names


GRAPH = {name: {m for m in imported_names(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_the_package_has_no_import_cycles():
    # Tarjan's strongly connected components; any component of more than one module is a cycle.
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_graph_sees_lazy_imports():
    """A guard against a parser that misses imports inside functions (the run driver imports the
    compiled driver lazily): the test above would then pass for the wrong reason."""
    assert "jax_td3.run.compiled" in GRAPH["jax_td3.run.training"]
    assert "jax_td3.loops.host" in GRAPH["jax_td3.run.training"]


@pytest.mark.parametrize("name", [n for n in MODULES if not n.startswith("jax_td3.cli")])
def test_below_the_command_layer_nothing_knows_argparse_or_the_commands(name):
    imports = imported_names(MODULES[name])
    assert "argparse" not in imports
    assert not any(m == "jax_td3.cli" or m.startswith("jax_td3.cli.") for m in imports)


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("jax_td3.loops")])
def test_loops_name_no_particular_environment(name):
    imports = imported_names(MODULES[name])
    assert not any(m.startswith(("jax_td3.envs.pendulum", "jax_td3.envs.gymnasium", "gymnasium", "pybullet"))
                   for m in imports)


def test_the_reference_imports_nothing_from_the_product():
    for path in (ROOT / "torch_ref").rglob("*.py"):
        assert not any(m.split(".")[0] == "jax_td3" for m in imported_names(path)), path


def test_every_config_field_has_a_flag_or_comes_from_the_environment():
    from jax_td3.cli.args import CONFIG_FLAGS
    from jax_td3.config import CONFIGS
    from jax_td3.run.training import CONFIG_SETTINGS

    env_sized = {"obs_dim", "act_dim", "action_low", "action_high"}
    for cls in CONFIGS.values():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert fields - env_sized == set(CONFIG_SETTINGS) == set(CONFIG_FLAGS), cls.algo



@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("jax_td3.loops")])
def test_loops_never_mention_brax(name):
    """The compiled loop steps any JAX-native environment; a Brax-specific rule in it would mean the
    environment interface is missing something."""
    assert "brax" not in MODULES[name].read_text().lower()
    assert not any(m.split(".")[0] in ("brax", "mujoco", "gymnasium") for m in imported_names(MODULES[name]))


def test_only_the_brax_adapter_imports_brax():
    importers = {n for n in MODULES if any(m.split(".")[0] in ("brax", "mujoco") for m in imported_names(MODULES[n]))}
    assert importers == {"jax_td3.envs.brax"}
