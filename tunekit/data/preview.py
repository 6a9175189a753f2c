"""Render training examples as the trainer will see them, marking the tokens that carry loss.

    >>> from tunekit.models.tiny import build_tokenizer
    >>> preview = Preview.from_tiny("llama")
    >>> shown = preview.render({"prompt": "2+2=", "completion": "4"}, "prompt_completion", "completion")
    >>> shown.text[shown.spans[0][0]:shown.spans[0][1]]
    '4<|end|>'

Uses the `tokenizers` library and jinja2 directly (no torch, no transformers), so `tunekit validate`
stays fast. The chat template is rendered the way transformers renders it (sandboxed jinja2,
trim_blocks, lstrip_blocks, `{% generation %}` marking assistant spans); a test checks the marks
against transformers' own assistant masks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

_START, _END = "\ue000", "\ue001"  # private-use characters bracketing generation spans
_MARKS = re.compile(f"([{_START}{_END}])")


class _Generation(Extension):
    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_mark"), [], [], body).set_lineno(lineno)

    def _mark(self, caller: Any) -> str:
        return f"{_START}{caller()}{_END}"


def _raise(message: str) -> None:
    raise ValueError(message)


@dataclass
class Rendered:
    text: str
    spans: list[tuple[int, int]]  # character ranges that carry loss
    ids: list[int]
    mask: list[int]  # 1 where the token carries loss

    @property
    def loss_tokens(self) -> int:
        return sum(self.mask)


class Preview:
    def __init__(self, tokenizer: Any, chat_template: str | None, special: dict[str, str]) -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.special = special
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, loopcontrols]
        )
        env.filters["tojson"] = lambda value, indent=None, **_: json.dumps(value, indent=indent, ensure_ascii=False)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self.template = env.from_string(chat_template) if chat_template else None
        self.has_markers = bool(chat_template) and re.search(r"\{%-?\s*generation\s*-?%\}", chat_template) is not None

    @classmethod
    def from_tiny(cls, arch: str) -> Preview:
        from tunekit.models.tiny import build_tokenizer

        parts = build_tokenizer(arch)
        return cls(parts.tokenizer, parts.chat_template, parts.special)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> Preview:
        """From a loaded transformers fast tokenizer: its `tokenizers` backend and chat template."""
        special = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
        backend = tokenizer.backend_tokenizer
        return cls(backend, tokenizer.chat_template, special)

    @classmethod
    def from_folder(cls, folder: Path) -> Preview:
        from tokenizers import Tokenizer

        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
        template = config.get("chat_template")
        if (folder / "chat_template.jinja").exists():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        if isinstance(template, list):  # named variants: the default one is what training uses
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        special = {
            key: (value["content"] if isinstance(value, dict) else value)
            for key, value in config.items()
            if key.endswith("_token") and value is not None
        }
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # Some tokenizer.json files pad or cut to a fixed length (all-MiniLM-L6-v2: 128); measure the text itself.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return cls(tokenizer, template, special)

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> tuple[str, list]:
        """Rendered text and the character spans of assistant turns.

        Spans come from `{% generation %}` markers; a template without them gets the spans trl's
        patched training template would give: each assistant turn is what rendering it adds after
        the generation prompt.
        """
        if self.template is None:
            raise ValueError("this tokenizer has no chat template")
        if not self.has_markers:
            return self._render_unmarked(messages, add_generation_prompt)
        marked = self.template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.special)
        pieces, spans, length, start = [], [], 0, 0
        for piece in _MARKS.split(marked):
            if piece == _START:
                start = length
            elif piece == _END:
                spans.append((start, length))
            else:
                pieces.append(piece)
                length += len(piece)
        return "".join(pieces), spans

    def _render_unmarked(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> tuple[str, list]:
        assert self.template is not None
        spans = []
        for i, message in enumerate(messages):
            if message["role"] == "assistant":
                before = self.template.render(messages=messages[:i], add_generation_prompt=True, **self.special)
                through = self.template.render(messages=messages[: i + 1], **self.special)
                if through.startswith(before):
                    spans.append((len(before), len(through)))
        text = self.template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.special)
        return text, spans

    def render(self, row: dict[str, Any], kind: str, train_on: str) -> Rendered:
        if kind == "tagging":
            return self.render_tagged(row)
        return self.render_many([row], kind, train_on)[0]

    def render_many(self, rows: Any, kind: str, train_on: str) -> list[Rendered]:
        """Rows rendered and tokenised in one batch (the tokenizer encodes them in parallel)."""
        if kind == "tagging":
            return [self.render_tagged(row) for row in rows]
        texts: list[tuple[str, list[tuple[int, int]], bool]] = [self._text(row, kind, train_on) for row in rows]
        found: list[Rendered | None] = [None] * len(texts)
        for special_tokens in (True, False):
            chosen = [i for i, (_, _, special) in enumerate(texts) if special == special_tokens]
            if not chosen:
                continue
            encodings = self.tokenizer.encode_batch([texts[i][0] for i in chosen], add_special_tokens=special_tokens)
            for i, encoding in zip(chosen, encodings):
                text, spans, _ = texts[i]
                found[i] = Rendered(text, spans, list(encoding.ids), _loss_mask(encoding.offsets, spans))
        return found  # type: ignore[return-value]

    def _text(self, row: dict[str, Any], kind: str, train_on: str) -> tuple[str, list[tuple[int, int]], bool]:
        """The text a row trains on, its loss-carrying character spans, and whether the tokenizer adds its
        special tokens (not to a rendered chat: the template wrote them)."""
        eos = self.special.get("eos_token", "")
        special_tokens = True
        if kind == "messages":
            text, spans = self.render_chat(row["messages"])
            special_tokens = False
        elif isinstance(row.get("prompt"), list):
            prompt, _ = self.render_chat(row["prompt"], add_generation_prompt=True)
            text, _ = self.render_chat(row["prompt"] + row["completion"])
            spans = [(len(prompt), len(text))]
            special_tokens = False
        elif kind == "prompt_completion":
            completion = row["completion"] if row["completion"].endswith(eos) else row["completion"] + eos
            text = row["prompt"] + completion
            spans = [(len(row["prompt"]), len(text))]
        elif kind == "classification":  # the text as the classifier reads it; the loss is on the label
            text, spans = row["text"], []
        else:
            text = row["text"] if row["text"].endswith(eos) else row["text"] + eos
            spans = [(0, len(text))]
        if train_on == "all" and kind != "classification":
            spans = [(0, len(text))]
        return text, spans, special_tokens

    def render_tagged(self, row: dict[str, Any]) -> Rendered:
        """A tagging row as `word/TAG ...`; the tokens are the words' sub-words as `tunekit tag` makes them
        (tunekit.data.tagging.add_prefix_space applied by the caller), loss on each word's first sub-word token."""
        text = " ".join(f"{word}/{tag}" for word, tag in zip(row["tokens"], row["tags"]))
        encoding = self.tokenizer.encode(row["tokens"], is_pretokenized=True)
        mask, previous = [], None
        for word in encoding.word_ids:
            mask.append(int(word is not None and word != previous))
            previous = word
        return Rendered(text, [], list(encoding.ids), mask)

    def render_seq2seq(self, row: dict[str, Any], kind: str) -> Rendered:
        """An encoder-decoder example: the encoder's source, a newline, then the decoder's target (all of
        it carries loss). Token counts add both sides; training cuts each at data.max_length on its own."""
        if kind == "messages":
            source, _ = self.render_chat(row["messages"][:-1], add_generation_prompt=True)
            target, source_special = row["messages"][-1]["content"], False
        elif isinstance(row["prompt"], list):
            source, _ = self.render_chat(row["prompt"], add_generation_prompt=True)
            target = "".join(m["content"] for m in row["completion"] if m["role"] == "assistant")
            source_special = False
        else:
            source, target, source_special = row["prompt"], row["completion"], True
        source_ids = self.tokenizer.encode(source, add_special_tokens=source_special).ids
        target_ids = self.tokenizer.encode(target).ids  # the post-processor adds EOS, as `text_target` does
        eos = self.special.get("eos_token", "")
        shown_target = (
            target + eos if eos and target_ids and self.tokenizer.id_to_token(target_ids[-1]) == eos else target
        )
        text = f"{source}\n{shown_target}"
        return Rendered(
            text, [(len(source) + 1, len(text))], source_ids + target_ids, [0] * len(source_ids) + [1] * len(target_ids)
        )


def _loss_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """1 for each token lying inside a loss-carrying span. Special tokens added by the post-processor
    (BOS) have empty offsets and never carry loss."""
    import numpy as np

    if not offsets or not spans:
        return [0] * len(offsets)
    at = np.asarray(offsets).reshape(-1, 2)
    lo, hi = np.asarray(spans).reshape(-1, 2).T
    start, end = at[:, 0], at[:, 1]
    inside = ((lo[:, None] <= start) & (end <= hi[:, None])).any(axis=0) & (end > start)
    return inside.astype(int).tolist()
