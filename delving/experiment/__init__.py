"""The experiment layer: typed configs, the LightningModule, callbacks, W&B tracking, training, sweeps and the
paper's test protocols. Imports the science core, models and data; never the studies or the CLI."""
