"""Generate the shipped example datasets (synthetic, learnable, reproducible).

    python examples/data/generate.py            # rewrites the .jsonl files next to this script
    python examples/data/generate.py --check    # exits 1 if the committed files are stale

Three small tasks a tiny model can learn: integer arithmetic, word reversal and country
capitals. Output, all from a fixed seed:
- chat/train.jsonl, chat/validation.jsonl: `{"messages": [...]}` rows, some multi-turn,
  some with a system prompt;
- prompt_completion/train.jsonl, prompt_completion/validation.jsonl: `{"prompt", "completion"}`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20240601
SIZES = {
    ("chat", "train"): 400,
    ("chat", "validation"): 60,
    ("prompt_completion", "train"): 200,
    ("prompt_completion", "validation"): 40,
}

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Portugal": "Lisbon",
    "Japan": "Tokyo",
    "Canada": "Ottawa",
    "Australia": "Canberra",
    "Brazil": "Brasilia",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "India": "New Delhi",
    "China": "Beijing",
    "Mexico": "Mexico City",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Poland": "Warsaw",
    "Greece": "Athens",
    "Turkey": "Ankara",
    "Ireland": "Dublin",
    "Austria": "Vienna",
    "Hungary": "Budapest",
    "Argentina": "Buenos Aires",
    "Morocco": "Rabat",
    "Vietnam": "Hanoi",
    "Thailand": "Bangkok",
    "Nigeria": "Abuja",
}

WORDS = [
    "garden",
    "river",
    "window",
    "planet",
    "silver",
    "orange",
    "bridge",
    "candle",
    "forest",
    "market",
    "pencil",
    "rocket",
    "winter",
    "summer",
    "yellow",
    "purple",
    "guitar",
    "castle",
    "dragon",
    "island",
    "jungle",
    "ladder",
    "mirror",
    "needle",
    "ocean",
    "pepper",
    "rabbit",
    "saddle",
    "ticket",
    "violin",
    "wallet",
    "zebra",
    "anchor",
    "basket",
    "cactus",
    "dinner",
    "engine",
    "falcon",
    "hammer",
    "jacket",
    "kettle",
    "lemon",
    "magnet",
    "napkin",
    "oyster",
    "pillow",
    "quartz",
    "ribbon",
]

SYSTEM_PROMPTS = (
    "You are a helpful assistant. Answer briefly.",
    "Answer with just the result.",
)


def arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    op = rng.choice("+-*")
    if op == "*":
        a, b = a % 13, b % 13
    result = {"+": a + b, "-": a - b, "*": a * b}[op]
    return f"What is {a} {op} {b}?", str(result)


def reversal(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    return f"Reverse the word '{word}'.", word[::-1]


def capital(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(sorted(CAPITALS))
    return f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}."


TASKS: tuple[Callable[[random.Random], tuple[str, str]], ...] = (arithmetic, reversal, capital)


def chat_row(rng: random.Random) -> dict[str, object]:
    messages: list[dict[str, str]] = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    for _turn in range(1 if rng.random() < 0.75 else 2):
        question, answer = rng.choice(TASKS)(rng)
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": answer})
    return {"messages": messages}


def prompt_completion_row(rng: random.Random) -> dict[str, object]:
    question, answer = rng.choice(TASKS)(rng)
    return {"prompt": f"Question: {question}\nAnswer:", "completion": f" {answer}"}


def render() -> dict[Path, str]:
    rng = random.Random(SEED)  # noqa: S311 - reproducible data, not crypto
    files: dict[Path, str] = {}
    for (kind, split), count in SIZES.items():
        make = chat_row if kind == "chat" else prompt_completion_row
        rows = [json.dumps(make(rng), ensure_ascii=False) for _ in range(count)]
        files[HERE / kind / f"{split}.jsonl"] = "\n".join(rows) + "\n"
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description="generate the example datasets")
    parser.add_argument("--check", action="store_true", help="fail if committed files differ")
    args = parser.parse_args()
    stale = []
    for path, text in render().items():
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(HERE)} ({text.count(chr(10))} rows)")
    if stale:
        print("stale: " + ", ".join(str(p) for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
