"""Named presets: dotted-key overrides on top of ``RunConfig`` defaults.

Filled in by the training issue: ``paper-a``, ``paper-b``, ``modern``, ``smoke``.
"""

PRESETS: dict[str, dict[str, object]] = {}
