"""A held-out preference figure every alignment method can be judged by, reference-free.

    >>> accuracy = preference_accuracy(model, tokenizer, pairs)  # doctest: +SKIP

For each held-out pair, the model's mean log-probability per completion token of `chosen` and of
`rejected` after the prompt (rendered as trl renders it: the chat template with a generation prompt
for message lists, the raw string plus EOS otherwise). Accuracy is the share of pairs where chosen
scores higher, ties counted as half, so an untrained model sits near 0.5 and one that learned the
preference moves towards 1.0, whatever the method (DPO, ORPO, SimPO, KTO).
"""

from __future__ import annotations

from typing import Any

import torch

from tunekit.data.chat import split_ids


@torch.no_grad()
def mean_logprob(model: Any, tokenizer: Any, prompt: Any, completion: Any) -> float:
    prompt_ids, completion_ids = split_ids(tokenizer, prompt, completion)
    if not completion_ids:
        return 0.0
    ids = torch.tensor([prompt_ids + completion_ids], device=model.device)
    logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    picked = logprobs.gather(-1, torch.tensor(completion_ids, device=model.device)[:, None])
    return float(picked.mean())


def preference_accuracy(model: Any, tokenizer: Any, pairs: list[dict[str, Any]]) -> float:
    """Share of pairs whose chosen completion the model finds likelier (per token) than rejected."""
    was_training = model.training
    model.eval()
    score = 0.0
    for pair in pairs:
        chosen = mean_logprob(model, tokenizer, pair["prompt"], pair["chosen"])
        rejected = mean_logprob(model, tokenizer, pair["prompt"], pair["rejected"])
        score += 1.0 if chosen > rejected else 0.5 if chosen == rejected else 0.0
    model.train(was_training)
    return score / max(len(pairs), 1)
