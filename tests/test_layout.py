"""The layout is the architecture: imports point one way (cli -> studies -> experiment -> {models -> nn, data} ->
ground), the README's layout table is the package's folder tree, the README stays short and speaks of the project
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
    tree = {f"delving/{p.name}/" if p.is_dir() else f"delving/{p.name}" for p in PACKAGE.iterdir()
            if p.name != "__pycache__" and (p.is_dir() and (p / "__init__.py").exists() or p.suffix == ".py")}
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
