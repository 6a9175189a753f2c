"""Regenerate builtin:entities and builtin:entities-test, the named-entity data shipped for `tunekit tag` (seeded).

$ python scripts/make_entity_data.py

Sentences in CoNLL-2003 style (one token per word, punctuation apart, IOB2 tags for PER, LOC and ORG), written
from templates for tunekit. The held-out set (entities-test) uses the same templates but none of the first names,
surnames, places or organisation names of the training set, so a tagger scores there only by reading the context
("flew to ...", "works for ...") and the shape of a name, not by remembering it.
"""

from __future__ import annotations

import random
from pathlib import Path

from make_builtin_data import write  # scripts/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1] / "tunekit" / "datasets"

# Each pool: training names, then held-out names (disjoint).
FIRST = (
    "Anna Omar Lena Tomas Sofia Marco Ines Jonas Clara Felix Maya Ivan Nora Hugo Elena Pavel Lucia Rafael Greta "
    "Malik Alma Bruno Yara Oscar Dalia Emil Leila Victor Hanna Samir Ida Mateo Vera Kofi Selma Arjun Mira Tariq "
    "Rosa Linus",
    "Priya Lukas Amara Nikolai Zofia Diego Freya Kenji Olga Matteo Noor Stefan Ayla Joaquin Esme",
)
LAST = (
    "Berg Haddad Novak Silva Lindqvist Moreau Okafor Rossi Kowalski Jensen Duarte Petrov Laine Santos Weber "
    "Nakamura Varga Costa Holm Akhtar Brennan Fischer Ortega Mensah Quinn Romero Sato Ibrahim Keller Dubois",
    "Eriksen Castellano Nowicki Abara Lindgren Marchetti Okonkwo Halvorsen Tanaka Pereira Vasquez Solberg "
    "Adeyemi Kruger Moretti",
)
PLACES = (
    "Oslo Lima Cairo Lyon Porto Krakow Bergen Nairobi Seville Turin Ghent Tallinn Leeds Dakar Hobart Malmo "
    "Quebec Split Cork Graz Accra Bilbao Tampere Dresden Perth Salta Fez Kyoto Busan Cusco "
    "New_Alden Port_Vale Saint_Aubin Cape_Rosa Villa_Nueva Lake_Orin North_Fenwick San_Tello Glen_Ard East_Mere",
    "Quito Hanoi Tbilisi Zagreb Arequipa Kumasi Gdansk Nantes Aarhus Brno Mombasa Rosario Fort_Lyle Santa_Irene "
    "West_Harrow",
)
ORG_NAMES = (
    "Helix Norvik Brightwater Solano Kestrel Arbor Meridian Vantage Corvid Lumen Halden Tidewell Ostrava Pinecrest "
    "Redmark Silverline Altamira Bluefjord Ironbridge Westgate Calder Orion Marlowe Fennick Ashby Torvald Quill "
    "Larkspur Monvale Everly",
    "Zephyrine Kalmar Drummond Obsidian Wrenfield Castellan Novaterra Harrowgate Velmont Stonebrook Amberlay Rivenhall",
)
ORG_KINDS = "Labs Bank Motors Foods Group Media Airlines Energy Systems Logistics Pharma Studios".split()

TEMPLATES = [
    "{PER} flew to {LOC} on Monday .",
    "{PER} works for {ORG} in {LOC} .",
    "{ORG} opened a new office in {LOC} .",
    "Yesterday {PER} met {PER} at the {ORG} headquarters .",
    "The mayor of {LOC} , {PER} , praised {ORG} .",
    "{PER} said the trip from {LOC} to {LOC} took six hours .",
    "Shares of {ORG} rose after {PER} joined the board .",
    "{PER} grew up in {LOC} and studied in {LOC} .",
    "According to {PER} , {ORG} will hire staff in {LOC} .",
    "{LOC} is famous for its markets and its old harbour .",
    "A spokesperson for {ORG} declined to comment .",
    "{PER} and {PER} visited {LOC} last summer .",
    "The train to {LOC} was delayed again this morning .",
    "{ORG} signed a supply deal with {ORG} .",
    "She moved to {LOC} to work at {ORG} .",
    "We thank {PER} for the photos from {LOC} .",
    "{PER} , the chief executive of {ORG} , resigned on Friday .",
    "Fans in {LOC} cheered when {PER} scored twice .",
    "{ORG} reported higher profits in {LOC} this year .",
    "Police in {LOC} are looking for {PER} .",
    "{PER} wrote a book about growing up in {LOC} .",
    "The new bridge in {LOC} was built by {ORG} .",
    "Last week {PER} interviewed {PER} for {ORG} .",
    "Flights between {LOC} and {LOC} were cancelled because of fog .",
    "{PER} will speak at a conference in {LOC} next month .",
    "Workers at {ORG} voted to strike .",
    "Ask {PER} about the meeting .",
    "{ORG} bought a small factory near {LOC} .",
    "Doctors in {LOC} praised the work of {PER} .",
    "The museum in {LOC} thanked {ORG} for the gift .",
    "{PER} lost the final to {PER} in {LOC} .",
    "Investors expect {ORG} to leave {LOC} soon .",
    "My cousin {PER} lives near {LOC} .",
    "Engineers from {ORG} repaired the dam outside {LOC} .",
    "{PER} has taught history in {LOC} for ten years .",
    "Tickets for the concert by {PER} sold out in {LOC} .",
    "The report by {ORG} blamed the delays on {PER} .",
    "Heavy rain closed the roads around {LOC} .",
    "Customers of {ORG} in {LOC} complained about prices .",
    "{PER} thanked her coach , {PER} , after the race .",
    "A court in {LOC} fined {ORG} on Tuesday .",
    "Mr {PER} and Ms {PER} opened a bakery in {LOC} .",
    "The festival in {LOC} is sponsored by {ORG} .",
]
PLAIN = [  # sentences without entities: most tokens of real text are O
    "The weather was cold all week .",
    "Prices went up again in the spring .",
    "Nobody answered the phone on Sunday .",
    "The meeting ended early because of the storm .",
    "They ordered soup , bread and tea .",
    "It was the longest queue of the year .",
]


def entity(kind: str, pools: int, rng: random.Random) -> list[str]:
    """The words of one entity of `kind` from pool 0 (train) or 1 (held out)."""
    if kind == "PER":
        first = rng.choice(FIRST[pools].split())
        return [first, rng.choice(LAST[pools].split())] if rng.random() < 0.6 else [first]
    if kind == "LOC":
        return rng.choice(PLACES[pools].split()).split("_")
    return [rng.choice(ORG_NAMES[pools].split()), rng.choice(ORG_KINDS)]


def sentence(template: str, pools: int, rng: random.Random) -> dict[str, list[str]]:
    tokens: list[str] = []
    tags: list[str] = []
    for word in template.split():
        if word.startswith("{"):
            kind = word.strip("{}")
            words = entity(kind, pools, rng)
            tokens += words
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
        else:
            tokens.append(word)
            tags.append("O")
    return {"tokens": tokens, "tags": tags}


def rows(count: int, pools: int, seed: int) -> list[dict[str, list[str]]]:
    rng, out, seen = random.Random(seed), [], set()
    while len(out) < count:
        template = rng.choice(PLAIN) if rng.random() < 0.06 else rng.choice(TEMPLATES)
        row = sentence(template, pools, rng)
        key = " ".join(row["tokens"])
        if key not in seen or template in PLAIN:
            seen.add(key)
            out.append(row)
    return out


def main() -> None:
    for pool in (FIRST, LAST, PLACES, ORG_NAMES):  # training and held-out names share none
        assert not set(pool[0].split()) & set(pool[1].split()), pool
    write(ROOT / "entities.jsonl", rows(1000, 0, seed=2024))
    write(ROOT / "entities-test.jsonl", rows(150, 1, seed=2025))


if __name__ == "__main__":
    main()
