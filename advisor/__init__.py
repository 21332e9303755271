"""lora-advisor: batch size and learning rate for LoRA fine-tunes, before the expensive run.

`advisor` holds the study spec, the recommendation science (numpy/scipy) and storage. It imports no
torch at module top, so the API, dashboard and CI hook stay light; everything that touches torch lives
in `proxy_runs`.
"""

__version__ = "0.1.0"
