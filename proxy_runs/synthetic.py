"""Deterministic synthetic datasets with learnable structure, for tests, benchmarks and the demo.

Each task maps a prompt to a response by a simple rule (reverse a word, add two numbers, ...), so a
tiny model visibly learns within a few dozen steps and a good learning rate is measurably better than
a bad one. Written as JSONL in the same shapes users bring: Alpaca-style instruction records, plain
text records, and source/target pairs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "gu"]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3)))


def _reverse(rng: random.Random) -> tuple[str, str, str]:
    word = _word(rng)
    return "Reverse the word.", word, word[::-1]


def _add(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(0, 49), rng.randint(0, 49)
    return "Add the two numbers.", f"{a} + {b}", str(a + b)


def _upper(rng: random.Random) -> tuple[str, str, str]:
    words = " ".join(_word(rng) for _ in range(rng.randint(1, 3)))
    return "Write in capitals.", words, words.upper()


def _repeat(rng: random.Random) -> tuple[str, str, str]:
    word, times = _word(rng), rng.randint(2, 4)
    return f"Repeat the word {times} times.", word, " ".join([word] * times)


TASKS: dict[str, Callable[[random.Random], tuple[str, str, str]]] = {
    "reverse": _reverse,
    "add": _add,
    "upper": _upper,
    "repeat": _repeat,
}


def instruction_records(n: int, seed: int = 0, tasks: list[str] | None = None) -> list[dict[str, str]]:
    """`n` Alpaca-style records (instruction / input / output) drawn from `tasks` (default: all)."""
    rng = random.Random(seed)
    chosen = [TASKS[name] for name in (tasks or list(TASKS))]
    records = []
    for _ in range(n):
        instruction, given, answer = rng.choice(chosen)(rng)
        records.append({"instruction": instruction, "input": given, "output": answer})
    return records


def text_records(n: int, seed: int = 0) -> list[dict[str, str]]:
    """`n` short documents of a tiny grammar, for the plain language-modelling format."""
    rng = random.Random(seed)
    subjects, verbs = ["the cat", "a bird", "my friend", "the river"], ["sees", "finds", "likes", "follows"]
    docs = []
    for _ in range(n):
        sentences = [
            f"{rng.choice(subjects)} {rng.choice(verbs)} {_word(rng)}." for _ in range(rng.randint(2, 5))
        ]
        docs.append({"text": " ".join(sentences).capitalize()})
    return docs


def seq2seq_records(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Source/target pairs (reverse and capitalise), for T5-style models."""
    return [
        {"source": f"{r['instruction']} {r['input']}", "target": r["output"]}
        for r in instruction_records(n, seed, tasks=["reverse", "upper"])
    ]


def write_jsonl(records: list[dict[str, str]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    return path


def corpus_of(records: list[dict[str, str]]) -> list[str]:
    """Every string in the records: what a tiny tokenizer is trained on."""
    return [value for record in records for value in record.values()]
