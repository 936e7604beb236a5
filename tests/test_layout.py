"""The layout is the architecture: imports point one way (cli -> studies -> experiment -> {models -> nn, data} ->
ground; inside experiment, its rooms rundir <- training <- {sweeps, evaluation}), no import circle anywhere in the
package, the README's layout table is the package's folder tree, the README stays short and speaks of the project
alone, and ``delving --help`` answers without importing torch."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "delving"
GROUND = {"errors", "paper_values", "plots", "cpus"}  # ground-level modules: import nothing of delving
FACES = {"cli", "__main__", "__init__"}  # the command and the package root (which registers models lazily)
# What each layer may import of delving (itself always), per design.md: data may not import models, the system or
# W&B; the science core (nn, models) uses neither Lightning, W&B, FFCV nor OmegaConf.
ALLOWED = {
    "ground": set(),
    "nn": {"ground"},
    "models": {"nn", "ground"},
    "data": {"ground"},
    "experiment": {"models", "nn", "data", "ground"},
    "studies": {"experiment", "models", "nn", "data", "ground"},
}
# The experiment layer's rooms, bottom to top: a room imports itself and the rooms of a lower rank only.
EXPERIMENT_ROOMS = {"rundir": 0, "training": 1, "sweeps": 2, "evaluation": 2}
FORBIDDEN_LIBRARIES = {
    "nn": {"lightning", "wandb", "ffcv", "omegaconf"},
    "models": {"lightning", "wandb", "ffcv", "omegaconf"},
    "data": {"wandb"},
    "ground": {"lightning", "wandb", "ffcv", "omegaconf"},
}
# Words of a lab notebook rather than of a project: issue numbers and the history of the work.
PROCESS_WORDS = re.compile(
    r"issue\s*#?\s*\d|#\d+\b|\bsessions?\b|\bstop\s*\d|this round|re-?measured|\bhelpers?\b(?! (cell|function))|"
    r"earlier (runs|sessions|recipes|versions)|last session|\bwas (now|later) |before the fix|previous version",
    re.IGNORECASE)


def layer_of(module: str) -> str:
    """The layer of a dotted module name inside delving (``delving.nn.init`` -> ``nn``)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "faces"
    head = parts[1]
    if head in GROUND:
        return "ground"
    if head in FACES:
        return "faces"
    return head


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1 and path.parent != PACKAGE:
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` (a file of the package) imports; see :func:`imports_in`."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    return imports_in(path.read_text(), package)


def imports_in(source: str, package: str) -> set[str]:
    """Every module ``source`` imports, at the top or inside a function, including
    ``importlib.import_module("...")`` with a literal name; relative imports resolved against ``package``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from delving import models` imports the submodule delving.models
            found.update(f"{base}.{alias.name}" for alias in node.names if base == "delving")
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) ==
              "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(str(node.args[0].value))
    return found


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_import_parser_sees_relative_lazy_and_function_level_imports():
    source = ("import importlib\nfrom .moments import x\nfrom .. import errors\nfrom delving import studies\n"
              "def f():\n    import wandb\nimportlib.import_module('delving.data.ffcv')\n")
    assert imports_in(source, "delving.nn") == {"importlib", "delving.nn.moments", "delving", "delving.errors", "wandb",
                                                "delving.studies", "delving.data.ffcv"}
    assert layer_of("delving.nn.moments") == "nn" and layer_of("delving.plots") == "ground"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_layers(path):
    layer = layer_of(module_name(path))
    if layer == "faces":
        return  # the CLI and the package root may import anything
    assert layer in ALLOWED, f"{path}: a folder the layer rules do not know ({layer}); add it to ALLOWED"
    wrong = []
    for name in imported_modules(path):
        top = name.split(".")[0]
        if name == "delving":
            continue  # the package root (lazy: it imports nothing of its layers itself)
        if top == "delving":
            target = layer_of(name)
            if target != layer and target not in ALLOWED[layer]:
                wrong.append(f"{name} ({target})")
        elif top in FORBIDDEN_LIBRARIES.get(layer, ()):
            wrong.append(name)
    assert not wrong, f"{path.relative_to(ROOT)} ({layer}) imports {', '.join(sorted(wrong))}"


def room_of(module: str) -> str | None:
    """The experiment room of a dotted module name (``delving.experiment.training.fit`` -> ``training``)."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "experiment" else None


EXPERIMENT_MODULES = [p for p in modules() if module_name(p).startswith("delving.experiment.")]


@pytest.mark.parametrize("path", EXPERIMENT_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_experiment_rooms_import_down(path):
    room = room_of(module_name(path))
    assert room in EXPERIMENT_ROOMS, f"{path}: outside the experiment rooms {sorted(EXPERIMENT_ROOMS)}"
    wrong = sorted(name for name in imported_modules(path) if room_of(name) and room_of(name) != room
                   and EXPERIMENT_ROOMS.get(room_of(name), 99) >= EXPERIMENT_ROOMS[room])
    assert not wrong, f"{path.relative_to(ROOT)} ({room}) imports {', '.join(wrong)} (a room at or above its own)"


def import_graph() -> dict[str, set[str]]:
    """Package module -> the package modules it imports (top level or inside functions). ``from pkg import name``
    points at the submodule ``pkg.name`` when there is one, else at ``pkg``; the package root is left out (it
    imports its layers lazily, on attribute access)."""
    known = {module_name(p): p for p in modules()}
    graph = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for target in targets:
                while target and target not in known:  # `import a.b.c` of a module inside a package
                    target = target.rpartition(".")[0]
                if target and target != "delving" and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm), each sorted."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
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
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_the_circle_finder_finds_a_circle_through_a_function_level_import():
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
    circles = import_circles(import_graph())
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def readme_layout_rows() -> dict[str, str]:
    """The README's layout table: first-column path -> the rest of its row."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*`(delving/[^`]*)`\s*\|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_readme_layout_table_is_the_package_tree():
    rows = readme_layout_rows()
    packages = {f"{p.parent.relative_to(ROOT)}/" for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE}
    tree = packages | {f"delving/{p.name}" for p in PACKAGE.glob("*.py")}
    assert set(rows) == tree, f"missing from the README: {tree - set(rows)}; not in the tree: {set(rows) - tree}"
    for folder in (p for p in tree if p.endswith("/")):  # a subpackage's row names each of its modules
        stems = {p.stem for p in (ROOT / folder).glob("*.py") if p.stem != "__init__"}
        missing = {s for s in stems if not re.search(rf"\b{s}\b", rows[folder])}
        assert not missing, f"README layout row {folder} does not name {sorted(missing)}"


def documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "reports").glob("*.md"))]


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move details to docs/"


def test_process_word_check_catches_a_history_note():
    for note in ("measured in session 3", "issue 6: at most 3%", "see #12", "stop 4 re-measured it",
                 "re-measured after the fix", "in earlier sessions"):
        assert PROCESS_WORDS.search(note), note
    assert not PROCESS_WORDS.search("Measured on the 2-core CPU with `make bench` (fused SGD, 2 threads)")


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_speak_of_the_project_not_of_its_history(path):
    assert path.exists(), path
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}" for n, line in
            enumerate(path.read_text().splitlines(), 1) if PROCESS_WORDS.search(line)]
    assert not hits, "\n".join(hits)


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text()
    targets = {t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith("http")}
    missing = sorted(t for t in targets if t and not (ROOT / t).exists())
    assert not missing, f"README links to missing files: {missing}"


def test_help_does_not_import_torch():
    code = ("import sys\nfrom delving.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'timm', 'lightning', 'wandb') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: delving" in proc.stdout and proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-300:]
