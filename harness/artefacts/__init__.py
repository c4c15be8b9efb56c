"""What leaves a process: the ``.3dmw`` container, checkpoints, model cards, compress/decompress,
the cross-machine decode check, imported weights, and the safe reader of torch files."""
