"""Backend switches, after torch.backends: `convpool.backends.cpu` (the CPU algorithm registry)."""
from . import cpu  # noqa: F401

__all__ = ["cpu"]
