"""pytest-saebench: evaluate sparse autoencoder checkpoints with SAEBench metrics in pytest.

Importing this package is cheap: nothing here imports torch.
"""

from pytest_saebench.errors import SaebenchError

__version__ = "0.2.0"

__all__ = ["SaebenchError", "__version__"]
