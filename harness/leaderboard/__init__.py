"""The leaderboard engine: every (image, codec config, quality) cell encoded, decoded and
measured on Ray, kept in ``results.parquet`` with the run's record ``run.json``. It imports
neither the report (:mod:`harness.report` reads its records) nor training."""
