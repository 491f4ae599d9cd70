"""The layout keeps its promises: data flows one way (sources -> schema -> conversion -> lake API,
ground below), no import cycles, no private names crossing modules, imports at the top."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tmass_lake"
LAYERS = {  # package or module -> what of ours it may import
    "storage": set(),
    "cluster": set(),
    "errors": set(),
    "schema": {"errors"},
    "readers": {"readers", "schema", "storage", "errors"},
    # lake: the light-curve collections are finished by the lake API's own join code (one piece of
    # code, so a stored collection equals the on-the-fly join); the lake API never imports convert
    "convert": {"convert", "readers", "schema", "storage", "cluster", "errors", "lake"},
    "lake": {"lake", "schema", "storage", "errors"},
    "mock": {"mock", "schema", "storage", "cluster", "errors"},
    "cli": {"cli", "convert", "readers", "lake", "mock", "schema", "storage", "cluster", "errors", "demo"},
    "demo": {"convert", "lake", "mock", "cluster", "schema", "storage", "errors"},
    "__init__": {"lake"},
    "__main__": {"cli"},
}
OPTIONAL_IMPORTS = {"hats_import"}  # the 'mock' extra: imported where needed, with a clear error
LAZY_LOADERS = {"tmass_lake", "tmass_lake.convert", "tmass_lake.cli"}
"""The only modules that load modules of ours by name (``importlib.import_module``), so that
``tmass-lake --help`` does not import lsdb and Dask: the two package ``__init__``s re-export their
names on first use (PEP 562), and the command line imports a subcommand's implementation when it
runs. Imports stay at the top everywhere; the modules named in strings (``"tmass_lake.x.y"``,
``"tmass_lake.cli.query:cmd_crossmatch"``) count as imports in the layer and cycle checks below."""


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def runtime_imports(tree: ast.Module) -> list[ast.ImportFrom | ast.Import]:
    """Module-level imports, leaving out ``if TYPE_CHECKING:`` blocks (annotations only)."""
    found = []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and not (isinstance(node.test, ast.Name)
                                               and node.test.id == "TYPE_CHECKING"):
            found += [n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)]
    return found


def targets(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        return [f"{base}.{node.module}" if node.module else base]
    return [node.module or ""]


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def named_modules(tree: ast.Module) -> set[str]:
    """Modules of ours named in string constants (``"tmass_lake.cli.query:cmd_crossmatch"``)."""
    names = {n.value.split(":")[0] for n in ast.walk(tree) if isinstance(n, ast.Constant)
             and isinstance(n.value, str) and n.value.startswith("tmass_lake.")}
    return {n for n in names if n in MODULES}


def loads_by_name(tree: ast.Module) -> bool:
    """Whether a module calls ``import_module``/``__import__`` (loads modules by name)."""
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            f = n.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in ("import_module", "__import__"):
                return True
    return False


def graph() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in runtime_imports(tree):
            for target in targets(node, package):
                if not target.startswith("tmass_lake"):
                    continue
                names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
                submodules = {f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES}
                deps |= submodules  # `from tmass_lake.x import y` where x.y is a module: it needs x.y
                if len(submodules) < len(names) or not names:
                    deps.add(target)
        deps |= named_modules(tree)
        # a module's own ancestors are always initialised first: not a dependency of its choosing
        out[name] = {d for d in deps if d in MODULES and d != name and not name.startswith(d + ".")}
    return out


def test_the_internal_import_graph_has_no_cycle():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(g[node]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node)


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_layers_import_only_what_is_below_them():
    wrong = []
    for module, deps in graph().items():
        allowed = LAYERS[layer(module)]
        for dep in deps:
            if dep != "tmass_lake" and layer(dep) not in allowed:
                wrong.append(f"{module} imports {dep}")
            if dep == "tmass_lake" and layer(module) != "__init__":
                wrong.append(f"{module} imports the top-level package")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_private_name_crosses_a_module():
    wrong = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tmass_lake"):
                wrong += [f"{name}: from {node.module} import {a.name}" for a in node.names
                          if a.name.startswith("_")]
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id not in ("self", "cls") and owner.id[0].islower() \
                        and owner.id in {"lake", "args", "plan", "client", "spec"}:
                    wrong.append(f"{name}: {owner.id}.{node.attr}")
    assert not wrong, "\n".join(wrong)


def test_imports_are_at_the_top_of_modules():
    inner = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        top = set(map(id, runtime_imports(tree)))
        checking = {id(n) for node in tree.body if isinstance(node, ast.If)
                    for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top | checking:
                roots = {t.split(".")[0] for t in targets(node, name)}
                if not roots <= OPTIONAL_IMPORTS:
                    inner.append(f"{name}:{node.lineno} imports {', '.join(sorted(roots))} inside a block")
    assert not inner, "\n".join(inner)


def test_deprecations_raised_from_our_code_fail_the_tests():
    """pyproject's filterwarnings: a deprecation attributed to tmass_lake is an error, others are not."""
    with pytest.raises(DeprecationWarning):
        warnings.warn_explicit("an old API", DeprecationWarning, "api.py", 1, module="tmass_lake.lake.api")
    with pytest.raises(FutureWarning):
        warnings.warn_explicit("an old API", FutureWarning, "api.py", 1, module="tmass_lake.convert.writer")
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn_explicit("an old API", DeprecationWarning, "x.py", 1, module="somebody_else")
    assert len(seen) == 1


def test_only_the_lazy_loaders_load_modules_by_name():
    loaders = {name for name, path in MODULES.items() if loads_by_name(ast.parse(path.read_text()))}
    assert loaders <= LAZY_LOADERS, f"modules loading modules by name: {sorted(loaders - LAZY_LOADERS)}"


def test_lazy_loaders_name_only_modules_that_exist():
    """A misspelt lazy target would only fail when used: every ``tmass_lake.`` string in a lazy
    loader (and in the command-line parsers, which name each subcommand's module) is a module."""
    for name in [*LAZY_LOADERS, "tmass_lake.cli.parsers"]:
        tree = ast.parse(MODULES[name].read_text())
        named = {n.value.split(":")[0] for n in ast.walk(tree) if isinstance(n, ast.Constant)
                 and isinstance(n.value, str) and n.value.startswith("tmass_lake.")}
        packaged = {"tmass_lake.pipelines", "tmass_lake.schemas"}  # data packages (TOML, YAML)
        assert named <= set(MODULES) | packaged, (name, named - set(MODULES))
