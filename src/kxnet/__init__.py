"""kxnet: KXNet (ECCV 2022), model-driven blind super-resolution."""

from kxnet.nn import KXNet, KXNetOutput
from kxnet.official import load_official

__all__ = ["KXNet", "KXNetOutput", "load_official", "load_model"]
__version__ = "0.1.0"


def load_model(source, map_location="cpu", **expect) -> KXNet:
    """A trained :class:`KXNet` (eval mode) from a model name (``"official/setting2_x4"``, the
    authors' release, fetched once into the cache; ``"latest"``, ``"latest/quick"``) or a
    checkpoint file: :func:`kxnet.models.load_model`."""
    from kxnet.models import load_model as load

    return load(source, map_location, **expect)
