"""Decode text: greedy, sampling (temperature, top-k, top-p), beam search, stop strings, seeds.

    $ tunekit generate tiny:llama --prompt "Reverse the words: red green blue" --max-new-tokens 8
    >>> from tunekit.data.chat import render_prompt
    >>> from tunekit.use.load import load, resolve_reference
    >>> loaded = load(resolve_reference("tiny:llama"))  # doctest: +SKIP
    >>> prompt = render_prompt(loaded.tokenizer, "Reverse the words: red green", chat_template=True)  # doctest: +SKIP
    >>> generate(loaded, [prompt], Decoding(max_new_tokens=8))[0].text  # doctest: +SKIP

Greedy unless sampling is asked for; a temperature, top-k or top-p turns sampling on, and temperature
0 is greedy. Everything else the model's own generation_config sets (end-of-turn ids, no-repeat
n-grams, forced BOS) is kept. Only the completion is returned, never the prompt.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from tunekit.data.chat import Messages, Prompt
from tunekit.data.formats import RowError, check_messages, prompt_part
from tunekit.data.sources import read_rows
from tunekit.errors import DataError, UserError

SAMPLING = ("temperature", "top_k", "top_p")  # setting any of these turns sampling on


@dataclass
class Decoding:
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50  # transformers' default; 0 turns it off
    top_p: float = 1.0
    num_beams: int = 1
    repetition_penalty: float = 1.0  # 1.0: off; > 1 discourages repeating tokens
    stop: list[str] = field(default_factory=list)  # cut the completion before the first of these
    seed: int | None = None  # same seed, same sampled text

    @classmethod
    def from_options(cls, **given: Any) -> Decoding:
        """Options a user gave (None: not given); a sampling knob implies sampling, temperature 0 means greedy."""
        decoding = cls(**{k: v for k, v in given.items() if v is not None})
        if any(given.get(key) is not None for key in SAMPLING):
            decoding.do_sample = True
        if given.get("temperature") == 0:
            decoding.do_sample, decoding.temperature = False, 1.0
        decoding.check()
        return decoding

    def check(self) -> None:
        problems = [
            (self.max_new_tokens < 1, "max-new-tokens must be at least 1"),
            (self.temperature <= 0, "temperature must be > 0 (0 means greedy)"),
            (self.top_k < 0, "top-k must be >= 0 (0: off)"),
            (not 0 < self.top_p <= 1, "top-p must be in (0, 1]"),
            (self.num_beams < 1, "num-beams must be at least 1"),
            (self.repetition_penalty <= 0, "repetition-penalty must be > 0 (1: off)"),
        ]
        for bad, message in problems:
            if bad:
                raise UserError(message)

    def set(self, key: str, value: str) -> None:
        """`/set KEY VALUE` in chat: `temperature 0.7`, `top-k 20`, `stop "###"`, `seed none`..."""
        name = key.replace("-", "_")
        known = {f.name: f for f in fields(self)}
        if name not in known:
            raise UserError(f"unknown setting {key!r}; settings: {', '.join(k.replace('_', '-') for k in known)}")
        parsed = _parse(name, value)
        if name == "temperature" and parsed == 0:
            self.do_sample = False
            return
        old = copy.copy(self)
        setattr(self, name, parsed)
        if name in SAMPLING:
            self.do_sample = True
        try:
            self.check()
        except UserError:
            self.__dict__.update(old.__dict__)
            raise

    def describe(self) -> str:
        mode = "greedy"
        if self.do_sample:
            mode = f"sampling (temperature {self.temperature:g}, top-k {self.top_k}, top-p {self.top_p:g})"
        parts = [mode, f"max-new-tokens {self.max_new_tokens}"]
        if self.num_beams > 1:
            parts.append(f"num-beams {self.num_beams}")
        if self.repetition_penalty != 1.0:
            parts.append(f"repetition-penalty {self.repetition_penalty:g}")
        if self.stop:
            parts.append(f"stop {self.stop}")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        return ", ".join(parts)

    def generation_config(self, model: Any, tokenizer: Any) -> Any:
        """The model's generation_config with our decoding choices on top (its end-of-turn ids stay)."""
        config = copy.deepcopy(model.generation_config)
        config.update(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.do_sample,
            num_beams=self.num_beams,
            repetition_penalty=self.repetition_penalty,
            stop_strings=self.stop or None,
            num_return_sequences=1,
        )
        # Sampling knobs stay unset under greedy/beam search, so transformers does not warn they are ignored.
        sampling = (self.temperature, self.top_k, self.top_p) if self.do_sample else (None, None, None)
        config.temperature, config.top_k, config.top_p = sampling
        if config.pad_token_id is None:
            config.pad_token_id = tokenizer.pad_token_id
        if config.eos_token_id is None:
            config.eos_token_id = tokenizer.eos_token_id
        return config


def _parse(name: str, value: str) -> Any:
    value = value.strip()
    try:
        if name == "stop":
            import json

            if value.lower() == "none":
                return []
            return [str(s) for s in json.loads(value)] if value.startswith("[") else [_unquote(value)]
        if name == "seed":
            return None if value.lower() == "none" else int(value)
        if name == "do_sample":
            if value.lower() not in ("true", "false", "on", "off", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "on", "1", "yes")
        return float(value) if name in ("temperature", "top_p", "repetition_penalty") else int(value)
    except ValueError:
        raise UserError(f"{name.replace('_', '-')}: cannot read {value!r}") from None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1].encode().decode("unicode_escape")
    return value


@dataclass
class Completion:
    prompt: str  # as the model read it
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop": end of sequence or a stop string; "length": max_new_tokens reached


def generate(
    loaded: Any,
    prompts: Sequence[Prompt],
    decoding: Decoding,
    batch_size: int = 8,
    on_text: Callable[[str], None] | None = None,
) -> list[Completion]:
    """Complete each prompt; `on_text` streams the text of a single prompt as it is decoded."""
    import torch
    from transformers import set_seed

    model, tokenizer = loaded.model, loaded.tokenizer
    config = decoding.generation_config(model, tokenizer)
    if not cache_keeps_prefix(model, loaded.is_seq2seq):
        raise UserError(PREFIX_DROPPED)
    if decoding.seed is not None:
        set_seed(decoding.seed)
    streamer = None
    if on_text is not None:
        if len(prompts) != 1 or decoding.num_beams > 1:
            raise ValueError("streaming needs one prompt and no beam search")
        streamer = _streamer(tokenizer, on_text)
    # Decoder-only models continue the last token, so padding goes on the left.
    tokenizer.padding_side = "right" if loaded.is_seq2seq else "left"
    done: list[Completion] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        ids = [tokenizer(p.text, add_special_tokens=p.special_tokens)["input_ids"] for p in batch]
        inputs = tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(loaded.device)
        with torch.no_grad():
            out = model.generate(**inputs, generation_config=config, tokenizer=tokenizer, streamer=streamer)
        # Decoder-only output repeats the (padded) prompt; seq2seq output starts with the decoder start token.
        new = out[:, 1:] if loaded.is_seq2seq else out[:, inputs["input_ids"].shape[1] :]
        for prompt, prompt_ids, row in zip(batch, ids, new.tolist()):
            done.append(_completion(prompt, len(prompt_ids), row, config, tokenizer, decoding.stop))
    return done


PREFIX_DROPPED = (
    "this prefix-tuning adapter cannot generate with the installed peft and transformers: generate() drops the "
    "learned prefixes and would answer as the base model (an upstream incompatibility); `tunekit eval` still "
    "measures its loss, and prompt_tuning / p_tuning adapters generate as trained"
)


def cache_keeps_prefix(model: Any, is_seq2seq: bool) -> bool:
    """Whether `model.generate` with a key/value cache decodes what the model computes, prefixes included.

    peft's prefix tuning hands its prefixes to generation as the starting attention cache. With peft 0.21
    and transformers 5.24, generation builds a cache of its own and the prefixes are dropped: the adapter
    generates exactly as its base. So for a prefix-tuned model, one token is decoded both ways on a probe
    and compared; where they disagree, `generate` refuses (PREFIX_DROPPED) rather than print the base
    model's text as the adapter's. Any other model: True.
    """
    import torch
    from peft import PeftModel, PeftType

    if not isinstance(model, PeftModel) or model.active_peft_config.peft_type != PeftType.PREFIX_TUNING:
        return True
    device = next(model.parameters()).device
    probe = torch.tensor([[1, 2, 3, 4]], device=device)
    with torch.no_grad():
        generated = model.generate(
            input_ids=probe,
            max_new_tokens=1,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            use_cache=True,
        )
        extra = {"decoder_input_ids": generated.sequences[:, :1]} if is_seq2seq else {}  # the decoder's start
        forward = model(input_ids=probe, use_cache=False, **extra).logits[0, -1]
    return bool(torch.allclose(generated.logits[0][0].float(), forward.float(), atol=1e-3, rtol=1e-3))


def _completion(
    prompt: Prompt, n_prompt: int, row: list[int], config: Any, tokenizer: Any, stop: list[str]
) -> Completion:
    eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    end = next((i for i, token in enumerate(row) if token in eos), None)
    kept, n_tokens, reason = (row, len(row), "length") if end is None else (row[:end], end + 1, "stop")
    text = tokenizer.decode(kept, skip_special_tokens=True)
    cuts = [text.find(s) for s in stop if s and s in text]
    if cuts:
        text, reason = text[: min(cuts)], "stop"
        if end is None:  # generation halted on the stop string; what follows it in the batch is padding
            while kept and kept[-1] == config.pad_token_id:
                kept = kept[:-1]
            n_tokens = len(kept)
    return Completion(prompt.text, text, n_prompt, n_tokens, reason)


def _streamer(tokenizer: Any, on_text: Callable[[str], None]) -> Any:
    """transformers' TextStreamer (prints whole words as they form), writing through `on_text`."""
    from transformers import TextStreamer

    class Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                on_text(text)

    return Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def read_prompts(source: str) -> list[str | Messages]:
    """Prompts from a .jsonl/.json/.csv/.parquet file: a `prompt` (text or messages) or a `messages` field.

    A `messages` conversation that ends with assistant turns is cut before them: the model answers
    the last user turn.
    """
    prompts: list[str | Messages] = []
    for number, row in read_rows(source):
        try:
            prompts.append(_prompt_of(row))
        except RowError as err:
            raise DataError(f"{source}, row {number}: {err}") from None
    return prompts


def _prompt_of(row: Any) -> str | Messages:
    if not isinstance(row, dict) or not ("prompt" in row or "messages" in row):
        raise RowError("prompt", "missing: each row needs a 'prompt' (text or messages) or a 'messages' field")
    if "prompt" in row:
        value = row["prompt"]
        if isinstance(value, list):
            return check_messages(value, "prompt", need_assistant=False)
        if not isinstance(value, str) or not value.strip():
            raise RowError("prompt", "expected a non-empty string or a list of {role, content} messages")
        return value
    messages = prompt_part({"messages": check_messages(row["messages"], "messages", need_assistant=False)})
    if not messages:
        raise RowError("messages", "only assistant turns: nothing to answer")
    return messages
