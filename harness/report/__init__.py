"""The report of a leaderboard run: BD-rate, tables, plots, published anchors and the learned
models' section, read from the run's records (:mod:`harness.leaderboard`), never the reverse."""
