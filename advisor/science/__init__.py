"""The recommendation science: study planning, response-surface fits, transfer and warm start.

numpy/scipy only — no torch here, so the API, the dashboard and the CI hook import it cheaply. The proxy
runs that feed it live in `proxy_runs.study`.
"""

from advisor.science.fits import Observation, SurfaceFit, bootstrap_optimum, fit_surface
from advisor.science.planner import CurvaturePrior, StudyPlan, plan_study
from advisor.science.recommendation import NoRecommendation, Recommendation

__all__ = [
    "CurvaturePrior",
    "NoRecommendation",
    "Observation",
    "Recommendation",
    "StudyPlan",
    "SurfaceFit",
    "bootstrap_optimum",
    "fit_surface",
    "plan_study",
]
