"""augforge-runtime: torch-free sampling from an exported augforge generator, for downstream pipelines.

Depends on numpy and onnxruntime only (Pillow for ``save_pngs`` via the ``[png]`` extra; mlflow,
when installed, for ``models:/`` URIs), so it runs in any pipeline, whatever its framework::

    from augforge_runtime import SyntheticLesions, mix

    synth = SyntheticLesions("generator.onnx", counts={"mel": 500, "bcc": 300}, seed=0)
    best = SyntheticLesions("generator.onnx", per_class=500, filter="realism", keep=0.5)  # needs --with-discriminator
    image, label = synth[0]                  # uint8 [H, W, 3], int (index into synth.class_names)
    train_set = mix(real_train, synth, ratio=0.5, seed=0, class_names=real_classes)
    train_set = mix(real_train, synth, policy="ratio:0.5", seed=0, real_labels=labels)  # as measured

``SyntheticLesions`` is map-style (``len``, ``[i]``, ``__getitems__``), so it works as a PyTorch
``Dataset`` with any number of ``DataLoader`` workers, with a plain ``for`` loop, or by index.
``augforge.runtime`` re-exports this package for code written against augforge.
"""

from augforge_runtime.dataset import DEFAULT_CACHE_MB, READ_AHEAD, SyntheticLesions
from augforge_runtime.mixing import Mixed, check_labels_agree, mix
from augforge_runtime.errors import RuntimeModelError
from augforge_runtime.policies import Policy, PolicyError, parse_policy
from augforge_runtime.model import CHUNK, FORMAT, LATENT_DISTRIBUTION, OnnxGenerator, item_noise, to_uint8
from augforge_runtime.realism import DISCRIMINATOR_FORMAT, OnnxDiscriminator, discriminator_for, realistic_draws

__version__ = "0.1.0"

__all__ = [
    "CHUNK", "DEFAULT_CACHE_MB", "DISCRIMINATOR_FORMAT", "FORMAT", "OnnxDiscriminator", "discriminator_for", "realistic_draws", "LATENT_DISTRIBUTION", "READ_AHEAD", "Mixed", "OnnxGenerator", "Policy", "PolicyError",
    "parse_policy",
    "RuntimeModelError", "SyntheticLesions", "check_labels_agree", "item_noise", "mix", "to_uint8",
]
