"""Export and hand-off: a generator as one ONNX file, the model registry, synthetic datasets on disk.

    onnx.py      ``export_onnx``: the file format, metadata, parity check
    sources.py   checkpoint / tracked run / ``models:/`` URI -> ONNX, and ``register_onnx``
    generate.py  ``augforge generate``: images + HAM10000-style metadata.csv, scored and filtered
    cli.py       ``augforge export``

The torch-free runtime that reads these files is the ``augforge-runtime`` distribution
(``augforge.runtime`` re-exports it).
"""

from augforge.export.onnx import (DEFAULT_ALIAS, METADATA_KEYS, PARITY_ATOL, ExportError, check_output, export_module,
                                  export_onnx, parity_check, read_metadata)
from augforge.runtime import FORMAT  # the files' contract, checked by the torch-free runtime
from augforge.export.sources import (checkpoint_for_run, checkpoint_metadata, export_checkpoint, model_version,
                                     parse_model_uri, register_onnx, resolve_model, resolve_onnx)

__all__ = [
    "DEFAULT_ALIAS", "FORMAT", "METADATA_KEYS", "PARITY_ATOL", "ExportError", "check_output", "checkpoint_for_run",
    "checkpoint_metadata", "export_checkpoint", "export_module", "export_onnx", "model_version", "parity_check",
    "parse_model_uri", "read_metadata", "register_onnx", "resolve_model", "resolve_onnx",
]
