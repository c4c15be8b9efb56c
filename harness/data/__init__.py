"""Training data: the patch recipe, shard writing (``prepare-data``) and the training stream."""
