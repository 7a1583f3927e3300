"""The shape of the code, checked: imports go one way and the layers keep to their jobs.

The import graph is read from the source (every ``import`` statement, including those inside
functions, which the package uses to stay light at import time), so a cycle or a wrong-way
import through a lazy import counts too.

Layers, top to bottom (``LAYERS``): a module imports only from its own layer or those below it.
A few narrower rules (``RULES``) say what a layer must not know even though it sits above it. No
module uses another module's private (underscore) name.
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
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
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


# Top to bottom. A module belongs to the entry naming it or its nearest enclosing package.
LAYERS = (
    ("command layer", ("jax_td3.cli",)),
    ("run drivers", ("jax_td3.run", "jax_td3.bench")),
    # Whole-run tools over the loops: evaluating and exporting saved agents, and the run-level parity
    # engine (with the parity package's front door, which re-exports it).
    ("run tools", ("jax_td3.evaluate", "jax_td3.export", "jax_td3.parity", "jax_td3.parity.run_level")),
    ("loops", ("jax_td3.loops",)),
    ("backends, adapters, parity engine", ("jax_td3.backends", "jax_td3.adapters", "jax_td3.convert",
                                           "jax_td3.parity.compare", "jax_td3.parity.update_level")),
    # FastTD3's update (jax_td3.fasttd3: state, normalizer, networks, losses, update) beside TD3's.
    ("algorithm", ("jax_td3.update", "jax_td3.losses", "jax_td3.networks", "jax_td3.replay", "jax_td3.buffer",
                   "jax_td3.fasttd3", "jax_td3.fasttd3.replay", "jax_td3.fasttd3.device_replay",
                   "jax_td3.noise")),
    # The package root holds the version and re-exports the public API lazily (importlib, not imports).
    ("config, environments, checkpoint format", ("jax_td3", "jax_td3.config", "jax_td3.presets", "jax_td3.settings",
                                                 "jax_td3.dtypes", "jax_td3.envs", "jax_td3.checkpoint_format",
                                                 "jax_td3.xla_options", "jax_td3.compile_cache")),
    ("errors", ("jax_td3.errors",)),
)

# (importer prefix, imported prefix, why not): narrower than the layers.
RULES = (
    ("jax_td3.loops", "jax_td3.backends.jax_backend", "a loop talks to the backend protocol, not to one backend"),
    ("jax_td3.loops", "jax_td3.backends.torch_backend", "a loop talks to the backend protocol, not to one backend"),
    ("jax_td3.loops", "jax_td3.presets", "a loop takes its settings from the settings object, not from presets"),
)

# Violations that exist and are being removed by work in flight (none today). An entry that no longer
# occurs fails the test too, so this set only shrinks.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def _within(name: str, prefix: str) -> bool:
    return name == prefix or (prefix != "jax_td3" and name.startswith(prefix + "."))


def layer_of(name: str) -> int:
    """Index in LAYERS (0 is the top) of the longest entry naming ``name`` or a package above it."""
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if _within(name, prefix)]
    assert matches, f"{name} has no layer: add it to LAYERS in {Path(__file__).name}"
    return max(matches)[1]


def import_violations(graph=None) -> dict[tuple[str, str], str]:
    """{(importer, imported): why not} for every import against LAYERS or RULES."""
    found = {}
    for name, imports in (GRAPH if graph is None else graph).items():
        for imported in imports:
            if layer_of(imported) < layer_of(name):
                found[name, imported] = f"{LAYERS[layer_of(name)][0]} imports {LAYERS[layer_of(imported)][0]}"
            for importer, target, why in RULES:
                if _within(name, importer) and _within(imported, target):
                    found[name, imported] = why
    return found


def private_names_defined(path: Path) -> set[str]:
    """Underscore names a module defines: functions, classes, module variables and attributes it assigns."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


PRIVATE = {name: private_names_defined(path) for name, path in MODULES.items()}


def private_uses(name: str, source: str | None = None) -> set[str]:
    """Other modules' private names that module ``name`` uses: imported from a jax_td3 module, or read as an
    attribute of anything but ``self``/``cls`` when only other modules define that name."""
    others = set().union(*(names for module, names in PRIVATE.items() if module != name))
    used = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text() if source is None else source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jax_td3"):
            used.update(a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__"))
        elif isinstance(node, ast.Attribute) and node.attr in others and node.attr not in PRIVATE[name]:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                used.add(node.attr)
    return used


def test_every_module_has_a_layer():
    for name in MODULES:
        layer_of(name)


def test_imports_go_down_the_layers():
    """Command layer -> run drivers -> run tools -> loops -> backends/adapters/parity engine -> algorithm ->
    config, environments, checkpoint format -> errors; within a layer, anything (the cycle test still holds)."""
    found = import_violations()
    known = {v for v in KNOWN_VIOLATIONS if not v[1].startswith("_")}
    new = sorted(set(found) - known)
    assert not new, "imports against the layers: " + "; ".join(f"{a} imports {b} ({found[a, b]})" for a, b in new)
    assert not known - set(found), f"no longer violated, remove from KNOWN_VIOLATIONS: {sorted(known - set(found))}"


def test_no_module_uses_another_modules_private_name():
    found = {(name, used) for name in MODULES for used in private_uses(name)}
    known = {v for v in KNOWN_VIOLATIONS if v[1].startswith("_")}
    assert not sorted(found - known), f"private names used across modules: {sorted(found - known)}"
    assert not known - found, f"no longer violated, remove from KNOWN_VIOLATIONS: {sorted(known - found)}"


def test_the_layer_checks_see_a_wrong_way_import():
    """Guards against checks that pass for the wrong reason: wrong-way imports and a private-name call,
    made up here, are seen as violations."""
    assert layer_of("jax_td3.checkpoint_format") > layer_of("jax_td3.loops.host") > layer_of("jax_td3.export")
    assert layer_of("jax_td3.parity.run_level") < layer_of("jax_td3.parity.update_level")
    made_up = {"jax_td3.checkpoint_format": {"jax_td3.run.checkpoint", "jax_td3.errors"},
               "jax_td3.loops.vector": {"jax_td3.backends.torch_backend", "jax_td3.backends.base"},
               "jax_td3.run.training": {"jax_td3.loops.host"}}
    assert set(import_violations(made_up)) == {("jax_td3.checkpoint_format", "jax_td3.run.checkpoint"),
                                               ("jax_td3.loops.vector", "jax_td3.backends.torch_backend")}
    source = "from jax_td3.adapters.sb3 import _refuse\ndef f(trainer):\n    return trainer._rebuild_env(), self._x\n"
    assert private_uses("jax_td3.run.training", source) == {"_refuse", "_rebuild_env"}


def test_checkpoints_are_read_through_the_format_module():
    """The checkpoint file format sits below everything that reads it: readers outside the run drivers
    import ``checkpoint_format``, never ``run.checkpoint`` (which writes a run's files)."""
    readers = {name for name, imports in GRAPH.items() if "jax_td3.run.checkpoint" in imports}
    assert all(layer_of(name) <= layer_of("jax_td3.run.checkpoint") for name in readers), readers


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
    every_field = {f.name for cls in CONFIGS.values() for f in dataclasses.fields(cls)}
    assert every_field - env_sized == set(CONFIG_SETTINGS) == set(CONFIG_FLAGS)



@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("jax_td3.loops")])
def test_loops_never_mention_brax_or_playground(name):
    """The compiled loop steps any JAX-native environment; a Brax- or Playground-specific rule in it would
    mean the environment interface is missing something."""
    assert "brax" not in MODULES[name].read_text().lower()
    assert "playground" not in MODULES[name].read_text().lower()
    assert not any(m.split(".")[0] in ("brax", "mujoco", "mujoco_playground", "gymnasium")
                   for m in imported_names(MODULES[name]))


def test_only_the_adapters_import_brax_mujoco_or_playground():
    """Each physics library is imported by its adapter alone (``envs.brax``, ``envs.playground``)."""
    def importers(*libraries):
        return {n for n in MODULES if any(m.split(".")[0] in libraries for m in imported_names(MODULES[n]))}

    assert importers("brax", "mujoco") == {"jax_td3.envs.brax"}
    assert importers("mujoco_playground") == {"jax_td3.envs.playground"}
