"""``augforge.runtime`` is the ``augforge-runtime`` distribution (``runtime/`` in this repository).

Kept as a re-export so code written against ``augforge.runtime`` keeps working; new downstream
code can depend on ``augforge-runtime`` alone (numpy + onnxruntime, no torch, no mlflow).
"""

from augforge_runtime import *  # noqa: F403
from augforge_runtime import __all__  # noqa: F401
