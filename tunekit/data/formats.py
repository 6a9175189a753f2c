"""Row formats: detect one from a row's fields, check every row, normalise to trl's forms.

    >>> detect_format({"instruction": "Add 2 and 3", "input": "", "output": "5"})
    'alpaca'
    >>> normalise({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
    ...           "sharegpt")
    {'messages': [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'hello'}]}

Normalised forms, as trl's SFTTrainer takes them:
- text: `{"text": str}`; loss on every token.
- prompt_completion: `{"prompt": str | messages, "completion": str | messages}`; alpaca becomes this,
  rendered with the classic Alpaca prompt so it works on models without a chat template.
- messages: `{"messages": [{"role", "content"}, ...]}`; sharegpt becomes this.
- preference: `{"prompt", "chosen", "rejected"}` (strings, or message lists); an implicit prompt (two
  conversations sharing their first turns, or Anthropic-HH "Human:"/"Assistant:" text) is split off.
- unpaired: `{"prompt", "completion", "label": bool}` (KTO).
- prompt: `{"prompt": str | messages}` (PPO, GRPO: the policy writes the completions).
- classification: `{"text": str, "label": str}`; an integer label becomes its decimal string.
- tagging: `{"tokens": [str], "tags": [str] | [int]}`, one tag per token (`tunekit tag`); conll2003's
  `ner_tags` are read as the tags. Integer tags are named later, from `tag.labels` (tunekit.data.tagging).
- pair `{"anchor", "positive"}`, triplet (and `negative`), scored_pair `{"sentence1", "sentence2",
  "score": float}`: texts for `tunekit embed`.
Pure Python: no torch, no datasets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from tunekit.errors import DataError

ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "tool": "tool",
}
ALPACA_PROMPT = (
    "Below is an instruction that describes a task{context}. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n{input}### Response:\n"
)

# The fields that identify a format, most specific first.
_SIGNATURES: list[tuple[str, tuple[str, ...]]] = [
    ("tagging", ("tokens", "tags")),
    ("tagging", ("tokens", "ner_tags")),
    ("scored_pair", ("sentence1", "sentence2", "score")),
    ("triplet", ("anchor", "positive", "negative")),
    ("pair", ("anchor", "positive")),
    ("messages", ("messages",)),
    ("sharegpt", ("conversations",)),
    ("alpaca", ("instruction", "output")),
    ("preference", ("chosen", "rejected")),
    ("unpaired", ("prompt", "completion", "label")),
    ("prompt_completion", ("prompt", "completion")),
    ("classification", ("text", "label")),
    ("text", ("text",)),
    ("prompt", ("prompt",)),
]


def detect_format(row: dict[str, Any]) -> str | None:
    for name, fields in _SIGNATURES:
        if all(field in row for field in fields):
            return name
    return None


def describe_formats() -> str:
    return "; ".join(f"{name}: {', '.join(fields)}" for name, fields in _SIGNATURES)


def normalised_kind(fmt: str) -> str:
    """The trl form a format becomes: text, prompt_completion or messages."""
    return {"alpaca": "prompt_completion", "sharegpt": "messages"}.get(fmt, fmt)


class RowError(ValueError):
    """A problem with one row; the caller adds the file and row number."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field!r}: {problem}")
        self.field = field


def normalise(row: dict[str, Any], fmt: str) -> dict[str, Any]:
    """Check one row against `fmt` and return it in trl's form. Raises RowError."""
    if fmt == "text":
        return {"text": _string(row, "text")}
    if fmt == "prompt_completion":
        return {"prompt": _string_or_messages(row, "prompt"), "completion": _string_or_messages(row, "completion")}
    if fmt == "alpaca":
        return _alpaca(row)
    if fmt == "messages":
        return {"messages": check_messages(row.get("messages"), "messages")}
    if fmt == "sharegpt":
        return {"messages": _sharegpt(row.get("conversations"))}
    if fmt == "preference":
        return _preference(row)
    if fmt == "unpaired":
        return _unpaired(row)
    if fmt == "prompt":
        return {"prompt": _string_or_messages(row, "prompt")}
    if fmt == "classification":
        return {"text": _string(row, "text"), "label": _class_label(row)}
    if fmt == "tagging":
        return _tagging(row)
    if fmt in ("pair", "triplet"):
        fields = ("anchor", "positive", "negative") if fmt == "triplet" else ("anchor", "positive")
        return {field: _string(row, field) for field in fields}
    if fmt == "scored_pair":
        return {"sentence1": _string(row, "sentence1"), "sentence2": _string(row, "sentence2"), "score": _score(row)}
    raise ValueError(f"unknown format {fmt!r}")


# One rule for answers in every format: a completion, an Alpaca output, chosen/rejected, an assistant turn
# (of messages, sharegpt, preference or KTO conversations) must hold text. Training on an empty answer only
# teaches the model to stop at once, and it is far more often a broken export than a wish.
EMPTY_ANSWER = " (an answer must hold text, in every format)"
ANSWERS = ("completion", "output", "chosen", "rejected")


def _string(row: dict[str, Any], field: str, allow_empty: bool = False) -> str:
    if field not in row or row[field] is None:
        raise RowError(field, "missing")
    value = row[field]
    if not isinstance(value, str):
        raise RowError(field, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RowError(field, "empty" + (EMPTY_ANSWER if field in ANSWERS else ""))
    return value


def _string_or_messages(row: dict[str, Any], field: str) -> str | list[dict[str, str]]:
    if isinstance(row.get(field), list):
        return check_messages(row[field], field, need_assistant=False)
    return _string(row, field)


def _alpaca(row: dict[str, Any]) -> dict[str, str]:
    instruction = _string(row, "instruction")
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise RowError("input", f"expected a string, got {type(extra).__name__}")
    prompt = ALPACA_PROMPT.format(
        context=", paired with an input that provides further context" if extra.strip() else "",
        instruction=instruction,
        input=f"### Input:\n{extra}\n\n" if extra.strip() else "",
    )
    return {"prompt": prompt, "completion": _string(row, "output")}


def check_messages(value: Any, field: str, need_assistant: bool = True) -> list[dict[str, str]]:
    if value is None:
        raise RowError(field, "missing")
    if not isinstance(value, list) or not value:
        raise RowError(field, "expected a non-empty list of {role, content} messages")
    messages = []
    for i, message in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise RowError(where, f"expected a mapping with role and content, got {type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise RowError(f"{where}.role", f"{role!r} is not one of: {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise RowError(f"{where}.content", "missing or not a string")
        if role == "assistant" and not content.strip():
            raise RowError(f"{where}.content", f"empty{EMPTY_ANSWER}")
        messages.append({"role": role, "content": content})
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        raise RowError(field, "no assistant message to learn from")
    return messages


def _sharegpt(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RowError("conversations", "expected a non-empty list of {from, value} turns")
    turns = []
    for i, turn in enumerate(value):
        where = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise RowError(where, "expected a mapping with from and value")
        speaker = turn.get("from")
        if speaker not in SHAREGPT_ROLES:
            raise RowError(f"{where}.from", f"{speaker!r} is not one of: {', '.join(SHAREGPT_ROLES)}")
        if not isinstance(turn.get("value"), str):
            raise RowError(f"{where}.value", "missing or not a string")
        turns.append({"role": SHAREGPT_ROLES[speaker], "content": turn["value"]})
    return check_messages(turns, "conversations")


HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def _preference(row: dict[str, Any]) -> dict[str, Any]:
    if "prompt" in row and row["prompt"] is not None:
        prompt = _string_or_messages(row, "prompt")
        conversational = isinstance(prompt, list)
        chosen, rejected = (_completion(row, field, conversational) for field in ("chosen", "rejected"))
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if isinstance(chosen, str) and isinstance(rejected, str):
        if not (HH_TURN.search(chosen) and HH_TURN.search(rejected)):
            raise RowError(
                "prompt",
                "missing: chosen/rejected strings need a prompt field, or Anthropic-HH "
                "'\\n\\nHuman: ... \\n\\nAssistant: ...' turns",
            )
        chosen, rejected = _hh_messages(chosen, "chosen"), _hh_messages(rejected, "rejected")
    else:
        chosen = check_messages(chosen, "chosen")
        rejected = check_messages(rejected, "rejected")
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0 or chosen[shared]["role"] != "assistant" or rejected[shared]["role"] != "assistant":
        raise RowError(
            "chosen", "chosen and rejected must share their opening turns and then differ in an assistant turn"
        )
    return {"prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:]}


def _completion(row: dict[str, Any], field: str, conversational: bool) -> str | list[dict[str, str]]:
    if conversational:
        if not isinstance(row.get(field), list):
            raise RowError(field, "expected a list of messages, as the prompt is one")
        return check_messages(row[field], field)
    return _string(row, field)


def _hh_messages(text: str, field: str) -> list[dict[str, str]]:
    parts = HH_TURN.split(text)
    if parts[0].strip():
        raise RowError(field, "text before the first 'Human:' turn")
    roles = {"Human": "user", "Assistant": "assistant"}
    turns = [{"role": roles[speaker], "content": content.strip()} for speaker, content in zip(parts[1::2], parts[2::2])]
    return check_messages(turns, field)


def _unpaired(row: dict[str, Any]) -> dict[str, Any]:
    prompt = _string_or_messages(row, "prompt")
    completion = _completion(row, "completion", isinstance(prompt, list))
    label = row.get("label")
    if isinstance(label, str) and label.lower() in ("true", "false"):
        label = label.lower() == "true"
    if label in (0, 1) and not isinstance(label, float):
        label = bool(label)
    if not isinstance(label, bool):
        raise RowError("label", f"expected true (desirable) or false (undesirable), got {label!r}")
    return {"prompt": prompt, "completion": completion, "label": label}


def _class_label(row: dict[str, Any]) -> str:
    """A class label as its name: strings as they are, integers (0, 1, ...) as decimal strings."""
    label = row.get("label")
    if label is None:
        raise RowError("label", "missing")
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise RowError("label", f"expected a class name or an integer, got {type(label).__name__} {label!r}")
    name = str(label).strip()
    if not name:
        raise RowError("label", "empty")
    return name


def _tagging(row: dict[str, Any]) -> dict[str, Any]:
    """Words and one tag per word: names (B-PER, NN) or integer ids, not both in one row."""
    tokens, field = row.get("tokens"), "tags" if "tags" in row else "ner_tags"
    tags = row.get(field)
    for name, value in (("tokens", tokens), (field, tags)):
        if not isinstance(value, list) or not value:
            raise RowError(name, "missing" if value is None else "expected a non-empty list")
    for i, token in enumerate(tokens):
        if not isinstance(token, str) or not token.strip():
            raise RowError(f"tokens[{i}]", f"expected a word, got {token!r}")
    if len(tags) != len(tokens):
        raise RowError(field, f"{len(tags)} tags for {len(tokens)} tokens; give one tag per token")
    kinds = {type(tag) for tag in tags}
    if kinds not in ({str}, {int}):
        for i, tag in enumerate(tags):
            if isinstance(tag, bool) or not isinstance(tag, (str, int)):
                raise RowError(f"{field}[{i}]", f"expected a tag name or an integer id, got {tag!r}")
        mixed = next(i for i, tag in enumerate(tags) if type(tag) is not type(tags[0]))
        raise RowError(f"{field}[{mixed}]", "tag names and integer ids mixed in one row")
    if kinds == {str}:
        for i, tag in enumerate(tags):
            if not tag.strip():
                raise RowError(f"{field}[{i}]", "empty tag")
        tags = [tag.strip() for tag in tags]
    return {"tokens": list(tokens), "tags": list(tags)}


def _score(row: dict[str, Any]) -> float:
    import math

    score = row.get("score")
    if isinstance(score, str):
        try:
            score = float(score)  # CSV cells
        except ValueError:
            raise RowError("score", f"expected a number, got {score!r}") from None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise RowError("score", f"expected a number, got {score!r}")
    return float(score)


def class_labels(names: Iterable[str]) -> list[str]:
    """A label set in class-id order: sorted, numerically when all are integers."""
    names = set(names)
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def prompt_part(row: dict[str, Any]) -> str | list[dict[str, str]]:
    """The prompt a normalised row poses: its `prompt`, or a chat with its trailing assistant turns cut
    (the model answers the last user turn). Rows with only assistant turns give an empty list."""
    if "prompt" in row:
        return row["prompt"]
    messages = list(row["messages"])
    while messages and messages[-1]["role"] == "assistant":
        messages.pop()
    return messages


def prompts_only(rows: Any) -> Any:
    """A dataset of normalised rows as the prompts they pose (`prompt_part`), for the RL methods."""
    names = [name for name in rows.column_names if name != "_source"]
    return rows.map(_prompt_batch, batched=True, remove_columns=names)


def _prompt_batch(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    rows = (dict(zip(batch, values)) for values in zip(*batch.values()))
    return {"prompt": [prompt_part(row) for row in rows]}


def check_rows(rows: list[tuple[int, dict[str, Any]]], fmt: str, source: str) -> list[dict[str, Any]]:
    """Normalise every row; the first bad one raises DataError naming file, row and field."""
    if fmt == "auto":
        raise ValueError("resolve 'auto' with detect_format first")
    out = []
    for number, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{source}, row {number}: {not_an_object(row)}")
        try:
            out.append(normalise(row, fmt))
        except RowError as err:
            raise DataError(f"{source}, row {number}: {err} (format {fmt})") from None
    return out


def not_an_object(row: Any) -> str:
    if isinstance(row, list) and row and all(isinstance(m, dict) and "role" in m for m in row):
        return 'a bare list of messages; write each row as an object: {"messages": [...]}'
    return f"expected an object with fields, got {type(row).__name__}"


def resolve_format(declared: str, first_row: Any, source: str) -> str:
    if not isinstance(first_row, dict):
        raise DataError(f"{source}, row 1: {not_an_object(first_row)}")
    if declared != "auto":
        return declared
    detected = detect_format(first_row)
    if detected is None:
        fields = ", ".join(sorted(first_row)) or "none"
        raise DataError(
            f"{source}, row 1: cannot detect the data format from fields ({fields}); "
            f"expected one of {describe_formats()}; or set data.format"
        )
    return detected


# The fields each normalised kind has, in this order (tunekit.data builds Arrow columns from them).
KIND_COLUMNS: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "prompt_completion": ("prompt", "completion"),
    "messages": ("messages",),
    "preference": ("prompt", "chosen", "rejected"),
    "unpaired": ("prompt", "completion", "label"),
    "prompt": ("prompt",),
    "classification": ("text", "label"),
    "tagging": ("tokens", "tags"),
    "pair": ("anchor", "positive"),
    "triplet": ("anchor", "positive", "negative"),
    "scored_pair": ("sentence1", "sentence2", "score"),
}
TURN_FIELDS = ("messages", "conversations", "prompt", "completion", "chosen", "rejected")


def renamed(row: dict[str, Any], columns: dict[str, str], roles: dict[str, str]) -> dict[str, Any]:
    """A row in the field names tunekit expects: `columns` maps expected -> the source's own names (for
    turns also `role` / `content`), `roles` the source's role names -> tunekit's."""
    out = dict(row)
    for expected, theirs in columns.items():
        if expected not in ("role", "content") and theirs in row:
            out[expected] = out.pop(theirs) if theirs != expected else row[theirs]
    role_key, content_key = columns.get("role"), columns.get("content")
    if not (role_key or content_key or roles):
        return out
    for name in TURN_FIELDS:
        turns = out.get(name)
        if isinstance(turns, list):
            out[name] = [_renamed_turn(turn, role_key, content_key, roles) for turn in turns]
    return out


def _renamed_turn(turn: Any, role_key: str | None, content_key: str | None, roles: dict[str, str]) -> Any:
    if not isinstance(turn, dict):
        return turn
    turn = dict(turn)
    if role_key and role_key in turn:
        turn["role"] = turn.pop(role_key)
    if content_key and content_key in turn:
        turn["content"] = turn.pop(content_key)
    if "role" in turn and turn["role"] in roles:
        turn["role"] = roles[turn["role"]]
    return turn


def normalise_batch(
    batch: dict[str, list[Any]],
    indices: list[int],
    fmt: str,
    columns: dict[str, str],
    roles: dict[str, str],
    conversational: bool,
    source: int,
) -> dict[str, list[Any]]:
    """`normalise` over a batch (a `datasets.map` with indices): the normalised columns, `_problem` (None, or
    `field ...: problem` for a bad row, which gets placeholder values of the right types), `_index` (the row's
    position in its source, for its number in messages) and `_source`."""
    kind = normalised_kind(fmt)
    names = KIND_COLUMNS[kind]
    out: dict[str, list[Any]] = {name: [] for name in (*names, "_problem", "_index", "_source")}
    for index, values in zip(indices, zip(*batch.values())):
        row = renamed(dict(zip(batch, values)), columns, roles)
        try:
            normalised = normalise(row, fmt)
            problem = _mixed_form(normalised, conversational)
        except RowError as err:
            normalised, problem = {}, str(err)
        if problem is not None:
            normalised = _placeholder(kind, conversational)
        if kind == "tagging":  # one Arrow type: integer ids as their decimal strings
            normalised["tags"] = [str(tag) for tag in normalised["tags"]]
        for name in names:
            out[name].append(normalised[name])
        out["_problem"].append(problem)
        out["_index"].append(index)
        out["_source"].append(source)
    return out


def kind_features(kind: str, conversational: bool) -> Any:
    """The Arrow schema of normalised rows (datasets.Features): given, not inferred, since `datasets.map`
    would otherwise cast a column back to the source's type of the same name (an integer label to int)."""
    from datasets import Features, List, Value

    text = Value("string")
    turns = List({"role": Value("string"), "content": Value("string")})
    part = turns if conversational else text
    types = {
        "text": text,
        "messages": turns,
        "prompt": part,
        "completion": part,
        "chosen": part,
        "rejected": part,
        "label": Value("bool") if kind == "unpaired" else text,
        "tokens": List(text),
        "tags": List(text),  # names, or integer ids as their decimal strings (tunekit.data names them)
        "anchor": text,
        "positive": text,
        "negative": text,
        "sentence1": text,
        "sentence2": text,
        "score": Value("float64"),
    }
    book = {"_problem": Value("string"), "_index": Value("int64"), "_source": Value("int32")}
    return Features({**{name: types[name] for name in KIND_COLUMNS[kind]}, **book})


def is_conversational(row: dict[str, Any]) -> bool:
    """A normalised row that holds chat messages (so the model needs a chat template)."""
    return "messages" in row or isinstance(row.get("prompt"), list)


def _mixed_form(row: dict[str, Any], conversational: bool) -> str | None:
    """Arrow keeps one type per column: every row of a source is text, or every row is messages."""
    if is_conversational(row) == conversational:
        return None
    found, first = ("a list of messages", "text") if is_conversational(row) else ("text", "a list of messages")
    return f"field 'prompt': {found}, where the first row has {first}; use one form in every row"


def _placeholder(kind: str, conversational: bool) -> dict[str, Any]:
    empty: Any = [] if conversational else ""
    values = {"text": "", "messages": [], "prompt": empty, "completion": empty, "chosen": empty, "rejected": empty}
    texts = {"anchor": "", "positive": "", "negative": "", "sentence1": "", "sentence2": "", "score": 0.0}
    return {**values, **texts, "tokens": [], "tags": [], "label": False if kind == "unpaired" else ""}
