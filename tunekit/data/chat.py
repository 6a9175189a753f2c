"""The one place a prompt (and its completion) becomes the text a model reads, chat template or not.

    >>> from types import SimpleNamespace
    >>> plain = SimpleNamespace(chat_template=None, eos_token="</s>")  # a tokenizer without a chat template
    >>> render_prompt(plain, "Reverse the words: a b", system="Be terse.")
    Prompt(text='Be terse.\\n\\nReverse the words: a b', special_tokens=True)
    >>> render_sequence(plain, "Reverse the words: a b", " b a").text
    'Reverse the words: a b b a</s>'
    >>> prompt_ids, completion_ids = split_ids(tokenizer, messages, [answer])  # doctest: +SKIP

Rendered as trl's trainers render them: a list of messages goes through the tokenizer's chat template
(with a generation prompt when the model is to answer, over the whole conversation when a completion
follows); a plain string stays plain, and a completion string is joined to it with EOS appended. A
rendered template carries its own special tokens, plain text gets the tokenizer's (e.g. BOS): each
`Prompt` says which, so whoever tokenises it adds them or not. Pure Python: no torch, no transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunekit.errors import UserError

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Prompt:
    text: str  # what the model reads: the chat template already applied, when it was
    special_tokens: bool  # add the tokenizer's BOS/EOS; a rendered chat template carries its own


def render_prompt(
    tokenizer: Any, prompt: str | Messages, chat_template: bool = False, system: str | None = None
) -> Prompt:
    """A prompt for the model to answer; `chat_template` also puts a plain string through it, as a user turn.

    A system prompt opens the conversation (unless it has one), or precedes plain text after a blank line.
    """
    if isinstance(prompt, str) and not (chat_template and tokenizer.chat_template):
        return Prompt(prompt if system is None else f"{system}\n\n{prompt}", special_tokens=True)
    messages = _messages(prompt, "user")
    if system is not None and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system})
    return Prompt(_template(tokenizer, messages, add_generation_prompt=True), special_tokens=False)


def render_sequence(tokenizer: Any, prompt: str | Messages, completion: str | Messages) -> Prompt:
    """Prompt + completion as one sequence to score or learn from (trl's RewardTrainer builds it so)."""
    if isinstance(prompt, list) or isinstance(completion, list):
        messages = _messages(prompt, "user") + _messages(completion, "assistant")
        return Prompt(_template(tokenizer, messages, add_generation_prompt=False), special_tokens=False)
    text, eos = prompt + completion, tokenizer.eos_token or ""
    return Prompt(text if text.endswith(eos) else text + eos, special_tokens=True)


def split_ids(tokenizer: Any, prompt: str | Messages, completion: str | Messages) -> tuple[list[int], list[int]]:
    """Token ids of the rendered sequence, split where the rendered prompt (with its generation prompt) ends.

    Split on ids rather than text: a template may render the prompt's last turn differently once an
    answer follows, and a tokenizer may merge characters across the boundary; the shared prefix is the prompt.
    """
    head, full = render_prompt(tokenizer, prompt), render_sequence(tokenizer, prompt, completion)
    head_ids = list(tokenizer(head.text, add_special_tokens=head.special_tokens)["input_ids"])
    full_ids = list(tokenizer(full.text, add_special_tokens=full.special_tokens)["input_ids"])
    shared = 0
    while shared < min(len(head_ids), len(full_ids)) and head_ids[shared] == full_ids[shared]:
        shared += 1
    return full_ids[:shared], full_ids[shared:]


def _messages(part: str | Messages, role: str) -> Messages:
    return [{"role": role, "content": part}] if isinstance(part, str) else list(part)


def _template(tokenizer: Any, messages: Messages, add_generation_prompt: bool) -> str:
    if not tokenizer.chat_template:
        raise UserError("this model's tokenizer has no chat template, so prompts as chat messages cannot be rendered")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
