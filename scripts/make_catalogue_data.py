"""Regenerate builtin:catalogue and builtin:catalogue-test, the retrieval data shipped for `tunekit embed` (seeded).

$ python scripts/make_catalogue_data.py

The stock list of a made-up hardware shop: 300 products (12 kinds x 5 materials x 5 sizes), each described in
words ("Brass hinge, 10 mm"), and the queries its staff type, which use the shop's own stock codes
("need QEL-T-10"): a kind code, a material code, the size. The codes are arbitrary, so an off-the-shelf embedding
model can only match the size, and one fine-tuned on some products' queries must learn what the codes mean to
find the others. Training queries (catalogue) name 150 products, held-out queries (catalogue-test) the other 150;
every product's description is among the documents searched.
"""

from __future__ import annotations

import random
from pathlib import Path

from make_builtin_data import write  # scripts/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1] / "tunekit" / "datasets"

KINDS = {
    "KLD": "hex bolt",
    "VRN": "wood screw",
    "TSP": "wall plug",
    "MBR": "washer",
    "QEL": "hinge",
    "ZAF": "cable tie",
    "PRW": "pipe clamp",
    "LDX": "shelf bracket",
    "GMO": "door handle",
    "FYT": "rivet",
    "HUB": "threaded rod",
    "WEN": "spring",
}
MATERIALS = {"R": "stainless steel", "T": "brass", "V": "zinc-plated steel", "W": "nylon", "Y": "aluminium"}
SIZES = (4, 6, 8, 10, 12)
QUERIES = [
    "need {code}",
    "{code} price?",
    "is {code} in stock",
    "order 50 x {code}",
    "{kind} {material} {size} please",
    "{kind}/{material}/{size}",
    "how many {code} left",
    "customer wants {code}",
    "reorder {code} for the van",
    "{code} back in stock yet?",
]


def description(kind: str, material: str, size: int) -> str:
    name = f"{MATERIALS[material]} {KINDS[kind]}"
    return f"{name[0].upper()}{name[1:]}, {size} mm"


def query(kind: str, material: str, size: int, rng: random.Random) -> str:
    return rng.choice(QUERIES).format(code=f"{kind}-{material}-{size}", kind=kind, material=material, size=size)


def main() -> None:
    products = [(k, m, s) for k in KINDS for m in MATERIALS for s in SIZES]
    rng = random.Random(7)
    rng.shuffle(products)
    train, held_out = products[:150], products[150:]
    rows = [{"anchor": query(*product, rng), "positive": description(*product)} for product in train for _ in range(2)]
    rng.shuffle(rows)
    write(ROOT / "catalogue.jsonl", rows)
    write(ROOT / "catalogue-test.jsonl", [{"anchor": query(*p, rng), "positive": description(*p)} for p in held_out])


if __name__ == "__main__":
    main()
