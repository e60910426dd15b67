"""kxnet: KXNet (ECCV 2022), model-driven blind super-resolution."""

from kxnet.nn import KXNet, KXNetOutput
from kxnet.official import load_official

__all__ = ["KXNet", "KXNetOutput", "load_official"]
__version__ = "0.1.0"
