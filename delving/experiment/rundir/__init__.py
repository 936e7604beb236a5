"""The run folder and its files: :class:`~delving.experiment.rundir.run_dir.RunDir` (names, identity, atomic
writes, the lock), the appending CSV log and atomic checkpoints, the per-epoch history and the state an exact resume
needs. Imports nothing else of the experiment layer."""
