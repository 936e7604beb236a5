"""The paper's test protocols on a finished run (center crop, 10 views, dense multi-scale). Imports the training
and run-folder rooms below it."""
