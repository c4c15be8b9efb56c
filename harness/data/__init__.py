"""Data stages: dataset registry, downloads, safe archive extraction, training shards."""
