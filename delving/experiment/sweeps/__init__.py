"""Many runs: a sweep file's grid and its cells' names, the local runner, runs started by ``wandb agent``, and the
same file through a W&B server. Imports the training and run-folder rooms below it."""
