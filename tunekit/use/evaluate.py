"""Evaluate a model on data: loss and perplexity; on prompt/completion and chat data also exact match,
ROUGE-L and BLEU of its greedy completions.

    $ tunekit eval runs/lora/final --data data/test.jsonl
    $ tunekit eval runs/lora/final --compare tiny:llama --data data/test.jsonl --shots 0 --shots 4
    >>> data = load_eval_data("data/test.jsonl", shots=4)              # doctest: +SKIP
    >>> evaluate(load(resolve_reference("tiny:llama")), data, shots=4)   # doctest: +SKIP
    {'loss': 6.9, 'perplexity': 990.1, 'exact_match': 0.0, 'rougeL': 0.0, 'bleu': 0.0, 'num_examples': 36, ...}

Loss is taken on exactly the tokens training puts loss on, rendered exactly as training renders them
(tunekit.data.preview, which a test checks against trl): the completion of prompt/completion data,
the assistant turns of chat data, every token of text. It is the mean over those tokens, and
perplexity is its exponential. Generation metrics compare the greedy completion of each prompt (chat
data: the conversation before its final assistant turn) with the reference completion: exact match
after stripping whitespace, ROUGE-L F1 (rouge-score, its default English tokenisation) and corpus
BLEU on a 0-100 scale (sacrebleu, effective order, so that short answers are not zeroed).

`shots=K` puts K demonstrations before every prompt: earlier user/assistant turns for chat prompts,
"prompt completion" text followed by a blank line for text prompts. They never carry loss. They come
from `shots_from`, or else from the first rows of the data, which are then not scored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunekit.config.sections import FORMATS
from tunekit.data.chat import Messages, render_prompt
from tunekit.data.formats import check_rows, normalised_kind, resolve_format
from tunekit.data.sources import read_rows
from tunekit.errors import DataError, UserError
from tunekit.use.generate import Decoding, cache_keeps_prefix, generate

DEMO_SEPARATOR = "\n\n"  # between text demonstrations, and between the last one and the prompt
MAX_NEW_TOKENS_MARGIN = 16  # default max_new_tokens: the longest reference completion plus this


EVAL_KINDS = ("text", "prompt_completion", "messages")  # what eval takes loss on and generates from


@dataclass
class EvalData:
    source: str
    format: str  # as detected or declared: text, prompt_completion, messages, alpaca, sharegpt
    kind: str  # normalised form: text, prompt_completion, messages
    rows: list[dict[str, Any]]  # scored rows, normalised
    demos: list[dict[str, Any]]  # rows demonstrations are taken from, first ones first
    demo_source: str


def load_eval_data(data: str, fmt: str = "auto", shots: int = 0, shots_from: str | None = None) -> EvalData:
    """Read and check every row; with `shots` and no `shots_from`, the first `shots` rows become demonstrations."""
    if fmt != "auto" and fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose auto or one of {', '.join(FORMATS)}")
    raw = read_rows(data)
    fmt = resolve_format(fmt, raw[0][1], data)
    if normalised_kind(fmt) not in EVAL_KINDS:
        raise DataError(
            f"{data}: format {fmt}; tunekit eval scores text, prompt/completion or chat rows (alpaca and sharegpt "
            "too); for preference pairs and completions use tunekit score with a reward model"
        )
    rows, kind = check_rows(raw, fmt, data), normalised_kind(fmt)
    if shots and kind == "text":
        raise UserError(f"--shots needs prompt/completion or chat data; {data} holds plain text (format text)")
    if shots_from:
        demo_raw = read_rows(shots_from)
        demo_fmt = resolve_format("auto", demo_raw[0][1], shots_from)
        demos = check_rows(demo_raw, demo_fmt, shots_from)
        if normalised_kind(demo_fmt) == "text":
            raise UserError(f"--shots-from {shots_from}: plain text rows cannot be demonstrations")
        if len(demos) < shots:
            raise UserError(f"--shots {shots}: {shots_from} has only {len(demos)} rows")
        return EvalData(data, fmt, kind, rows, demos, shots_from)
    if shots and len(rows) <= shots:
        raise UserError(f"--shots {shots}: {data} has {len(rows)} rows, none left to score after the demonstrations")
    return EvalData(data, fmt, kind, rows[shots:], rows[:shots], f"the first {shots} rows of {data}")


def pair(row: dict[str, Any], kind: str) -> tuple[str | Messages, str] | None:
    """(prompt, reference completion) of a row, or None when it has nothing to generate."""
    if kind == "prompt_completion":
        completion = row["completion"]
        if isinstance(completion, list):
            completion = "".join(m["content"] for m in completion if m["role"] == "assistant")
        return row["prompt"], completion
    if kind == "messages" and row["messages"][-1]["role"] == "assistant":
        return row["messages"][:-1], row["messages"][-1]["content"]
    return None


def _demo(row: dict[str, Any]) -> str | Messages:
    """One demonstration: prompt + completion as text, or as chat turns (system prompts left out)."""
    if "messages" in row:
        turns = row["messages"]
    elif isinstance(row["prompt"], str) and isinstance(row["completion"], str):
        return row["prompt"] + row["completion"]
    else:
        prompt = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
        completion = row["completion"]
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        turns = prompt + completion
    return [m for m in turns if m["role"] != "system"]


def with_shots(row: dict[str, Any], kind: str, demos: list[dict[str, Any]]) -> tuple[dict[str, Any], Messages]:
    """The row with demonstrations before its prompt, and (chat data) the messages that precede its own turns."""
    if not demos:
        return row, []
    shown = [_demo(d) for d in demos]
    chat = kind == "messages" or isinstance(row["prompt"], list)
    if any(isinstance(s, str) == chat for s in shown):
        raise UserError(
            "--shots: demonstrations and scored rows must both be chat messages or both be text "
            f"(the scored rows are {'chat messages' if chat else 'text'})"
        )
    if not chat:
        return {**row, "prompt": "".join(s + DEMO_SEPARATOR for s in shown) + row["prompt"]}, []
    own = row["messages"] if kind == "messages" else row["prompt"]
    system = [m for m in own if m["role"] == "system"]
    prefix = system + [m for s in shown for m in s]
    rest = [m for m in own if m["role"] != "system"]
    field = "messages" if kind == "messages" else "prompt"
    return {**row, field: prefix + rest}, prefix


def evaluate(
    loaded: Any,
    data: EvalData,
    shots: int = 0,
    batch_size: int = 8,
    max_length: int = 1024,
    max_new_tokens: int | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics (keys loss, perplexity, exact_match, rougeL, bleu, num_examples) and one prediction per example."""
    shown = [with_shots(row, data.kind, data.demos[:shots]) for row in data.rows]
    if loaded.is_seq2seq:
        nll, tokens = _seq2seq_loss(loaded, [r for r, _ in shown], data.kind, batch_size, max_length)
    else:
        nll, tokens = _causal_loss(loaded, shown, data.kind, batch_size, max_length)
    loss = nll / tokens if tokens else float("nan")
    metrics: dict[str, Any] = {
        "loss": loss,
        "perplexity": _exp(loss),
        "exact_match": None,
        "rougeL": None,
        "bleu": None,
        "num_examples": len(data.rows),
        "loss_tokens": tokens,
        "shots": shots,
    }
    pairs = [p for p in (pair(row, data.kind) for row, _ in shown) if p is not None]
    if not pairs or not cache_keeps_prefix(loaded.model, loaded.is_seq2seq):  # (the loader's note says why)
        return metrics, []
    limit = max_new_tokens or _longest(loaded.tokenizer, [t for _, t in pairs]) + MAX_NEW_TOKENS_MARGIN
    # Text prompts are read as training read them (no chat template); chat prompts through the template.
    prompts = [render_prompt(loaded.tokenizer, p, chat_template=isinstance(p, list)) for p, _ in pairs]
    done = generate(loaded, prompts, Decoding(max_new_tokens=limit), batch_size=batch_size)
    predictions, targets = [c.text.strip() for c in done], [t.strip() for _, t in pairs]
    metrics.update(_scores(predictions, targets))
    records = [
        {"prompt": c.prompt, "target": t, "prediction": p, "exact": p == t}
        for c, p, t in zip(done, predictions, targets)
    ]
    return metrics, records


def _exp(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


def _longest(tokenizer: Any, texts: list[str]) -> int:
    return max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def _scores(predictions: list[str], targets: list[str]) -> dict[str, float]:
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = [scorer.score(t, p)["rougeL"].fmeasure for p, t in zip(predictions, targets)]
    return {
        "exact_match": sum(p == t for p, t in zip(predictions, targets)) / len(targets),
        "rougeL": sum(rouge) / len(rouge),
        "bleu": BLEU(effective_order=True).corpus_score(predictions, [targets]).score,
    }


def _causal_loss(
    loaded: Any, shown: list[tuple[dict[str, Any], Messages]], kind: str, batch_size: int, max_length: int
) -> tuple[float, int]:
    from tunekit.data.preview import Preview

    tokenizer = loaded.tokenizer
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise UserError(f"{loaded.ref.name}: eval needs a fast (tokenizers-backed) tokenizer")
    special = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    preview = Preview(tokenizer.backend_tokenizer, tokenizer.chat_template, special)
    examples = []
    for row, prefix in shown:
        if _is_chat(row, kind) and preview.template is None:
            raise UserError(f"{loaded.ref.name} has no chat template, and the data holds chat messages")
        rendered = preview.render(row, kind, "completion")
        ids, mask = rendered.ids, list(rendered.mask)
        if prefix and kind == "messages":
            # Demonstration turns are assistant turns too: they must not carry loss.
            before = preview.render({"messages": prefix}, "messages", "completion").ids
            if ids[: len(before)] != before:
                raise UserError(
                    "--shots: this chat template renders earlier turns differently; use prompt/completion data"
                )
            mask[: len(before)] = [0] * len(before)
        examples.append((ids[:max_length], mask[:max_length]))
    return _nll(loaded, examples, batch_size)


def _is_chat(row: dict[str, Any], kind: str) -> bool:
    return kind == "messages" or isinstance(row.get("prompt"), list)


def _nll(loaded: Any, examples: list[tuple[list[int], list[int]]], batch_size: int) -> tuple[float, int]:
    """Summed negative log-likelihood of the masked tokens, and how many there were."""
    import torch
    import torch.nn.functional as F

    pad = loaded.tokenizer.pad_token_id or 0
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in batch], device=loaded.device)
        mask = torch.tensor([m + [0] * (width - len(m)) for _, m in batch], device=loaded.device)
        attention = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch], device=loaded.device)
        with torch.no_grad():
            logits = loaded.model(input_ids=ids, attention_mask=attention).logits
        logits = logits[:, -width:].float()  # soft prompts put virtual tokens first: keep the real positions
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        total += float((nll * mask[:, 1:]).sum())
        count += int(mask[:, 1:].sum())
    return total, count


def _seq2seq_loss(
    loaded: Any, rows: list[dict[str, Any]], kind: str, batch_size: int, max_length: int
) -> tuple[float, int]:
    """Encoder reads the prompt, decoder is scored on the completion (chat data: the final assistant turn)."""
    import torch
    import torch.nn.functional as F

    pairs = [pair(row, kind) for row in rows]
    if kind == "text" or any(p is None for p in pairs):
        raise UserError(f"{loaded.ref.name} is an encoder-decoder model: eval needs prompt/completion or chat data")
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "right"
    total, count = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        batch = [p for p in pairs[start : start + batch_size] if p is not None]
        prompts = [render_prompt(tokenizer, p, chat_template=isinstance(p, list)) for p, _ in batch]
        inputs = tokenizer(
            [p.text for p in prompts],
            add_special_tokens=prompts[0].special_tokens,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(loaded.device)
        target = tokenizer(
            text_target=[t for _, t in batch], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(loaded.device)
        labels = target["input_ids"].masked_fill(target["attention_mask"] == 0, -100)
        with torch.no_grad():
            logits = loaded.model(**inputs, labels=labels).logits.float()
        total += float(F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="sum"))
        count += int((labels != -100).sum())
    return total, count


def write_predictions(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
