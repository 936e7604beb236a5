"""Reading finished runs: the run loader, sweep summaries, slope statistics, the reproduction report and the W&B
dashboard. Imports everything below it; never the CLI."""
