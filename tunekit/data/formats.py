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
from typing import Any

from tunekit.errors import DataError

FORMATS = (
    "text",
    "prompt_completion",
    "messages",
    "alpaca",
    "sharegpt",
    "preference",
    "unpaired",
    "prompt",
    "classification",
    "tagging",
    "pair",
    "triplet",
    "scored_pair",
)
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


def _string(row: dict[str, Any], field: str, allow_empty: bool = False) -> str:
    if field not in row or row[field] is None:
        raise RowError(field, "missing")
    value = row[field]
    if not isinstance(value, str):
        raise RowError(field, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RowError(field, "empty")
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
    return [{"role": roles[speaker], "content": content.strip()} for speaker, content in zip(parts[1::2], parts[2::2])]


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


def class_labels(rows: list[dict[str, Any]]) -> list[str]:
    """The label set of classification rows in class-id order: sorted, numerically when all are integers."""
    names = {row["label"] for row in rows}
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


def unpair(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Preference pairs as KTO rows: chosen is desirable, rejected is not."""
    out = []
    for row in rows:
        out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
        out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
    return out


def check_rows(rows: list[tuple[int, dict[str, Any]]], fmt: str, source: str) -> list[dict[str, Any]]:
    """Normalise every row; the first bad one raises DataError naming file, row and field."""
    if fmt == "auto":
        raise ValueError("resolve 'auto' with detect_format first")
    out = []
    for number, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{source}, row {number}: expected an object, got {type(row).__name__}")
        try:
            out.append(normalise(row, fmt))
        except RowError as err:
            raise DataError(f"{source}, row {number}: {err} (format {fmt})") from None
    return out


def resolve_format(declared: str, first_row: dict[str, Any], source: str) -> str:
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
