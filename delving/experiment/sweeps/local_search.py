"""``method: random`` and ``bayes`` run here, offline: W&B's engine proposes, the local runner trains.

``run_search`` first resumes the search's unfinished proposals (from their ``last.ckpt``), then asks W&B's engine
(:mod:`delving.experiment.sweeps.engine`) for new ones, each written to the sweep folder's proposals file
(:mod:`delving.experiment.sweeps.search`) before its run starts, until the file's ``run_cap`` runs exist or this
command has trained ``count`` (``--count``, as ``wandb agent --count``). A finished, diverged or pruned proposal is
never trained again. Bayes fits its Gaussian process to the metric of the runs that have ended (finished,
diverged, or pruned by hyperband, with the epochs they had) and steers away from those still running.

``jobs`` runs train at once (worker processes, as the grid's). Random proposals do not depend on it; bayes
proposals and hyperband's thresholds depend on which runs have ended when a proposal is made or a band is reached,
as with several W&B agents, so those default to one run at a time, which makes the whole search the same on every
run of the command.
"""

from __future__ import annotations

import math
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

from tqdm import tqdm

from delving.cpus import available_cpus
from delving.errors import DelvingError
from delving.experiment.rundir.run_dir import RunDir, filesystem_error
from delving.experiment.sweeps import engine
from delving.experiment.sweeps.grid import Sweep, cell_config
from delving.experiment.sweeps.local import _setup, check_cells, guarded, is_done, report, runner, stop_pool
from delving.experiment.sweeps.local import worker_pool
from delving.experiment.sweeps.pruning import Hyperband, PRUNED, metric_history
from delving.experiment.sweeps.search import Proposal, Search
from delving.experiment.training.config import RunConfig

ENDED = ("finished", "diverged", PRUNED)


def run_search(sweep: Sweep, out_root: str | Path = "runs", jobs: int | None = None, count: int | None = None,
               seed: int | None = None) -> tuple[Path, int]:
    """Run the search offline; return the sweep's output folder and the number of runs that failed."""
    folder = Path(out_root) / sweep.name
    cap = sweep.raw.get("run_cap")
    if cap is None and count is None:
        raise DelvingError(f"sweep {sweep.path}: method {sweep.method} needs an end here: run_cap in the file or "
                           f"--count N (W&B would search until stopped)")
    search = Search.open(sweep, folder, seed)
    hyperband = Hyperband.of(sweep.raw, folder)
    state = _Loop(sweep, folder, search, hyperband, cap, count)
    check_cells([state.config(p) for p in search.proposals])  # their folders hold these runs, nothing else
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise filesystem_error(err, folder) from None
    _announce(state)
    deterministic = sweep.method == "bayes" or hyperband is not None
    jobs = jobs or (1 if deterministic else available_cpus())
    try:
        with tqdm(total=state.planned(), desc=f"sweep {sweep.name}", unit="run") as bar:
            (_one_at_a_time if jobs == 1 else _in_parallel)(state, jobs, bar)
    except KeyboardInterrupt:
        done = sum(state.ended(p) for p in search.proposals)
        raise KeyboardInterrupt(f"sweep {sweep.name}: {done} of {len(search.proposals)} proposed runs ended in "
                                f"{folder}; the runs under way keep their last checkpoint; run the same command again "
                                f"to resume the same search") from None
    if state.tally["locked"]:
        print(f"sweep {sweep.name}: {state.tally['locked']} run(s) skipped: another process is training them")
    return folder, state.tally["failed"]


class _Loop:
    """The search under way: which proposal to train next, and the trials the engine sees."""

    def __init__(self, sweep: Sweep, folder: Path, search: Search, hyperband, cap: int | None, count: int | None):
        self.sweep, self.folder, self.search, self.hyperband = sweep, folder, search, hyperband
        self.cap = math.inf if cap is None else cap
        self.budget = math.inf if count is None else count
        self.started, self.tried = 0, set()  # this command's runs; names tried (a failed run is not retried now)
        self.tally = {"failed": 0, "locked": 0}
        self._configs: dict[str, RunConfig] = {}  # merged once per proposal (a merge costs tens of ms)

    def config(self, proposal: Proposal) -> RunConfig:
        if proposal.name not in self._configs:
            self._configs[proposal.name] = cell_config(self.sweep, proposal.values, self.folder, name=proposal.name)
        return self._configs[proposal.name]

    def ended(self, proposal: Proposal) -> bool:
        return is_done(self.config(proposal))

    def planned(self) -> int | None:
        """Runs this command will train, for the progress bar (None: unknown)."""
        left = sum(not self.ended(p) for p in self.search.proposals)
        total = min(self.cap - len(self.search.proposals) + left, self.budget)
        return None if math.isinf(total) else max(0, int(total))

    def next(self, running: set[str]) -> RunConfig | None:
        """The next run to train: an unfinished proposal first, else a new one under the cap; None: no more."""
        if self.started >= self.budget:
            return None
        for proposal in self.search.proposals:
            if proposal.name not in self.tried and proposal.name not in running and not self.ended(proposal):
                return self._take(proposal)
        if len(self.search.proposals) >= self.cap:
            return None
        proposal = self.search.propose(self.trials(running))
        return self._take(proposal)

    def _take(self, proposal: Proposal) -> RunConfig:
        cfg = self.config(proposal)
        check_cells([cfg])  # the model builds, the folder holds no other run: before it trains
        self.started += 1
        self.tried.add(proposal.name)
        return cfg

    def trials(self, running: set[str]) -> list[engine.Trial]:
        """Every proposal as the engine sees it: ended (with the metric by epoch) or running."""
        metric = (self.sweep.raw.get("metric") or {}).get("name")
        out = []
        for p in self.search.proposals:
            run = RunDir(self.folder / p.name)
            state = engine.FINISHED if p.name not in running and self._ended(run) else engine.RUNNING
            history = metric_history(run, metric) if metric else []
            out.append(engine.Trial(p.name, p.values, state, history))
        return out

    @staticmethod
    def _ended(run: RunDir) -> bool:
        try:
            result = run.read_result()
        except DelvingError:
            return False
        return bool(result) and result.get("status") in ENDED


def _announce(state: _Loop) -> None:
    sweep, search = state.sweep, state.search
    done = sum(state.ended(p) for p in search.proposals)
    cap = "no run_cap" if math.isinf(state.cap) else f"run_cap {state.cap}"
    line = (f"sweep {sweep.name}: {sweep.method} search, seed {search.seed} (W&B engine sweeps {engine.version()}), "
            f"{cap}: {len(search.proposals)} proposed, {done} ended -> {state.folder}")
    if state.hyperband:
        line += f"; {hyperband_line(state.hyperband, cell_config(sweep, {}, state.folder, name='probe'))}"
    print(line)


def hyperband_line(hyperband: Hyperband, cfg: RunConfig) -> str:
    """``hyperband on val/err1, bands at epochs 1, 3, 9`` (the bands a run of ``cfg``'s max_epochs can reach)."""
    bands = hyperband.bands(cfg.trainer.max_epochs)
    return f"hyperband on {hyperband.metric}, bands at epochs {', '.join(map(str, bands)) or 'none'}"


def _one_at_a_time(state: _Loop, jobs: int, bar: tqdm) -> None:
    _setup(available_cpus())
    train = runner(state.hyperband)
    while (cfg := state.next(set())) is not None:
        report(bar, cfg, guarded(train, cfg), state.tally)


def _in_parallel(state: _Loop, jobs: int, bar: tqdm) -> None:
    """Keep ``jobs`` workers busy; each new proposal is made when a worker frees up (bayes sees the ended runs)."""
    train, threads = runner(state.hyperband), max(1, available_cpus() // jobs)
    pool = worker_pool(jobs, threads)
    running: dict = {}  # future -> config
    try:
        while True:
            while len(running) < jobs and (cfg := state.next({c.name for c in running.values()})) is not None:
                running[pool.submit(train, cfg)] = cfg
            if not running:
                return
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                report(bar, running.pop(future), guarded(future.result), state.tally)
    except BaseException:
        stop_pool(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
