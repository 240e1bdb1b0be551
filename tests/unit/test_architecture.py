"""The package tree reads as the architecture (docs/architecture.md): each subpackage imports
only from its own level or below, and no pipeline layer imports another."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "iot_lakehouse"
# Lower levels never import higher ones; "core" is the package's own top-level modules.
LEVELS = {
    "core": 0,
    "runtime": 1,
    "pipeline": 2,
    "ops": 3,
    "sources": 3,
    "interfaces": 4,
    "benchmarks": 4,
}
ENTRY_POINT = "iot_lakehouse.__main__"  # `python -m iot_lakehouse`: the CLI, by definition
LAYERS = {"bronze", "silver", "gold", "alerts", "serving"}  # modules of pipeline/


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every iot_lakehouse module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("iot_lakehouse")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("iot_lakehouse"):
            module = str(node.module)
            if module.count(".") <= 1 and (module == "iot_lakehouse" or module[14:] in LEVELS):
                found |= {f"{module}.{a.name}" for a in node.names}  # from pkg import module
            else:
                found.add(module)
    return found


def group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LEVELS else "core"


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_every_module_sits_in_a_known_subpackage() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders == set(LEVELS) - {"core"}, f"add {folders - set(LEVELS)} to LEVELS and docs"


def test_no_subpackage_imports_from_a_higher_level() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if module != ENTRY_POINT and LEVELS[group(target)] > LEVELS[group(module)]
    )
    assert not upward, "imports against docs/architecture.md's levels:\n" + "\n".join(upward)


def test_no_pipeline_layer_imports_another() -> None:
    layer_modules = {f"iot_lakehouse.pipeline.{name}" for name in LAYERS}
    crossing = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        if module in layer_modules
        for target in targets
        if target in layer_modules - {module}
    )
    assert not crossing, "layers share code through pipeline/streaming etc.:\n" + "\n".join(
        crossing
    )


def test_the_rules_see_a_violation() -> None:
    """The graph is real: the CLI imports the jobs, a layer imports the stream starter."""
    graph = import_graph()
    assert "iot_lakehouse.pipeline.jobs" in graph["iot_lakehouse.interfaces.cli"]
    assert "iot_lakehouse.pipeline.streaming" in graph["iot_lakehouse.pipeline.silver"]
    assert LEVELS[group("iot_lakehouse.interfaces.cli")] > LEVELS[group("iot_lakehouse.settings")]
