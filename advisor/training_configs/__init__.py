"""One mapping from the training configs people already have to the study that copies their real run.

`advisor check` (the CI hook), `advisor recommend` and POST /v1/studies all read configs here. A config
is told apart by its keys (`detect_format`) and read by one function per tool. Where each piece lives:

- `mapped`: the shared model of a mapped config: `MappedConfig` (the study spec, the recipe, the plan to
  judge and its `mapped_from` report), `MappedField` / `DroppedKey`, `ConfigError` naming the key, and
  `write_back` (the recommended batch and LR under the tool's own keys).
- `reader`: `_Reader`, typed access to a config's keys that records what was carried over and builds the
  `MappedConfig`; device counting (launch keys, DeepSpeed) and its contradictions; why an unread key was
  dropped (`BOOKKEEPING`); `ToolKeys`, a tool's names for the plan's values.
- `common`: what several tools share: the Hugging Face Trainer's arguments (schedule, AdamW, clipping,
  length, packing, precision, seed), the LoRA adapter's options and variant, the refusal of non-supervised
  stages, dataset paths.
- one module per tool, whose docstring lists every key it reads: `axolotl` (Axolotl YAML),
  `llama_factory` (LLaMA-Factory YAML), `hf_trainer` (Hugging Face TrainingArguments / TRL SFTConfig, YAML
  or JSON), `torchtune` (torchtune YAML), `study_spec` (lora-advisor's own study spec, advisor.specs).
- `loading`: reading a YAML or JSON file (`load_config`) or a decoded body (`map_config`), format
  detection (`detect_format`) and each format's reader (`FORMATS`, `PARSERS`).

Each tool's own default stands in for a key its config leaves out (the Trainer's max_grad_norm of 1.0 and
linear schedule without warm-up, torchtune's unclipped gradients), never lora-advisor's. Everything the
mapping carried over is listed with the key it came from (`MappedConfig.mapped`), and every key it did not
carry over by name (`MappedConfig.dropped`). A key that would change the best LR or batch and cannot be
honoured (an optimizer other than AdamW, an unknown schedule, a DPO stage, a LoRA without a rank where the
tool has no default) is an error naming it.

Devices come from num_processes / world_size / num_devices, ray_num_workers, a DeepSpeed config's
train_batch_size, or `--devices`; where none says, 1 is assumed and the report says so. Batch keys that
contradict each other (two device counts, a DeepSpeed micro-batch, accumulation or train_batch_size other
than the config's own) are an error naming the key, as the tools themselves refuse them at launch.
"""

from advisor.training_configs.common import (
    ADAMW_OPTIMIZERS,
    NOT_SUPERVISED,
    QLORA,
    SCHEDULERS,
    TRAINER_BATCH_KEYS,
)
from advisor.training_configs.hf_trainer import TRL_SFT_LOSSES, TRL_STAGE_KEYS
from advisor.training_configs.loading import FORMATS, PARSERS, detect_format, load_config, map_config
from advisor.training_configs.mapped import ConfigError, DroppedKey, MappedConfig, MappedField, write_back
from advisor.training_configs.reader import BOOKKEEPING, BOOKKEEPING_PREFIXES, DEVICE_KEYS, ToolKeys
from advisor.training_configs.torchtune import TORCHTUNE_DATASETS, TORCHTUNE_MLP, TORCHTUNE_MODULES

__all__ = [
    "ADAMW_OPTIMIZERS",
    "BOOKKEEPING",
    "BOOKKEEPING_PREFIXES",
    "DEVICE_KEYS",
    "FORMATS",
    "NOT_SUPERVISED",
    "PARSERS",
    "QLORA",
    "SCHEDULERS",
    "TORCHTUNE_DATASETS",
    "TORCHTUNE_MLP",
    "TORCHTUNE_MODULES",
    "TRAINER_BATCH_KEYS",
    "TRL_SFT_LOSSES",
    "TRL_STAGE_KEYS",
    "ConfigError",
    "DroppedKey",
    "MappedConfig",
    "MappedField",
    "ToolKeys",
    "detect_format",
    "load_config",
    "map_config",
    "write_back",
]
