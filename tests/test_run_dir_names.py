"""The run folder's layout has one owner: each file name of a run folder is written as a literal in exactly one
module of the package (delving/experiment/rundir/run_dir.py); every other module asks RunDir for the path."""

from __future__ import annotations

import ast
from pathlib import Path

from delving.experiment.rundir.run_dir import RunDir

PACKAGE = Path(__file__).resolve().parent.parent / "delving"
# File names that are ordinary words elsewhere too (job_type="eval", a "lock" in prose): only their path forms
# ("eval/x.json", "checkpoints/last.ckpt") count as literals of the run folder.
WORDS = {RunDir.CHECKPOINTS, RunDir.CSV, RunDir.EVAL, RunDir.LOCK, RunDir.FINGERPRINT}
NAMES = [RunDir.CONFIG, RunDir.FINGERPRINT, RunDir.PROVENANCE, RunDir.RESULT, RunDir.LOCK, RunDir.WANDB_ID,
         RunDir.CHECKPOINTS, RunDir.LAST, RunDir.CSV, RunDir.METRICS, RunDir.SLOPES, RunDir.SLOPES_PLOT,
         RunDir.VARIANCE, RunDir.EVAL]


def _strings(tree: ast.AST) -> list[str]:
    """Every string constant of a module except docstrings (prose may name files)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


def names_in(text: str) -> set[str]:
    """The run-folder file names a string literal spells as a path (no spaces: not a message)."""
    found = set()
    for token in text.split():
        parts = token.strip("`'\"(),;:").split("/")
        for name in NAMES:
            if name in parts and (name not in WORDS or len([p for p in parts if p]) > 1):
                found.add(name)
    return found


def test_each_run_folder_file_name_is_a_literal_in_exactly_one_module():
    where: dict[str, set[str]] = {name: set() for name in NAMES}
    for path in PACKAGE.rglob("*.py"):
        for text in _strings(ast.parse(path.read_text())):
            for name in names_in(text):
                where[name].add(str(path.relative_to(PACKAGE)))
    owner = "experiment/rundir/run_dir.py"
    elsewhere = {name: sorted(modules - {owner}) for name, modules in where.items() if modules - {owner}}
    assert elsewhere == {}
    assert all(owner in where[name] for name in NAMES if name not in WORDS)  # the check does see the literals


def test_the_check_sees_a_literal_and_ignores_prose():
    assert names_in("runs/x/checkpoints/last.ckpt") == {RunDir.CHECKPOINTS, RunDir.LAST}
    assert names_in("csv/metrics.csv") == {RunDir.CSV, RunDir.METRICS} and names_in("result.json") == {RunDir.RESULT}
    assert names_in("eval") == set() and names_in("the run's lock") == set()
