"""Token-classification tags: their names, their order, their scheme, and the checks that name file, row and field.

    >>> rows = [{"tokens": ["Anna", "Berg", "flew"], "tags": ["B-PER", "I-PER", "O"]}]
    >>> resolve_tags(rows, [1], "train.jsonl", [], [], "", order=None, scheme="auto")
    (['O', 'B-PER', 'I-PER'], 'iob2')
    >>> resolve_tags([{"tokens": ["Berg"], "tags": ["I-PER"]}], [4], "train.jsonl", [], [], "", None, "auto")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tunekit.errors.DataError: train.jsonl, row 4: field 'tags[0]': I-PER with no PER entity open ...

Schemes (`tag.scheme`):
- iob2 (BIO, what `conll2003` on the Hub and most corpora use): B-X opens an entity of type X, I-X continues
  one. An I-X right after O, after the start, or after an entity of another type is refused, not fixed: it
  is a data error (an IOB1 file read as IOB2, or integer tags mapped through `tag.labels` in the wrong order),
  and seqeval's scoring would quietly count it as the start of an entity, so both what the model learns and
  the F1 it is judged by would follow boundaries the data never meant.
- iob1 (the original CoNLL-2003 files): I-X may open an entity; B-X only separates two adjacent X entities.
- plain: tags with no entity structure (part-of-speech tags): scored per token, not per entity.

Pure Python, no torch: `tunekit validate` runs the same checks as a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunekit.errors import DataError, UserError

PREFIXES = ("B-", "I-")


def resolve_tags(
    train: list[dict[str, Any]],
    train_numbers: Sequence[int],
    train_file: str,
    eval_rows: list[dict[str, Any]],
    eval_numbers: Sequence[int],
    eval_file: str,
    order: list[str] | None,
    scheme: str,
) -> tuple[list[str], str]:
    """(tag names in id order, scheme). Integer tags become names in place (`order`, i.e. `tag.labels`, names
    them); every tag must be one of `order`, or for eval rows one train has; iob2 sequences are checked."""
    parts = [(train, train_numbers, train_file), (eval_rows, eval_numbers, eval_file)]
    for rows, numbers, source in parts:
        _name_integers(rows, numbers, source, order)
    labels = list(order) if order is not None else default_order({tag for row in train for tag in row["tags"]})
    known = set(labels)
    for rows, numbers, source in parts:
        for index, row in enumerate(rows):
            for i, tag in enumerate(row["tags"]):
                if tag not in known:
                    where = "tag.labels" if order is not None else "the training rows"
                    raise DataError(
                        f"{source}, row {numbers[index]}: field 'tags[{i}]': {tag!r} is not in {where} "
                        f"({', '.join(labels)})"
                    )
    chosen = resolve_scheme(scheme, labels, train_file)
    if chosen == "iob2":
        for rows, numbers, source in parts:
            for index, row in enumerate(rows):
                check_iob2(row["tags"], source, numbers, index)
    return labels, chosen


def _name_integers(rows: list[dict[str, Any]], numbers: Sequence[int], source: str, order: list[str] | None) -> None:
    for index, row in enumerate(rows):
        tags = row["tags"]
        if not tags or not isinstance(tags[0], int):
            continue
        if order is None:
            raise UserError(
                f"{source}, row {numbers[index]}: the tags are integers; set tag.labels to their names in id order "
                "(conll2003: [O, B-PER, I-PER, B-ORG, I-ORG, B-LOC, I-LOC, B-MISC, I-MISC])"
            )
        for i, tag in enumerate(tags):
            if not 0 <= tag < len(order):
                raise DataError(
                    f"{source}, row {numbers[index]}: field 'tags[{i}]': tag id {tag} has no name in tag.labels "
                    f"({len(order)} names, ids 0 to {len(order) - 1})"
                )
        row["tags"] = [order[tag] for tag in tags]


def default_order(tags: set[str]) -> list[str]:
    """O first, then for each entity type (sorted) its B- and I- tags; other tags (plain schemes) sorted."""
    types = sorted({tag[2:] for tag in tags if tag.startswith(PREFIXES)})
    entity = [f"{prefix}{kind}" for kind in types for prefix in PREFIXES if f"{prefix}{kind}" in tags]
    rest = sorted(tags - set(entity) - {"O"})
    return (["O"] if "O" in tags else []) + entity + rest


def resolve_scheme(scheme: str, labels: list[str], source: str) -> str:
    """`tag.scheme`, with auto decided from the tag names: iob2 when all are O, B-X or I-X, plain when none has
    a B-/I- prefix; a mix stops the run (a misspelt tag such as `PER` next to `B-PER` looks just like that)."""
    entity = [tag for tag in labels if tag.startswith(PREFIXES)]
    other = [tag for tag in labels if tag != "O" and not tag.startswith(PREFIXES)]
    if scheme in ("iob2", "iob1") and other:
        raise DataError(
            f"{source}: tag.scheme {scheme} tags are O, B-TYPE or I-TYPE; {', '.join(map(repr, other))} is none of "
            "these (set tag.scheme: plain for tags without entities, such as part-of-speech tags)"
        )
    if scheme != "auto":
        return scheme
    if entity and other:
        raise DataError(
            f"{source}: the tags mix entity tags ({', '.join(entity[:3])}) with others ({', '.join(other[:3])}); "
            "fix the rows, or set tag.scheme: plain to treat every tag as a plain label"
        )
    return "iob2" if entity else "plain"


def check_iob2(tags: list[str], source: str, numbers: Sequence[int], index: int) -> None:
    """Every I-X continues an X entity (after B-X or I-X); DataError naming the tag otherwise (and the row:
    `numbers[index]` of `source`, looked up only then)."""
    previous = "O"
    for i, tag in enumerate(tags):
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            after = "at the start" if i == 0 else f"after {previous}"
            raise DataError(
                f"{source}, row {numbers[index]}: field 'tags[{i}]': {tag} with no {tag[2:]} entity open ({after}); "
                f"in IOB2 an entity starts with B-{tag[2:]} (set tag.scheme: iob1 if the data is IOB1, as the "
                "original CoNLL-2003 files are)"
            )
        previous = tag


def entity_counts(rows: list[dict[str, Any]], scheme: str) -> dict[str, int]:
    """Entities per type (seqeval's reading of the tags), or tag counts for a plain scheme: for `validate`."""
    counts: dict[str, int] = {}
    for row in rows:
        previous = "O"
        for tag in row["tags"]:
            if scheme == "plain":
                counts[tag] = counts.get(tag, 0) + 1
            elif tag.startswith("B-") or (tag.startswith("I-") and previous[2:] != tag[2:]):
                counts[tag[2:]] = counts.get(tag[2:], 0) + 1
            previous = tag
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def add_prefix_space(backend: Any) -> bool:
    """Give every pre-split word its leading space under a byte-level BPE tokenizer (GPT-2, RoBERTa, the tiny
    models); True when `backend` (a `tokenizers.Tokenizer`, changed in place) needed it.

    Byte-level BPE folds the space before a word into its first token (`Ġword`). Words handed over one by one
    (`is_split_into_words`) come without it, so a training sentence would not be tokenised as the same
    sentence in running text, which is what `pipeline("token-classification")` reads. transformers asks the
    same of RoBERTa for pre-split words (`add_prefix_space=True`); the saved tokenizer keeps the setting, so
    both read words alike. Word-piece tokenizers (BERT, MiniLM) split on spaces and are left as they are.
    """
    import json

    from tokenizers import Tokenizer

    state = json.loads(backend.to_str())

    def visit(node: Any) -> bool:
        if not isinstance(node, dict):
            return False
        changed = False
        if node.get("type") == "ByteLevel" and not node.get("add_prefix_space"):
            node["add_prefix_space"] = changed = True
        for child in node.get("pretokenizers") or []:  # a Sequence of pre-tokenizers
            changed = visit(child) or changed
        return changed

    if not visit(state.get("pre_tokenizer")):
        return False
    backend.pre_tokenizer = Tokenizer.from_str(json.dumps(state)).pre_tokenizer
    return True
