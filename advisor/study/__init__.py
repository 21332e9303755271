"""The study as a recipe, without torch: which proxy runs to train, how long, and what they mean.

`run_study(spec, runner)` plans a study, has a `ProxyRunner` train its runs (successive halving over batch
size and LR, then runs at other lengths and on a sibling's target) and answers with a recommendation. The
runner trains: `proxy_runs.runner.TorchRunner` for real, `advisor.study.synthetic.SyntheticRunner` on a
closed-form loss surface. Module by module, in the order a study uses them: `runner` (the protocol),
`ledger`, `curvature`, `halving`, `answer`, `run_length`, `sibling`, `run`.
"""

from advisor.study.run import StudyResult, run_study
from advisor.study.runner import ProxyRunner

__all__ = ["ProxyRunner", "StudyResult", "run_study"]
