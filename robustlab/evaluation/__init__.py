"""Running evaluation suites on a model and turning their statistics into results."""

from robustlab.evaluation.evaluator import SuiteEvaluator
from robustlab.evaluation.runner import run_suites

__all__ = ["SuiteEvaluator", "run_suites"]
