"""The house's rules, read from the code's own imports (``ast``), so a wrong arrow fails CI.

- ``medcrowd`` (the app layer: CLI, file I/O, Label Studio) may import every engine;
- ``ml_backend``, ``gan`` and ``segmenter`` may import only ``fusion.metrics`` of ours;
- ``fusion`` imports nothing of ours;
- no import cycle between modules (imports inside functions count: a lazy import hides a
  cycle from the interpreter, not from the design);
- no test module imports another test module: shared helpers live in ``tests/helpers.py``
  (the one support module) or in fixtures of a ``conftest.py``.

Every import is read, top-level or inside a function, ``TYPE_CHECKING`` blocks included. An
edge that breaks a rule but must stay is listed in ``ALLOWED`` with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("medcrowd", "ml_backend", "fusion", "gan", "segmenter")
ENGINES = ("ml_backend", "gan", "segmenter")

# (importing module prefix, imported module prefix) -> why the edge must stay
ALLOWED: dict[tuple[str, str], str] = {
    ("ml_backend.draft", "segmenter"): (
        "the backend serves a trained segmenter as prompt-free drafts (backend serve "
        "--draft-model); each backend worker process loads it itself, so ml_backend needs "
        "segmenter's model loader (lazily, only when a draft model is configured)"
    ),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(*roots: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            if "migrations" in path.parts:
                continue  # Django migrations are generated, and import only Django
            out[_module_name(path)] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    """Every module named by an import statement in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # ``from pkg import module`` names a module too
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _ours(name: str, known: dict[str, Path]) -> str | None:
    """The module of ours that ``name`` refers to (longest known prefix), else None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def _graph() -> dict[str, set[str]]:
    known = _modules(*PACKAGES)
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        targets = {_ours(name, known) for name in _imports(path, module)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def _top(module: str) -> str:
    return module.split(".")[0]


def _allowed(src: str, dst: str) -> bool:
    return any(
        (src == a or src.startswith(a + ".")) and (dst == b or dst.startswith(b + "."))
        for a, b in ALLOWED
    )


def _violation(src: str, dst: str) -> str | None:
    s, d = _top(src), _top(dst)
    if s == d:
        return None
    if s == "medcrowd":
        return None  # the app layer may use every engine
    if s == "fusion":
        return f"fusion imports nothing of ours: {src} -> {dst}"
    if s in ENGINES and dst != "fusion.metrics" and not dst.startswith("fusion.metrics."):
        return f"{s} may import only fusion.metrics of ours: {src} -> {dst}"
    return None


def test_the_graph_is_read() -> None:
    # the reader itself must see known arrows, or every rule below would pass vacuously
    graph = _graph()
    assert "medcrowd.cli" in graph and "fusion" in graph
    assert any(_top(d) == "fusion" for d in graph["medcrowd.fuse"])
    assert len(graph) > 60


def test_import_directions() -> None:
    graph = _graph()
    bad = sorted(
        msg
        for src, targets in graph.items()
        for dst in targets
        if (msg := _violation(src, dst)) is not None and not _allowed(src, dst)
    )
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_allowed_edges_still_exist() -> None:
    """An exception that is no longer needed must be removed from ALLOWED."""
    graph = _graph()
    for a, b in ALLOWED:
        assert any(
            (s == a or s.startswith(a + ".")) and any(d == b or d.startswith(b + ".") for d in t)
            for s, t in graph.items()
        ), f"ALLOWED lists {a} -> {b}, which no longer exists: remove it"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative-safe)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` re-exports its modules; importing ``pkg.mod`` runs it first,
    which is not a design arrow from the module back to its package's surface."""
    out: dict[str, set[str]] = {}
    for src, targets in graph.items():
        keep = set()
        for dst in targets:
            if (REPO / Path(*dst.split(".")) / "__init__.py").exists() and src.startswith(
                dst + "."
            ):
                continue  # a module importing its own package's __init__
            keep.add(dst)
        out[src] = keep
    return out


def test_no_cycles() -> None:
    cycles = _cycles(_without_package_inits(_graph()))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    ("src", "dst", "bad"),
    [
        ("medcrowd.cli", "gan.pix2pix", False),
        ("gan.quality", "fusion.metrics", False),
        ("gan.quality", "segmenter.trainer", True),
        ("segmenter.sqa", "fusion.staple", True),
        ("fusion.staple", "fusion.metrics", False),
        ("fusion.staple", "ml_backend.rle", True),
        ("ml_backend.server", "medcrowd.studio", True),
    ],
)
def test_rules_themselves(src: str, dst: str, bad: bool) -> None:
    assert (_violation(src, dst) is not None) is bad


def test_no_test_imports_another_test_module() -> None:
    tests = _modules("tests")
    bad: set[str] = set()
    for module, path in tests.items():
        for name in _imports(path, module):
            if not name.startswith("tests"):
                continue
            target = _ours(name, tests)
            if target in (None, "tests", "tests.helpers", module):
                continue
            bad.add(f"{module} imports {target}")
    assert not bad, "tests import test modules (use tests/helpers.py or fixtures):\n" + "\n".join(
        sorted(bad)
    )
