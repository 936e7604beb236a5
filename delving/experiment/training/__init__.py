"""Training one run: the typed config, the LightningModule, speed switches, callbacks, the loggers (CSV beside
W&B), provenance and :func:`~delving.experiment.training.train.fit`. Imports the run folder's room below it."""
