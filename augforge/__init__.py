"""augforge: synthetic, labelled skin-lesion images from GANs, with honest evaluation."""

__version__ = "0.1.0"
