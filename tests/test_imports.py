"""Imports flow one way: the graph of our modules' imports, those inside functions included, has
no cycle (an import moved into a function to dodge a circle is a circle all the same)."""

import ast
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("finetune", "baselines")


def our_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of our packages."""
    modules = {}
    for package in PACKAGES:
        for path in (PROJECT_ROOT / package).rglob("*.py"):
            parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that `module` imports anywhere in its file (`from package import submodule`
    counts as the submodule, `from module import name` as the module)."""

    def ours(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {ours(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}".strip(".")
            found |= {
                ours(f"{base}.{alias.name}") if f"{base}.{alias.name}" in modules else ours(base)
                for alias in node.names
            }
    return found - {None, module}


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_our_imports_have_no_cycle():
    modules = our_modules()
    assert {"finetune.run", "finetune.models", "finetune.bundle", "baselines.loading"} <= set(modules)
    graph = {name: imported(name, path, modules) for name, path in modules.items()}
    assert "finetune.bundle" in graph["baselines.loading"]  # the graph sees our imports
    assert cycle_in(graph) is None, " -> ".join(cycle_in(graph))


def test_the_shared_builder_pieces_import_nothing_of_ours():
    modules = our_modules()
    assert imported("finetune.bundle", modules["finetune.bundle"], modules) == set()
    assert imported("finetune.recipe", modules["finetune.recipe"], modules) == set()


# datasets' public modules: the package itself and `datasets.distributed` (split_dataset_by_node)
PUBLIC_DATASETS_MODULES = {"datasets", "datasets.distributed"}


def test_only_public_datasets_apis_are_used():
    """No import from datasets' internals (`datasets.iterable_dataset` ...): they change without notice."""
    private = []
    for module, path in our_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            private += [
                f"{module}: {name}"
                for name in names
                if name and name.split(".")[0] == "datasets" and name not in PUBLIC_DATASETS_MODULES
            ]
    assert not private, private


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_scoring_never_imports_the_trainer():
    """predict, the probe and the studies' scorer need the machine's device and workers, the collator
    and the task loss, all in low modules: none of them pulls in the Trainer (finetune.training)."""
    modules = our_modules()
    graph = {name: imported(name, path, modules) for name, path in modules.items()}
    assert "finetune.training" in reachable(graph, "finetune.run")  # the graph sees the trainer where it is used
    for module in ("finetune.predict", "finetune.probe", "finetune.scoring"):
        assert "finetune.training" not in reachable(graph, module), module


def test_statistics_load_no_torch():
    """The statistics and the predictions they read (`finetune.stats`, `TrackPredictions`) import
    without torch, so a notebook or a script testing two prediction files stays light."""
    code = (
        "import sys; import finetune.stats.bootstrap, finetune.stats.paired; "
        "from finetune.evaluation import TrackPredictions; "
        "loaded = sorted(m for m in ('torch', 'transformers') if m in sys.modules); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_ROOT)
