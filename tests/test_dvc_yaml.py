"""dvc.yaml says what each stage depends on; these tests hold it to what the code really does."""
import ast
from pathlib import Path

import yaml

from charrnn.params import Params

REPO = Path(__file__).resolve().parent.parent
PIPELINE = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
# Imported by stages but never able to change what a stage writes: where runs are logged, how a
# stage ends, the memory check before it starts. Editing them must not re-run training; what they
# import counts only where an output-affecting module imports it too.
NOT_OUTPUT_AFFECTING = {"tracking", "registry", "publish", "provenance", "stage", "errors", "redact", "quiet",
                        "resources"}


def charrnn_imports(path: Path) -> set[str]:
    """Modules of the charrnn package a file imports, anywhere in it (function-local imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("charrnn.")}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1:  # inside the package: `from . import x`, `from .x import y`
                found |= {module.split(".")[0]} if module else {a.name for a in node.names}
            elif module == "charrnn":
                found |= {a.name for a in node.names}
            elif module.startswith("charrnn."):
                found.add(module.split(".")[1])
    return {m for m in found if (REPO / "src/charrnn" / f"{m}.py").exists()}


def closure(stage_script: Path) -> set[str]:
    """The output-affecting modules a stage script reaches through imports."""
    todo, seen = set(charrnn_imports(stage_script)) - NOT_OUTPUT_AFFECTING, set()
    while todo:
        module = todo.pop()
        seen.add(module)
        todo |= charrnn_imports(REPO / "src/charrnn" / f"{module}.py") - seen - NOT_OUTPUT_AFFECTING
    return seen


def test_every_stage_depends_on_exactly_the_modules_it_imports():
    for name, stage in PIPELINE.items():
        script = REPO / "stages" / f"{name}.py"
        declared = {Path(d).stem for d in stage["deps"] if d.startswith("src/charrnn/")}
        assert f"stages/{name}.py" in stage["deps"], name
        assert declared == closure(script), f"stage {name}: dvc.yaml deps vs imports"


def test_params_listed_exist():
    flat = Params.load(REPO / "params.yaml").flat()
    sections = {key.split(".")[0] for key in flat}
    for name, stage in PIPELINE.items():
        for key in stage.get("params", []):
            assert key in flat or key in sections, f"stage {name}: unknown param {key}"
