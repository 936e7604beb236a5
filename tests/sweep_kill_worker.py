"""``delving sweep`` as a user runs it (through ``delving.cli.main``), which sends itself a signal at a chosen moment,
for the sweep kill-and-resume test:

    python tests/sweep_kill_worker.py --kill-at MOMENT --signal KILL|TERM|INT [--cell K] sweep FILE --out DIR --jobs 1

MOMENT is one of tests/resume_worker.py's moments (``step:N``, ``epoch-ckpt:E``, ``ckpt-step:N``), met in the K-th
cell the sweep trains (0-based, in the order it runs them), or ``summary``: while ``summarize`` runs, after all
cells have finished and ``summary.csv`` is written, before ``summary.md`` and the figures.

With ``--jobs 1`` the sweep trains its cells in this process through ``delving.experiment.training.train.fit``, so the
killer goes in as one of ``fit``'s callbacks.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys

from resume_worker import Killer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-at", required=True)
    parser.add_argument("--signal", choices=["KILL", "TERM", "INT"], default="KILL")
    parser.add_argument("--cell", type=int, default=0)
    args, cli_args = parser.parse_known_args()
    sig = getattr(signal, f"SIG{args.signal}")
    import delving.experiment.training.train
    import delving.studies.summary
    from delving.cli import main as cli

    if args.kill_at == "summary":
        markdown = delving.studies.summary.markdown  # summarize calls it after writing summary.csv

        @functools.wraps(markdown)
        def kill_then_markdown(*a, **kw):
            os.kill(os.getpid(), sig)
            return markdown(*a, **kw)

        delving.studies.summary.markdown = kill_then_markdown
    else:
        fit, calls = delving.experiment.training.train.fit, []

        @functools.wraps(fit)
        def fit_with_killer(cfg, *a, callbacks=(), **kw):
            calls.append(cfg.name)
            if len(calls) - 1 == args.cell:
                callbacks = [*callbacks, Killer(args.kill_at, sig)]
            return fit(cfg, *a, callbacks=callbacks, **kw)

        delving.experiment.training.train.fit = fit_with_killer
    return cli(cli_args)


if __name__ == "__main__":
    sys.exit(main())
