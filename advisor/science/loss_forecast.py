"""The eval loss the real run will reach, forecast from the study's shorter runs: L*(N) ∝ N^−α.

A study measures its best loss L* on runs shorter than the real run (the top rung: 288 of 900 examples,
say). A fine-tune's loss keeps falling with the examples it sees, so L* at the top rung overstates the
real run's: on the quality benchmark's tasks by 2% (`add`, nearly saturated) to 40% (`repeat`, 288 of
1800 examples). The forecast moves L* to the real run's length along a straight line in log L* against
log N, the same Bayesian line that moves LR* (`fits.loglog_line`):

- the anchor is the top rung's L*, known to its seed noise;
- horizon runs (complete runs at B* between the top rung's length and the real run's) add their L*.
  Shorter runs do not: trend runs on a third of the top rung's examples are 6–30 optimizer steps, still
  in the first fast drop of the loss, and a slope read there does not carry to the real run (in
  `bench/warm_start.py --quick`, forecasts through them missed by 3–6% with 90% intervals of ±2%);
- the exponent's prior, α = 0.05 ± 0.05, is measured out of sample: SmolLM2-135M with LoRA r = 8 on
  real FAQ instructions gave α = 0.042–0.061 between 64, 160 and 478 examples (`bench/loss_scaling.py`).
  The spread is a judgement: on the quality benchmark's tiny-model tasks α from the top rung to the
  real run was 0.007 (`add`) to 0.18 (`repeat`). Full runs reported back
  (`POST /v1/outcomes` with `final_eval_loss`) each measure α between their study's L* and the real run,
  and sharpen the prior for later studies of that context (`knowledge.loss_exponent_prior`).

A pure power law in the total loss has no floor, so its local slope drifts as N grows: on the benchmark's
tasks by up to 0.05 between successive ranges (`repeat`: α 0.21 from 288 to 600 examples, 0.16 from 600 to
1800). Past the longest measured length the interval (90%) therefore widens by SLOPE_DRIFT_SD per decade
on top of the line's own spread. The forecast never rises above an L* measured at a
shorter length: one epoch of more data does not make the best loss worse, so a rise is noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel

from advisor.science.fits import Z90
from advisor.science.length_scaling import LogMeasurement, loglog_line

LOSS_EXPONENT = -0.05  # log10 L* against log10 N: the prior slope, −α
LOSS_EXPONENT_SD = 0.05
SLOPE_DRIFT_SD = 0.05  # how far the slope may move past the longest measured length (per decade of N)


class LossExponentPrior(BaseModel):
    """The prior of the slope −α of log L* against log N; sharpened by reported full-run outcomes."""

    mean: float = LOSS_EXPONENT
    sd: float = LOSS_EXPONENT_SD
    outcomes: int = 0  # reported full runs that went into it

    def describe(self) -> str:
        said = f"the prior {self.mean:.2f} ± {self.sd:.2f}"
        return said if not self.outcomes else f"{said} from {self.outcomes} reported full-run outcome(s)"


class LossForecast(BaseModel):
    """L* at the real run's length with its 90% interval, and the line that carried it there."""

    examples: int  # the real run's
    loss: float
    low: float
    high: float
    exponent: float  # −α: the posterior slope of log L* against log N
    exponent_sd: float
    from_examples: int  # the anchor's length (the top rung)
    from_loss: float
    measured_at: list[int]  # the longer lengths whose L* went into the line (horizon runs)
    prior: LossExponentPrior = LossExponentPrior()

    def sentence(self) -> str:
        if self.examples == self.from_examples:
            return (
                f"The predicted eval loss is L* at the real run's length, {self.loss:.4g} "
                f"(90%: {self.low:.4g} … {self.high:.4g})."
            )
        prior = self.prior.describe()
        source = (
            f"measured on {', '.join(str(n) for n in self.measured_at)} examples, with {prior}"
            if self.measured_at
            else f"from the prior alone, {prior}: nothing longer was measured"
        )
        return (
            f"The real run's loss: L* {self.from_loss:.4g} on {self.from_examples} examples falls as "
            f"N^{self.exponent:.2f} ± {self.exponent_sd:.2f} (L* {source}) to {self.loss:.4g} on "
            f"{self.examples} (90%: {self.low:.4g} … {self.high:.4g})."
        )


def loss_measurement(examples: int, loss: float, noise_sd: float) -> LogMeasurement:
    """L* on runs of `examples` examples, ± `noise_sd` (in loss units), as a point on the log-log line."""
    relative = max(noise_sd, 1e-6 * loss) / loss
    return LogMeasurement(examples, math.log10(loss), math.log10(1.0 + relative))


def forecast_loss(
    anchor: LogMeasurement,
    measurements: Sequence[LogMeasurement],
    full_examples: int,
    prior: LossExponentPrior | None = None,
) -> LossForecast:
    """L* at `full_examples` from the anchor (the top rung's L*) and L* measured at longer lengths (shorter
    ones are left out: see the module's docstring)."""
    prior = prior or LossExponentPrior()
    longer = [m for m in measurements if m.examples > anchor.examples]
    line = loglog_line(anchor, longer, prior.mean, prior.sd)
    mean, sd = line.at(full_examples)
    if longer:  # a measured slope, extrapolated past the longest run that measured it
        beyond = max(0.0, math.log10(full_examples / max(m.examples for m in longer)))
        sd = math.hypot(sd, SLOPE_DRIFT_SD * beyond)
    shorter = [m.log_value for m in (anchor, *longer) if m.examples <= full_examples]
    mean = min(mean, *shorter) if shorter else mean
    exponent_sd = math.sqrt(line.covariance[1][1])
    return LossForecast(
        examples=full_examples,
        loss=10**mean,
        low=10 ** (mean - Z90 * sd),
        high=10 ** (mean + Z90 * sd),
        exponent=line.exponent,
        exponent_sd=exponent_sd,
        from_examples=anchor.examples,
        from_loss=10**anchor.log_value,
        measured_at=sorted({m.examples for m in longer}),
        prior=prior,
    )
