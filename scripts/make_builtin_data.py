"""Regenerate the datasets shipped in tunekit/datasets/ (deterministic).

$ python scripts/make_builtin_data.py
"""

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "tunekit" / "datasets"
SYSTEM = "You reverse the order of words."


def main() -> None:
    words = (ROOT / "words.txt").read_text().split()
    rng = random.Random(1234)
    seen: set[tuple[str, ...]] = set()
    rows = []
    while len(rows) < 320:
        picked = tuple(rng.sample(words, 3))
        if picked in seen:
            continue
        seen.add(picked)
        messages = [
            {"role": "user", "content": f"Reverse the words: {' '.join(picked)}"},
            {"role": "assistant", "content": " ".join(reversed(picked))},
        ]
        if len(rows) % 4 == 0:
            messages.insert(0, {"role": "system", "content": SYSTEM})
        rows.append({"messages": messages})
    write(ROOT / "reversal.jsonl", rows)
    write(ROOT / "reversal-preference.jsonl", preference_rows(words))


def preference_rows(words: list[str]) -> list[dict]:
    """Chosen answers reverse the prompt's words; rejected ones copy them.

    2,000 distinct pairs, so a tiny model must learn the rule rather than memorise pairs: with a few
    hundred it memorises them and held-out accuracy stays near chance.
    """
    rng = random.Random(4321)
    rows = []
    for _ in range(2000):
        picked = rng.sample(words, 3)
        prompt = [{"role": "user", "content": f"Reverse the words: {' '.join(picked)}"}]
        rows.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": " ".join(reversed(picked))}],
                "rejected": [{"role": "assistant", "content": " ".join(picked)}],
            }
        )
    return rows


def write(path: Path, rows: list[dict]) -> None:
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
