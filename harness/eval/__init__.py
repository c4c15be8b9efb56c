"""Evaluation: codec runs, metrics, BD-rate, tables and plots for leaderboards."""
