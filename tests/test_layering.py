"""Layers import one way: base -> kernels -> modeling -> engine -> interventions -> generation ->
benchmarks -> evaluation -> reports -> api -> serve, integrations -> cli; the toy world is a leaf nothing
imports. Every import counts: module level, inside functions, under TYPE_CHECKING, and
`importlib.import_module("halluc...")` with a literal name. No two modules import each other, directly or
through others, in any layer."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "halluc"
# lowest first; a module may import its own layer and the ones before it
LAYERS = ["base", "kernels", "modeling", "engine", "interventions", "generation", "benchmarks", "evaluation",
          "reports", "api", "serve", "integrations", "cli", "world"]
BASE = {"halluc.errors", "halluc.images", "halluc.limits", "halluc.plugins", "halluc.progress", "halluc.registry",
        "halluc.safe_paths", "halluc.version"}
FACADE = {"halluc", "halluc.__main__", "halluc.hf"}  # the package's facades and entry point sit with the CLI


def layer_of(module: str) -> str:
    if module in BASE:
        return "base"
    if module in FACADE:
        return "cli"
    if module == "halluc.api":
        return "api"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "unknown"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every halluc import in the tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "halluc"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("halluc"):
            # `from halluc.x import y` may import the submodule halluc.x.y: judge by the deeper name when it is one
            found += [(node.lineno, _deepest(f"{node.module}.{a.name}", node.module)) for a in node.names]
        elif isinstance(node, ast.Call) and _is_import_module(node):
            name = node.args[0].value
            if name.startswith("halluc"):
                found.append((node.lineno, name))
    return found


def _deepest(candidate: str, parent: str) -> str:
    path = PACKAGE.parent / Path(*candidate.split("."))
    return candidate if path.with_suffix(".py").exists() or path.is_dir() else parent


def _is_import_module(node: ast.Call) -> bool:
    func = node.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or \
            (isinstance(func, ast.Name) and func.id == "import_module")
    return named and bool(node.args) and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)


def violations(source: str, module: str) -> list[str]:
    """Imports in `source` (the text of `module`) that run against the layer order."""
    own = layer_of(module)
    bad = []
    for line, target in imported(ast.parse(source)):
        theirs = layer_of(target)
        if theirs == "world" and own != "world":
            bad.append(f"{module}:{line} imports {target} (the toy world is a leaf: register through a plugin)")
        elif LAYERS.index(theirs) > LAYERS.index(own):
            bad.append(f"{module}:{line} ({own}) imports {target} ({theirs}), a higher layer")
    return bad


def test_every_module_belongs_to_a_layer():
    unknown = [module_name(p) for p in PACKAGE.rglob("*.py") if layer_of(module_name(p)) == "unknown"]
    assert not unknown


def test_no_import_runs_upward():
    bad = [v for p in sorted(PACKAGE.rglob("*.py")) for v in violations(p.read_text(), module_name(p))]
    assert not bad, "\n".join(bad)


def test_an_injected_upward_import_is_caught():
    inside_a_function = "def f():\n    from halluc.generation.generate import generate\n    return generate\n"
    assert violations(inside_a_function, "halluc.engine.views") == [
        "halluc.engine.views:2 (engine) imports halluc.generation.generate (generation), a higher layer"]
    assert violations("import halluc.api\n", "halluc.kernels.reference")
    assert violations("from halluc import api\n", "halluc.evaluation.run")  # the submodule api, not the facade
    assert violations("import importlib\nimportlib.import_module('halluc.cli.app')\n", "halluc.modeling.loading")
    assert violations("from halluc.world.model import load_toy_llava\n", "halluc.cli.app")
    assert not violations("from halluc.modeling.cache import cache_of\n", "halluc.engine.steps")


def import_graph():
    """module -> every halluc module it imports (a package's `__init__` counts as the package)."""
    import networkx

    graph = networkx.DiGraph()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        graph.add_node(module)
        graph.add_edges_from((module, target) for _, target in imported(ast.parse(path.read_text()))
                             if target != module)
    return graph


def cycles(graph) -> list[list[str]]:
    import networkx

    return [sorted(group) for group in networkx.strongly_connected_components(graph) if len(group) > 1]


def test_no_import_cycle_anywhere():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(group) for group in found)


def test_an_injected_cycle_is_caught():
    graph = import_graph()
    graph.add_edge("halluc.reports.model", "halluc.reports.leaderboard")  # the circle the reports once had
    assert ["halluc.reports.leaderboard", "halluc.reports.model"] in cycles(graph)


def test_the_cli_stands_on_the_api_alone():
    """Every command is a thin call into `halluc.api`: the CLI imports nothing else of halluc but its own modules,
    the error type (`halluc.HallucError`, part of the public API) and the server `halluc serve` starts (which
    itself stands on the API)."""
    allowed = ("halluc.api", "halluc.cli", "halluc.errors", "halluc.serve")
    bad = [f"{module_name(p)}:{line} imports {target}" for p in sorted((PACKAGE / "cli").rglob("*.py"))
           for line, target in imported(ast.parse(p.read_text()))
           if not target.startswith(allowed) and target != "halluc"]
    assert not bad, "\n".join(bad)
