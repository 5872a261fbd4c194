"""Evaluation: the cached detector, running evaluator plugins, the report, tracking.

The flow of ``evaluate_checkpoint``::

    checkpoint -> generator + its RunConfig -> the same data and lesion-grouped split as training
      -> detector (trained once per dataset + split + classifier config, cached on disk)  detector.py
      -> N generated images per class (optionally JPEG round-tripped like the real data)  sampling.py
      -> each evaluator plugin (pure computation) -> metrics, tables, figures             context.py
      -> report folder (Markdown + PNG + CSV) -> MLflow (the source run or a linked one)   run.py, report.py

Evaluator plugins see only ``ImageSet``s and an ``EvalContext``; they never write or log.
Beside it: ``classify`` (the classifier recipes), ``filtering`` (scored, filtered sampling),
``policies`` (augmentation policies), ``cli`` (``augforge evaluate``).
"""

from augforge.errors import EvaluationError
from augforge.evaluation.context import (EvalContext, make_training_evaluator, parse_evaluator_options, run_evaluators,
                                         select_evaluators)
from augforge.evaluation.detector import DEFAULT_CLASSIFIER, DETECTOR_VERSION, get_detector, load_data, split_sets
from augforge.evaluation.run import (Evaluation, default_out_dir, evaluate_checkpoint, evaluate_checkpoint_full,
                                     evaluate_generator, evaluate_onnx, evaluate_onnx_full, near_copy_mask_for, onnx_config)
from augforge.evaluation.sampling import jpeg_roundtrip, load_inception, sample_images, stored_side

__all__ = [
    "DEFAULT_CLASSIFIER", "DETECTOR_VERSION", "EvalContext", "Evaluation", "EvaluationError", "default_out_dir",
    "evaluate_checkpoint", "evaluate_checkpoint_full", "evaluate_generator", "evaluate_onnx", "evaluate_onnx_full",
    "get_detector", "jpeg_roundtrip", "load_data", "load_inception", "make_training_evaluator", "near_copy_mask_for",
    "onnx_config", "parse_evaluator_options", "run_evaluators", "sample_images", "select_evaluators", "split_sets",
    "stored_side",
]
