"""The whole augforge plugin contract.

A plugin is a module (or object) with functions named like the hooks below and decorated with
``augforge.hookimpl`` (``from augforge import hookimpl``); an ``augforge_*`` function without
the decorator, or with a name that matches no hook, disables the plugin with a message. It is
found through the ``augforge`` entry-point group, so a third-party package registers exactly
like the first-party ones in ``plugins/``::

    [project.entry-points.augforge]
    my_plugin = "my_package.my_module"

Registration hooks return lists of classes; each class has a unique ``name`` class attribute
and derives from the matching base class in ``augforge.interfaces``. The core builds instances
by name (``augforge.registry.build``), checking keyword arguments against the constructor.
Lifecycle hooks only observe a run: they must not change it.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("augforge")


@hookspec
def augforge_register_datasets():
    """Return a list of ``augforge.interfaces.Dataset`` subclasses.

    Called once when the registry is first built. Each class's ``name`` is what users pass
    to ``--dataset``.
    """


@hookspec
def augforge_register_generators():
    """Return a list of ``augforge.interfaces.Generator`` subclasses.

    Called once when the registry is first built. Each class's ``name`` is what users pass
    to ``--model`` (or ``model.generator``).
    """


@hookspec
def augforge_register_discriminators():
    """Return a list of ``augforge.interfaces.Discriminator`` subclasses.

    Called once when the registry is first built. A model family usually registers a
    generator and a discriminator under the same ``name``.
    """


@hookspec
def augforge_register_evaluators():
    """Return a list of ``augforge.interfaces.Evaluator`` subclasses.

    Called once when the registry is first built. Each class's ``name`` is what users pass
    to ``augforge evaluate --metrics`` and ``augforge sweep --objective``.
    """


@hookspec
def augforge_register_commands(cli):
    """Add commands to the ``augforge`` command-line interface.

    ``cli`` is the top-level ``click.Group``; call ``cli.add_command(...)`` on it. Called once
    when the CLI starts. Return value is ignored.
    """


@hookspec
def augforge_run_start(run):
    """Observe the start of a training run.

    ``run`` is a ``augforge.training.RunInfo`` with ``config`` (the resolved ``RunConfig``),
    ``run_dir`` (a ``pathlib.Path``), ``run_id`` (the tracking run id or ``None``) and
    ``class_names``. Called after ``config.json`` is written and before the first step.
    """


@hookspec
def augforge_epoch_end(run, epoch, metrics):
    """Observe the end of an epoch.

    ``epoch`` is the 1-based epoch just finished; ``metrics`` is a ``dict[str, float]`` of the
    epoch's mean losses and any evaluator values computed at this epoch. Do not mutate it.
    """


@hookspec
def augforge_run_end(run, result):
    """Observe the end of a training run (finished, interrupted or failed).

    ``result`` is a ``augforge.training.TrainResult`` with ``status`` ("FINISHED", "KILLED" or
    "FAILED"), ``step``, ``checkpoint`` (path of the last checkpoint) and ``metrics``.
    """


@hookspec
def augforge_register_classifiers():
    """Return a list of ``augforge.interfaces.Classifier`` subclasses.

    Called once when the registry is first built. Classifiers are the detectors that
    evaluators use (class-consistency, feature space for FID/KID) and that
    ``augmentation-gain`` trains on real and synthetic images.
    """
