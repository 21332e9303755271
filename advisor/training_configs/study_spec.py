"""lora-advisor's own study spec (advisor.specs), read as a config: it plans no LR, and its batch is
written back as batch_sizes' training.batch_size."""

from __future__ import annotations

from advisor.errors import SpecError
from advisor.specs import parse_spec
from advisor.training_configs.mapped import MappedConfig
from advisor.training_configs.reader import ToolKeys, _Reader


def _study_spec(r: _Reader) -> MappedConfig:
    try:
        spec = parse_spec(r.data)
    except SpecError as exc:
        raise r.error(exc.field, exc.describe().split(": ", 1)[-1]) from None
    r.read.update(r.data)
    r.spec = spec.model_dump(mode="json", exclude={"model", "method", "rank", "alpha"})
    # A spec plans no LR; its batch is written back as batch_sizes' training.batch_size.
    names = ToolKeys(
        "model", "method", "rank", "alpha", "training.device_micro_batch_size", "-", "learning_rate"
    )
    return r.mapped_config(
        "study-spec",
        names,
        model=spec.model,
        method=spec.method,
        rank=spec.rank,
        alpha=spec.alpha,
        micro_batch_size=spec.training.device_micro_batch_size,
        accumulation_steps=1,
        learning_rate=None,
    )
