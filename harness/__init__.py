import warnings

__version__ = "0.1.0"

# compressai 1.2.8 scripts a helper with torch.jit at import; torch 2.14 warns on every CLI run.
# Set here, since every module that imports compressai (model, zoo, artefacts) is below the package.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
