"""dvc.yaml says what each stage depends on; these tests hold it to what the code really does."""
import ast
from pathlib import Path

import yaml

from charrnn.core.params import Params

REPO = Path(__file__).resolve().parent.parent
PIPELINE = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
# Imported by stages but never able to change what a stage writes: where runs are logged, how a
# stage ends, the memory check before it starts. Editing them must not re-run training; what they
# import counts only where an output-affecting module imports it too.
NOT_OUTPUT_AFFECTING = {"tracking", "core.stage", "core.errors", "core.redact", "core.quiet", "nn.memory", "nn.workers"}
PACKAGE = REPO / "src/charrnn"


def module_file(dotted: str) -> Path | None:
    """src/charrnn/<dotted as a path>.py, or a package's __init__.py, if it exists."""
    path = PACKAGE / (dotted.replace(".", "/") + ".py")
    face = PACKAGE / dotted.replace(".", "/") / "__init__.py"
    return path if path.is_file() else face if dotted and face.is_file() else None


def ignored(module: str) -> bool:
    """Whether editing `module` can never change an output (it is, or is inside, one of those)."""
    return any(module == m or module.startswith(m + ".") for m in NOT_OUTPUT_AFFECTING)


def charrnn_imports(path: Path) -> set[str]:
    """Modules of the charrnn package a file imports, anywhere in it (function-local imports
    too), as dotted names below charrnn: {"data.vocab", "core.files", ...}."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.removeprefix("charrnn.") for a in node.names if a.name.startswith("charrnn.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("charrnn"):
            module = node.module.removeprefix("charrnn").lstrip(".")
            for alias in node.names:  # `from charrnn.data import vocab` names a module
                found.add(f"{module}.{alias.name}".lstrip(".") if module_file(f"{module}.{alias.name}".lstrip("."))
                          else module)
    assert not any(node.level for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.ImportFrom)), f"{path}: relative imports are not read here"
    return {m for m in found if module_file(m)}


def closure(stage_script: Path) -> set[str]:
    """The output-affecting modules a stage script reaches through imports."""
    todo, seen = {m for m in charrnn_imports(stage_script) if not ignored(m)}, set()
    while todo:
        module = todo.pop()
        seen.add(module)
        todo |= {m for m in charrnn_imports(module_file(module)) - seen if not ignored(m)}
    if any(runs_tensorflow(module_file(m)) for m in seen):
        seen.add("core.isa")  # charrnn/__init__ pins the CPU kernels before TensorFlow loads: they decide its bytes
    return {m for m in seen if (PACKAGE / (m.replace(".", "/") + ".py")).is_file()}  # a package's face is no dep


def runs_tensorflow(path: Path) -> bool:
    return any(isinstance(node, ast.Import) and any(a.name == "tensorflow" for a in node.names)
               for node in ast.walk(ast.parse(path.read_text())))


def test_every_stage_depends_on_exactly_the_modules_it_imports():
    for name, stage in PIPELINE.items():
        script = REPO / "stages" / f"{name}.py"
        declared = {d.removeprefix("src/charrnn/").removesuffix(".py").replace("/", ".")
                    for d in stage["deps"] if d.startswith("src/charrnn/")}
        assert f"stages/{name}.py" in stage["deps"], name
        assert declared == closure(script), f"stage {name}: dvc.yaml deps vs imports"


def test_params_listed_exist():
    flat = Params.load(REPO / "params.yaml").flat()
    sections = {key.split(".")[0] for key in flat}
    for name, stage in PIPELINE.items():
        for key in stage.get("params", []):
            assert key in flat or key in sections, f"stage {name}: unknown param {key}"
