"""augforge: synthetic, labelled skin-lesion images from GANs, with honest evaluation."""

__version__ = "0.1.0"

# Plugin modules decorate their hooks with ``@augforge.hookimpl`` (augforge/hookspecs.py).
from augforge.plugins import hookimpl  # noqa: E402

__all__ = ["__version__", "hookimpl"]
