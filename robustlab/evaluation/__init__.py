"""Running evaluation suites on a model and turning their statistics into results."""

from robustlab.evaluation.evaluator import SuiteEvaluator
from robustlab.evaluation.runner import SuiteRun, build_suites, run_suites

__all__ = ["SuiteEvaluator", "SuiteRun", "build_suites", "run_suites"]
