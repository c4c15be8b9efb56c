"""The 3DM-WeConvene network and its parts: its configuration (:mod:`~harness.model.config`), layers,
network, latent codec, integer path, rANS, loss and precision, one module each. Built from a
:class:`~harness.model.config.ModelConfig`; :mod:`harness.zoo` turns variant names into configs.

The package imports none of them, so that reading a configuration (the commands' options, a plan's
checks) costs no torch."""
