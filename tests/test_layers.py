"""The package's layering (ARCHITECTURE.md): imports only go down, the five components never
import each other, there are no import cycles, and the graph has at most 8 levels."""

import ast
from collections import defaultdict
from pathlib import Path

import musiclm

ROOT = Path(musiclm.__file__).parent
LAYERS = {
    "errors": 0,
    "config": 0,
    "files": 0,
    "audio": 1,
    "tempo": 1,
    "modules": 1,
    "checks": 1,
    "pretrained": 1,
    "checkpoint": 2,
    "train": 2,
    "data": 2,
    "plot": 2,
    "codec": 3,
    "semantic": 3,
    "mulan": 3,
    "melody": 3,
    "lm": 3,
    "bundle": 4,
    "pipeline": 5,
    "eval": 5,
    "serve": 6,
    "pipeline_commands": 6,
    "adapter_commands": 6,
    "recipe": 6,
    "eval_commands": 6,
    "cli": 6,
    "__main__": 6,
    "__init__": 6,
}
COMPONENTS = {"codec", "semantic", "mulan", "melody", "lm"}


def _unit(path: Path) -> str:
    """The layer unit of a file: its top-level package or module name."""
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _imports() -> dict[str, set[str]]:
    graph = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        src = _unit(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "musiclm" and len(parts) > 1 and parts[1] in LAYERS and parts[1] != src:
                    graph[src].add(parts[1])
    return graph


def test_every_unit_has_a_layer():
    units = {_unit(p) for p in ROOT.rglob("*.py")}
    assert units <= set(LAYERS), f"give these a layer: {sorted(units - set(LAYERS))}"


def test_imports_only_go_down_and_components_stay_apart():
    bad = [
        f"{a} -> {b}"
        for a, targets in _imports().items()
        for b in targets
        if LAYERS[b] > LAYERS[a] or (a in COMPONENTS and b in COMPONENTS)
    ]
    assert not bad, bad


def test_no_cycles_and_at_most_8_levels():
    graph = _imports()
    depth: dict[str, int] = {}

    def level(node: str, path: tuple[str, ...] = ()) -> int:
        assert node not in path, f"import cycle: {' -> '.join((*path, node))}"
        if node not in depth:
            depth[node] = 1 + max((level(d, (*path, node)) for d in graph.get(node, ())), default=-1)
        return depth[node]

    assert max(level(n) for n in LAYERS) + 1 <= 8
