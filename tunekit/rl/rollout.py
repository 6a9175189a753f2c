"""Rollouts: prompts -> left-padded batches -> sampled responses, and per-token log-probs and values.

    >>> batch = sample(model, tokenizer, ["Reverse the words: a b"], settings, max_prompt=64)  # doctest: +SKIP
    >>> batch.completions, batch.ended  # doctest: +SKIP

Responses are right-padded after the first stop token; `mask` is 1 on response tokens up to and
including it. A response that never stops has `ended` False (PPO may penalise it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tunekit.config.sections import RewardSourceSection
from tunekit.data.chat import render_prompt
from tunekit.rl.ppo_math import entropy_from_logits


@dataclass
class Batch:
    prompts: list[Any]
    input_ids: torch.Tensor  # [B, P + T]: left-padded prompt, then right-padded response
    attention_mask: torch.Tensor
    prompt_length: int  # P
    mask: torch.Tensor  # [B, T] float: 1 on response tokens
    ended: torch.Tensor  # [B] bool: the response reached a stop token
    completions: list[str]


class ValueHead(nn.Module):
    """One scalar per position from the trunk's last hidden state (the critic shares the policy's trunk)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)  # start from V = 0: no confident critic before training
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


def stop_ids(model: Any, tokenizer: Any) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [*ids, tokenizer.eos_token_id] if i is not None})


@torch.no_grad()
def sample(model: Any, tokenizer: Any, prompts: list[Any], settings: RewardSourceSection, max_prompt: int) -> Batch:
    """Generate one response per prompt with the recipe's sampling settings."""
    rendered = [render_prompt(tokenizer, p) for p in prompts]
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"  # keep the end of long prompts
    encoded = tokenizer(
        [r.text for r in rendered],
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=max_prompt,
        add_special_tokens=rendered[0].special_tokens,
    ).to(model.device)
    stops = stop_ids(model, tokenizer)
    output = model.generate(
        **encoded,
        do_sample=True,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_k=settings.top_k or 0,
        top_p=settings.top_p,
        eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id,
    )
    prompt_length = encoded.input_ids.shape[1]
    responses = output[:, prompt_length:]
    is_stop = torch.isin(responses, torch.tensor(stops, device=responses.device))
    # 1 up to and including the first stop token
    before_stop = (is_stop.cumsum(1) - is_stop.long()) == 0
    responses = responses.masked_fill(~before_stop, tokenizer.pad_token_id)
    mask = before_stop.float()
    ended = is_stop.any(1)
    completions = tokenizer.batch_decode(responses, skip_special_tokens=True)
    input_ids = torch.cat([encoded.input_ids, responses], 1)
    attention_mask = torch.cat([encoded.attention_mask, before_stop.long()], 1)
    return Batch(prompts, input_ids, attention_mask, prompt_length, mask, ended, completions)


def forward(
    model: Any, batch: Batch, rows: slice | torch.Tensor, temperature: float, value_head: ValueHead | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Log-probs [b, T] of the response tokens (at the sampling temperature), entropies [b, T], values [b, T]."""
    input_ids, attention_mask = batch.input_ids[rows], batch.attention_mask[rows]
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)  # left padding: count real tokens only
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        output_hidden_states=value_head is not None,
        use_cache=False,
    )
    start = batch.prompt_length - 1  # the logits at position i predict token i + 1
    logits = output.logits[:, start:-1].float() / temperature
    targets = input_ids[:, batch.prompt_length :]
    logprobs = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    values = value_head(output.hidden_states[-1][:, start:-1]) if value_head is not None else None
    return logprobs, entropy_from_logits(logits.detach()), values
