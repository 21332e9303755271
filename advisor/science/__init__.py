"""The recommendation science: study planning, response-surface fits, transfer and warm start.

numpy/scipy only — no torch here, so the API, the dashboard and the CI hook import it cheaply. The study
that decides which proxy runs to train and reads them through these is `advisor.study`.
"""

from advisor.science.fits import Observation, SurfaceFit, bootstrap_optimum, fit_surface
from advisor.science.lr_grid import CurvaturePrior
from advisor.science.planner import plan_study
from advisor.science.recommendation import NoRecommendation, Recommendation
from advisor.science.study_plan import StudyPlan

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
