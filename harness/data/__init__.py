"""Data stages: dataset registry, downloads, safe archive extraction, the patch recipe, training shards (``prepare-data``) and the training stream."""
