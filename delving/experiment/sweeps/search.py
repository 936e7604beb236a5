"""A search's proposals (``method: random`` or ``bayes``): the one file of the sweep folder that lists them,
``<sweep folder>/search.json``, written and read here only.

Each proposal is appended, under the sweep folder's lock, before its run starts, so a search run again (after a kill
too) resumes the proposals it has and never proposes a run twice. The file records the search's seed and what it
searches (method, searched parameters, metric): a sweep file changed in those, or another ``--seed``, is another
search, refused in one line rather than mixed into this one.

The seed: ``--seed`` if given, else the one the folder's search was started with, else a hash of the sweep's name
(W&B's schema admits no seed key in the file, and the same name gives the same search on every machine). Proposal
k is drawn from (seed, k) alone (:func:`delving.experiment.sweeps.engine.propose`).

A proposal's folder: ``run-007,lr=0.0123,depth=9``: its index (unique), then its searched values by
:func:`delving.experiment.sweeps.grid.cell_name`, numbers to 3 significant digits (readable; the index keeps
names apart, the run's config.yaml keeps the exact values).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from delving.errors import DelvingError
from delving.experiment.rundir.run_dir import filesystem_error, replacing
from delving.experiment.sweeps import engine
from delving.experiment.sweeps.grid import Sweep, cell_name

FILE = "search.json"
DIGITS = 3  # significant digits of a number in a folder name


@dataclass(frozen=True)
class Proposal:
    index: int
    name: str
    values: dict


def run_name(tag: str, values: dict) -> str:
    """``run-<tag>,<key>=<value>,...``: a proposal's folder name (tag: its index locally, the W&B run id under
    ``wandb agent``)."""
    rounded = {key: _rounded(value) for key, value in values.items()}
    return f"run-{tag}," + cell_name(rounded) if rounded else f"run-{tag}"


def _rounded(value):
    if isinstance(value, float):
        return float(f"{value:.{DIGITS}g}")
    return value


def default_seed(name: str) -> int:
    """The seed of a search started without ``--seed``: a 32-bit hash of the sweep's name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")


def what_it_searches(sweep: Sweep) -> dict:
    """The part of the file that makes the proposals: change it and the search is another one."""
    out = {"method": sweep.method, "space": sweep.space}
    if sweep.method == "bayes":
        out["metric"] = sweep.raw.get("metric")
    return out


class Search:
    """The proposals of one sweep folder's search, and the making of the next one."""

    def __init__(self, sweep: Sweep, folder: Path, seed: int, proposals: list[Proposal]):
        self.sweep, self.folder, self.seed, self.proposals = sweep, Path(folder), seed, proposals

    @property
    def path(self) -> Path:
        return self.folder / FILE

    @classmethod
    def open(cls, sweep: Sweep, folder: str | Path, seed: int | None = None) -> "Search":
        """The folder's search, or a new one (nothing is written until the first proposal)."""
        folder = Path(folder)
        stored = _read(folder / FILE)
        if stored is None:
            return cls(sweep, folder, default_seed(sweep.name) if seed is None else seed, [])
        if stored.get("searches") != _jsonable(what_it_searches(sweep)):
            raise DelvingError(f"sweep folder {folder} holds a search of another file ({FILE}: method, searched "
                               f"parameters or metric differ); choose another --out, or delete {folder / FILE} "
                               f"and the runs it proposed to start again")
        if seed is not None and seed != stored["seed"]:
            raise DelvingError(f"--seed {seed} is not this folder's search (started with seed {stored['seed']}, "
                               f"{folder / FILE}); valid: --seed {stored['seed']} or no --seed, or another --out")
        return cls(sweep, folder, stored["seed"], [Proposal(**p) for p in stored["proposals"]])

    def propose(self, trials: list[engine.Trial]) -> Proposal:
        """The next proposal (``trials``: the runs so far, for bayes), appended to the file before it is returned.

        Under the sweep folder's lock, re-reading the file first: two processes searching one folder each add their
        own proposal, never the same index twice."""
        with _folder_lock(self.folder):
            stored = _read(self.path)
            if stored is not None:
                self.proposals = [Proposal(**p) for p in stored["proposals"]]
            index = len(self.proposals)
            try:
                values = engine.propose(self.sweep.raw, trials, self.seed, index)
            except DelvingError:
                raise
            except Exception as err:  # noqa: BLE001 - the engine's own failure, named in one line
                raise DelvingError(f"sweep {self.sweep.name}: W&B's engine could not propose run {index} "
                                   f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
            proposal = Proposal(index, run_name(f"{index:03d}", values), values)
            self.proposals.append(proposal)
            self._write()
        return proposal

    def _write(self) -> None:
        data = {"seed": self.seed, "engine": f"sweeps {engine.version()}",
                "searches": _jsonable(what_it_searches(self.sweep)),
                "proposals": [asdict(p) for p in self.proposals]}
        try:
            with replacing(self.path) as f:
                f.write(json.dumps(data, indent=2) + "\n")
        except OSError as err:
            raise filesystem_error(err, self.path) from None


def _jsonable(value):
    """As it reads back from JSON (tuples as lists), so a stored file compares equal to the sweep it came from."""
    return json.loads(json.dumps(value, default=str))


def _read(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        data["seed"] = int(data["seed"])
        for proposal in data["proposals"]:
            Proposal(**proposal)  # every entry has exactly a proposal's fields
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise DelvingError(f"unreadable {path} ({type(err).__name__}: {err}); it lists the search's proposals: "
                           f"restore it, or delete it and the runs it proposed to start again") from None
    return data


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """An exclusive ``flock`` on the sweep folder itself (no extra file); the kernel drops it if the process dies."""
    import fcntl

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except OSError as err:
        raise filesystem_error(err, folder) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
