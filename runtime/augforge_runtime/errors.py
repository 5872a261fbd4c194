"""The runtime's one error type (its own module: the model and the registry lookup both raise it)."""


class RuntimeModelError(ValueError):
    """The ONNX file, a class name or a label cannot be used as given."""
