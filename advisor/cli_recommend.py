"""`advisor recommend SPEC [--budget SECONDS] [--json]`: a whole study, embedded, with a progress bar.

The progress bar goes to stderr so that stdout holds only the answer (plain text, or JSON whose top level
has `batch_size` and `learning_rate`). Torch is imported only when the study starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from advisor.science.recommendation import NoRecommendation, Recommendation

EXIT_OK, EXIT_NO_RECOMMENDATION = 0, 1
BAR_WIDTH = 30


def add_recommend(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "recommend", help="run a proxy study and recommend batch size and learning rate"
    )
    parser.add_argument("spec", help="study spec (YAML or JSON)")
    parser.add_argument("--budget", type=float, help="proxy compute budget in seconds (default: the spec's)")
    parser.add_argument("--json", action="store_true", help="print the recommendation as JSON")
    parser.set_defaults(handler=run_recommend)


def progress_bar(done: int, total: int, message: str) -> None:
    """One line on stderr, redrawn in place: [#####.....] 12/40 what just ran."""
    filled = BAR_WIDTH * min(done, total) // max(total, 1)
    line = f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} {message[:70]}"
    print(line.ljust(BAR_WIDTH + 90), end="", file=sys.stderr, flush=True)


def knowledge_store() -> Any:
    """The database's KnowledgeStore when storage provides one; None (no persistence) otherwise."""
    try:
        from advisor.storage import knowledge  # provided by the storage work, when it lands
    except ImportError:
        return None
    return getattr(knowledge, "default_store", lambda: None)()


def run_recommend(args: argparse.Namespace) -> int:
    from advisor.specs import load_spec
    from proxy_runs.study import run_study

    spec = load_spec(args.spec)
    result = run_study(spec, budget_override=args.budget, progress=progress_bar, store=knowledge_store())
    print(file=sys.stderr)  # end the progress line
    print(render(result.recommendation, as_json=args.json))
    return EXIT_NO_RECOMMENDATION if isinstance(result.recommendation, NoRecommendation) else EXIT_OK


def render(answer: Recommendation | NoRecommendation, *, as_json: bool) -> str:
    if as_json:
        data = answer.model_dump(mode="json")
        if isinstance(answer, Recommendation):
            data["search_space"] = answer.search_space()
        else:
            data = {"batch_size": None, "learning_rate": None, "no_recommendation": data}
        return json.dumps(data, indent=2)
    if isinstance(answer, NoRecommendation):
        return f"no recommendation: {answer.reason}" + (f"\nfix: {answer.fix}" if answer.fix else "")
    return answer.summary()
