"""Variants by name: 3DM-WeConvene's ablations (variants.py) and CompressAI's learned codecs
(baselines.py), turned into configs and models by one factory (factory.py); ``model-info`` (info.py)."""
