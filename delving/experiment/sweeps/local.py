"""A sweep's grid run here, offline: no W&B server needed (W&B cannot create or run a sweep without one: wandb
issues 6234, 4586, 2008).

``run_local`` enumerates the grid (:mod:`delving.experiment.sweeps.grid`), runs every cell as an offline run in
``runs/<sweep name>/<cell>/``, skips cells whose ``result.json`` exists, resumes an unfinished cell from its
``last.ckpt``, and records a diverged cell as such and goes on. Cells run in ``jobs`` worker processes (imports
cost ~5 s, so a process runs many cells). ``list_cells`` / ``run_cell`` number the grid for SLURM job arrays.
With ``early_terminate`` every cell trains under W&B's hyperband rule (:mod:`delving.experiment.sweeps.pruning`):
a pruned cell is done. ``method: random`` / ``bayes``: :mod:`delving.experiment.sweeps.local_search`, with the
functions below. The same file through a W&B server: :mod:`delving.experiment.sweeps.online`.
"""

from __future__ import annotations

import functools
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from delving.cpus import available_cpus
from delving.errors import DelvingError
from delving.experiment.rundir.run_dir import FilesystemError, RunDir, RunLocked, filesystem_error
from delving.experiment.sweeps.grid import Sweep, configs
from delving.experiment.sweeps.pruning import Hyperband, HyperbandPruner, is_pruned, record_pruned
from delving.experiment.training import train
from delving.experiment.training.config import RunConfig, to_dict
from delving.experiment.training.train import check_model, run_dir


def check_cells(cfgs: list[RunConfig]) -> None:
    """Before the first run: every cell's model builds and initializes, and no cell's folder holds a run of another
    config. A problem is a one-line error naming the cell."""
    built = set()
    for cfg in cfgs:
        RunDir(run_dir(cfg)).check_identity(to_dict(cfg))
        key = repr((cfg.model, cfg.init, cfg.data.name, cfg.data.root, cfg.data.num_classes))
        if key in built:
            continue
        built.add(key)
        try:
            check_model(cfg)  # the check `delving fit` makes: the data module and the model built, on the CPU
        except DelvingError as err:
            raise DelvingError(f"sweep cell {cfg.name}: {err}") from None


def is_done(cfg: RunConfig) -> bool:
    """A cell is done when its result says finished or diverged after ``trainer.max_epochs`` (``RunDir.is_done``,
    the same rule ``fit`` skips by), or pruned by the sweep's hyperband; an interrupted cell has no result."""
    run = RunDir(run_dir(cfg))
    return run.is_done(cfg.trainer.max_epochs) or is_pruned(run)


def _init_worker(threads: int, parent: int) -> None:
    """Pool worker set-up: die with the parent (a killed sweep leaves no orphan training), leave Ctrl-C to it.

    PR_SET_PDEATHSIG with SIGKILL (Lightning traps SIGTERM and would train on to the end of the cell). The signal
    only comes for a parent that dies after the call: a parent killed while this worker was starting up is
    caught by comparing the parent PID with the one the pool was started from."""
    import signal

    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    _setup(threads)


def _setup(threads: int) -> None:
    """Quiet logs and share the cores out among the sweep's processes."""
    import torch

    _quiet()
    torch.set_num_threads(threads)


def _quiet() -> None:
    import logging
    import warnings

    import lightning  # noqa: F401  (it sets its loggers' levels on import: import first, then quieten)

    os.environ.setdefault("WANDB_SILENT", "true")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", category=UserWarning)


def _run_cell(cfg: RunConfig) -> dict:
    # train.fit looked up at each call, not bound at import: the point tests and the kill worker wrap
    return train.fit(cfg, progress=False)


def _run_pruned(cfg: RunConfig, hyperband: Hyperband, progress: bool = False) -> dict:
    """One run under W&B's hyperband rule; a run it stops is recorded as pruned."""
    pruner = HyperbandPruner(hyperband, cfg.name)
    return record_pruned(RunDir(run_dir(cfg)), train.fit(cfg, progress=progress, callbacks=[pruner]), pruner)


def runner(hyperband: Hyperband | None):
    """What trains one run of the sweep (picklable, for the worker processes): under hyperband or not."""
    return functools.partial(_run_pruned, hyperband=hyperband) if hyperband else _run_cell


def list_cells(sweep: Sweep, out_root: str | Path = "runs") -> list[tuple[int, str, bool]]:
    """(index, cell folder name, done) for every grid point, in the file's order: the numbering ``--cell K`` and
    a SLURM job array (``--array=0-<N-1>``) use, so a grid can be spread over machines without a W&B server."""
    cells = []
    for k, cfg in enumerate(configs(sweep, Path(out_root) / sweep.name)):
        try:  # a damaged result is named, and the cell listed as todo: running it trains it again
            RunDir(run_dir(cfg)).read_result()
        except DelvingError as err:
            print(f"delving: warning: {err}; cell listed as todo", file=sys.stderr)
        cells.append((k, cfg.name, is_done(cfg)))  # name: cell_name
    return cells


def run_cell(sweep: Sweep, index: int, out_root: str | Path = "runs") -> dict | None:
    """Run grid point ``index`` (resuming it if interrupted); a finished one is skipped and gives None."""
    cells = configs(sweep, Path(out_root) / sweep.name)
    if not 0 <= index < len(cells):
        raise DelvingError(f"--cell {index} is out of range: sweep {sweep.name} has cells 0 to {len(cells) - 1}")
    cfg = cells[index]
    if is_done(cfg):
        return None
    hyperband = Hyperband.of(sweep.raw, Path(out_root) / sweep.name)
    return _run_pruned(cfg, hyperband, progress=True) if hyperband else train.fit(cfg)


def _cost(cfg: RunConfig) -> int:
    return (cfg.model.depth or 1) * cfg.trainer.max_epochs


def run_local(sweep: Sweep, out_root: str | Path = "runs", jobs: int | None = None,
              count: int | None = None) -> tuple[Path, int]:
    """Run every unfinished cell of the grid offline (at most ``count`` of them, as ``wandb agent --count``); return
    the sweep's output folder and the failed count.

    Every cell is checked first (config, model, folder identity). A cell that raises is reported and left
    unfinished (the next run of the sweep tries it again); the others go on. A cell another process is training
    (its folder's lock) is skipped: two sweeps on one folder share the grid out. A folder that cannot be written
    (disk full, read-only) stops the sweep with that one line. Ctrl-C stops it with one line saying what is saved.
    """
    folder = Path(out_root) / sweep.name
    cfgs = configs(sweep, folder)
    check_cells(cfgs)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise filesystem_error(err, folder) from None
    # Longest cells first (cost ~ depth x epochs): the last cells to finish are then short ones, so a worker does
    # not sit idle while another trains a deep net at the end. Each run is seeded on its own: order changes nothing.
    todo = sorted((cfg for cfg in cfgs if not is_done(cfg)), key=_cost, reverse=True)[:count]
    total = len(cfgs)
    print(f"sweep {sweep.name}: {total} cells, {total - len(todo)} already done, {len(todo)} to run -> {folder}")
    cpus = available_cpus()
    jobs = max(1, min(jobs or cpus, len(todo) or 1))
    threads = max(1, cpus // jobs)
    tally = {"failed": 0, "locked": 0}
    train = runner(Hyperband.of(sweep.raw, folder))
    try:
        with tqdm(total=len(todo), desc=f"sweep {sweep.name}", unit="run") as bar:
            if jobs == 1:
                _setup(threads)
                for cfg in todo:
                    report(bar, cfg, guarded(train, cfg), tally)
            else:
                _run_pool(todo, jobs, threads, bar, tally, train)
    except KeyboardInterrupt:
        done = sum(is_done(cfg) for cfg in cfgs)
        raise KeyboardInterrupt(f"sweep {sweep.name}: {done} of {total} cells finished in {folder}; the cells under "
                                f"way keep their last checkpoint; run the same command again to resume") from None
    if tally["locked"]:
        print(f"sweep {sweep.name}: {tally['locked']} cell(s) skipped: another process is training them; run the "
              f"same command again once it ends to summarize them")
    return folder, tally["failed"]


def worker_pool(jobs: int, threads: int) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes that die with this one (:func:`_init_worker`)."""
    return ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_init_worker,
                               initargs=(threads, os.getpid()))


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Kill the workers now rather than after their runs: they resume from their last checkpoint. SIGKILL, because
    Lightning traps SIGTERM and the worker would train on to the end of its run."""
    for process in list(getattr(pool, "_processes", {}).values()):
        process.kill()


def _run_pool(todo: list[RunConfig], jobs: int, threads: int, bar: tqdm, tally: dict, train=_run_cell) -> None:
    pool = worker_pool(jobs, threads)
    try:
        futures = {pool.submit(train, cfg): cfg for cfg in todo}
        for future in as_completed(futures):
            report(bar, futures[future], guarded(future.result), tally)
    except BaseException:
        stop_pool(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def guarded(call, *args):
    """The call's result, or the exception it raised (one failed cell must not stop the others)."""
    try:
        return call(*args)
    except Exception as err:  # noqa: BLE001 - reported per cell, and the cell stays unfinished
        return err


def report(bar: tqdm, cfg: RunConfig, result, tally: dict) -> None:
    """Print one line for a finished cell and count it; a filesystem fault stops the sweep (raised)."""
    bar.update(1)
    if isinstance(result, FilesystemError):
        raise result
    if isinstance(result, RunLocked):
        tally["locked"] += 1
        bar.write(f"  {cfg.name}: skipped, {RunDir(Path(cfg.out_dir) / cfg.name).holder()} is training it")
        return
    if isinstance(result, Exception):
        tally["failed"] += 1
        bar.write(f"  {cfg.name}: FAILED ({type(result).__name__}: {result}); run the sweep again to retry it")
        return
    if result.get("already_done"):  # another process finished it since this sweep started
        bar.write(f"  {result['name']}: already {result['status']} (another process trained it)")
        return
    if result.get("pruned"):
        p = result["pruned"]
        bar.write(f"  {result['name']}: pruned after epoch {p['epoch']} (hyperband band {p['band']}: {p['metric']} "
                  f"{p['value']:.3f}, threshold {p['threshold']:.3f}), {result['fit_seconds']:.1f} s")
        return
    err = result.get("final_val_err1")
    bar.write(f"  {result['name']}: {result['status']}, final val err {err:.3f}, {result['fit_seconds']:.1f} s"
              if err is not None else f"  {result['name']}: {result['status']}")


