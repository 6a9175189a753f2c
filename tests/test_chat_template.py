"""tunekit.data.chat: the one renderer, as generation, PPO rollouts, reward scoring and preference accuracy use it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tunekit.data.chat import render_prompt, render_sequence, split_ids
from tunekit.errors import UserError

QUESTION = [{"role": "user", "content": "Reverse the words: apple river"}]
ANSWER = [{"role": "assistant", "content": "river apple"}]


@pytest.fixture(scope="module")
def tokenizer(base: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base)


@pytest.fixture(scope="module")
def plain(tokenizer: Any) -> Any:
    """The same tokenizer without a chat template."""
    without = copy.deepcopy(tokenizer)
    without.chat_template = None
    return without


def test_messages_get_the_template_and_a_generation_prompt(tokenizer: Any) -> None:
    prompt = render_prompt(tokenizer, QUESTION, system="Be terse.")
    expected = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be terse."}, *QUESTION], tokenize=False, add_generation_prompt=True
    )
    assert prompt.text == expected and not prompt.special_tokens  # the template carries its own BOS


def test_plain_strings_stay_plain_unless_asked(tokenizer: Any, plain: Any) -> None:
    text = "Reverse the words: apple river"
    assert render_prompt(tokenizer, text).text == text
    assert render_prompt(tokenizer, text).special_tokens
    wrapped = render_prompt(tokenizer, text, chat_template=True)
    assert wrapped == render_prompt(tokenizer, QUESTION)
    # Without a template, chat_template=True has nothing to apply: plain text, the system prompt before it.
    assert render_prompt(plain, text, chat_template=True, system="Be terse.").text == f"Be terse.\n\n{text}"


def test_a_sequence_is_the_whole_conversation_or_the_strings_with_one_eos(tokenizer: Any) -> None:
    whole = render_sequence(tokenizer, QUESTION, "river apple")  # a string completion is the assistant's turn
    assert whole.text == tokenizer.apply_chat_template(QUESTION + ANSWER, tokenize=False)
    assert not whole.special_tokens
    eos = tokenizer.eos_token
    assert render_sequence(tokenizer, "Q:", " A").text == f"Q: A{eos}"
    assert render_sequence(tokenizer, "Q:", f" A{eos}").text == f"Q: A{eos}"


def test_split_ids_cut_where_the_prompt_ends(tokenizer: Any) -> None:
    prompt_ids, completion_ids = split_ids(tokenizer, QUESTION, ANSWER)
    full = tokenizer.apply_chat_template(QUESTION + ANSWER, tokenize=True, return_dict=True)["input_ids"]
    head = tokenizer.apply_chat_template(QUESTION, tokenize=True, add_generation_prompt=True, return_dict=True)
    assert prompt_ids + completion_ids == list(full) and prompt_ids == list(head["input_ids"])
    text_prompt, text_completion = split_ids(tokenizer, "Q:", " A")
    assert text_prompt == tokenizer("Q:")["input_ids"] and text_completion[-1] == tokenizer.eos_token_id


def test_messages_without_a_template_are_a_user_error(plain: Any) -> None:
    with pytest.raises(UserError, match="no chat template"):
        render_prompt(plain, QUESTION)
    with pytest.raises(UserError, match="no chat template"):
        render_sequence(plain, QUESTION, "river apple")
