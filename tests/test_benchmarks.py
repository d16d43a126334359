"""The benchmarks (benchmarks/*.py) and measuring scripts (scripts/*.py) without running them: each
imports without running (a ``__main__`` guard), answers ``--help``, and every name it takes from
mapper exists there: what it imports (at the top or inside a function, where only a run would
find it missing), the attributes it reads off a mapper module, and the functions it wraps or
patches (``setattr``, ``timer.wrap(module, "name", ...)``). A rename in mapper fails here, not
at the end of a benchmark's long run (bench_stack once wrapped ``mapper.stack._mosaic``, gone)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "scripts").glob("*.py")])
PATCHERS = {"setattr", "wrap"}
"""Calls ``f(target, "name", ...)`` that replace ``target.name``: ``setattr``,
``monkeypatch.setattr`` and the benchmarks' timers' ``wrap``."""


@pytest.fixture(scope="module")
def modules() -> dict[Path, ModuleType]:
    """Every file imported as a module (its main not run); sys.path and sys.modules as they were
    afterwards, but for the modules imported on the way (torch and the like)."""
    path, names = list(sys.path), set(sys.modules)
    sys.path.insert(0, str(ROOT / "benchmarks"))  # as when a benchmark runs: cli_errors, _common
    loaded = {}
    try:
        for file in FILES:
            spec = importlib.util.spec_from_file_location(file.stem, file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses look their module up there
            spec.loader.exec_module(module)
            loaded[file] = module
        yield loaded
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - names:
            if name.split(".")[0] in {f.stem for f in FILES}:
                del sys.modules[name]


def test_each_imports_without_running_and_has_a_main_guard(
    modules: dict[Path, ModuleType],
) -> None:
    for file, module in modules.items():
        tree = ast.parse(file.read_text())
        guarded = any(isinstance(node, ast.If)
                      and ast.unparse(node.test) == "__name__ == '__main__'"
                      for node in tree.body)
        assert guarded == hasattr(module, "main"), f"{file.name}: main without a __main__ guard"


@pytest.mark.parametrize("file", [f for f in FILES if "def main(" in f.read_text()],
                         ids=lambda f: f"{f.parent.name}/{f.name}")
def test_each_answers_help(file: Path, modules: dict[Path, ModuleType],
                           monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", [str(file), "--help"])
    with pytest.raises(SystemExit) as done:
        modules[file].main()
    assert done.value.code in (0, None)
    assert capsys.readouterr().out.startswith("usage: ")


def mapper_names(source: str) -> list[tuple[int, str, str]]:
    """(line, mapper object, name) for every name ``source`` takes from mapper: ``from mapper.x
    import name`` anywhere, ``alias.name`` where ``alias`` is bound by an import to a mapper
    module, and the target of a patcher call (:data:`PATCHERS`) on such a module with a literal
    name. The mapper object is a dotted path (``mapper.stack``)."""
    tree = ast.parse(source)
    bound: dict[str, str] = {}  # local name -> dotted mapper path
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "mapper":
                    bound[a.asname or "mapper"] = a.name if a.asname else "mapper"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mapper":
            for a in node.names:
                found.append((node.lineno, node.module, a.name))
                bound[a.asname or a.name] = f"{node.module}.{a.name}"

    def dotted(node: ast.expr) -> str | None:
        """The mapper path an expression names (``stack_mod`` -> ``mapper.stack``), or None."""
        if isinstance(node, ast.Name):
            return bound.get(node.id)
        if isinstance(node, ast.Attribute):
            base = dotted(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = dotted(node.value)
            if base is not None:
                found.append((node.lineno, base, node.attr))
        elif isinstance(node, ast.Call) and len(node.args) >= 2:
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            name = node.args[1]
            target = dotted(node.args[0])
            if (called in PATCHERS and target is not None and isinstance(name, ast.Constant)
                    and isinstance(name.value, str)):
                found.append((node.lineno, target, name.value))
    return found


def resolve(path: str) -> object:
    """The object a dotted mapper path names: modules imported, then attributes."""
    parts = path.split(".")
    obj: object = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=2):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[:i]))
    return obj


def missing_names(source: str) -> list[str]:
    """``line: mapper.x.name`` for each name of :func:`mapper_names` that mapper lacks. Only
    modules are looked into (an attribute of a class or a value is the code's own business)."""
    out = []
    for line, owner, name in mapper_names(source):
        try:
            obj = resolve(owner)
        except (ImportError, AttributeError):
            out.append(f"{line}: {owner}")
            continue
        if isinstance(obj, ModuleType) and not hasattr(obj, name):
            try:
                importlib.import_module(f"{owner}.{name}")  # a submodule not yet imported
            except ImportError:
                out.append(f"{line}: {owner}.{name}")
    return list(dict.fromkeys(out))  # a missing module attribute is seen as owner and as name


def test_the_check_finds_a_wrapped_function_that_mapper_no_longer_has() -> None:
    source = (
        "from mapper import stack as stack_mod\n"
        "import mapper.config\n"
        "def main():\n"
        "    from mapper.train import model_config, no_such_function\n"
        "    timer.wrap(stack_mod, '_mosaic', 'sentinel-2 warp')\n"
        "    timer.wrap(stack_mod, 'mosaic', 'sentinel-2 warp')\n"
        "    mapper.config._tiles_cached.cache_clear()\n"
        "    mapper.config._gone_cached.cache_clear()\n"
    )
    assert missing_names(source) == ["4: mapper.train.no_such_function", "5: mapper.stack._mosaic",
                                     "8: mapper.config._gone_cached"]


@pytest.mark.parametrize("file", FILES, ids=lambda f: f"{f.parent.name}/{f.name}")
def test_every_name_taken_from_mapper_exists(file: Path) -> None:
    assert missing_names(file.read_text()) == [], file.name


def test_the_wraps_and_patches_of_the_benchmarks_are_seen() -> None:
    """The check above sees what bench_stack wraps and what bench_dag clears (else it would pass
    on nothing)."""
    stack = mapper_names((ROOT / "benchmarks/bench_stack.py").read_text())
    assert {("mapper.stack", n) for n in ("mosaic", "local_terrain", "hydro_terrain")} <= {
        (owner, name) for _, owner, name in stack}
    dag = mapper_names((ROOT / "benchmarks/bench_dag.py").read_text())
    assert ("mapper.config", "_tiles_cached") in {(owner, name) for _, owner, name in dag}
