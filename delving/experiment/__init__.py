"""The experiment layer, in rooms that import one way, down: ``rundir`` (a run folder and its files) <- ``training``
(one run: config, system, callbacks, loggers, fit) <- ``sweeps`` (many runs) and ``evaluation`` (test protocols).
Imports the science core, models and data; never the studies or the CLI."""
