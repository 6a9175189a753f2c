"""SFT of encoder-decoder models (T5, FLAN-T5, BART): full, LoRA, QLoRA and soft prompts through
transformers' Seq2SeqTrainer. `tunekit sft` hands a recipe here when the model's config says
`is_encoder_decoder` (trl's SFTTrainer has no encoder-decoder path).

    $ tunekit sft recipes/tiny/sft-t5.yaml

The encoder reads the prompt, the decoder is trained on the completion (chat data: the conversation
before its final assistant turn, rendered with the chat template, then that turn). Loss is on target
tokens only (DataCollatorForSeq2Seq pads labels with -100). Before and after training the held-out
completions are also generated greedily and scored by tunekit.use.evaluate (the code behind `tunekit eval`),
so summary.json adds `eval_exact_match`, `eval_rougeL` and `eval_bleu` `_before` / `_after` to
`eval_loss_before` / `eval_loss_after`.
"""

from __future__ import annotations

from typing import Any

from tunekit.config import Recipe
from tunekit.data import Data
from tunekit.errors import DataError, UserError
from tunekit.train.pipeline import Report, Setup, fit, prepare, trainer_inputs
from tunekit.train.rundir import RunOptions

GENERATION_FIGURES = ("exact_match", "rougeL", "bleu")  # from tunekit.use.evaluate, as eval_<name>


def run(recipe: Recipe, options: RunOptions = RunOptions(), report: Report = print) -> dict[str, Any]:
    if recipe.data.packing:
        raise UserError("data.packing: packing joins decoder-only sequences; an encoder-decoder model reads one "
                        "prompt per example: turn packing off")
    setup = prepare(recipe, options, head="seq2seq-lm", check=lambda recipe, data, _: check_targets(data, recipe.data.train))

    from transformers import (
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
    )

    from tunekit.train.builders import trainer_kwargs

    tokenizer, max_length = setup.tokenizer, recipe.data.max_length
    train = encode(setup.data.train, setup.data.kind, tokenizer, max_length)
    evaluation = encode(setup.data.eval, setup.data.kind, tokenizer, max_length)
    # Seq2SeqTrainer takes no peft_config: the model comes wrapped
    inputs = trainer_inputs(setup, task_type="SEQ_2_SEQ_LM", train=train, evaluation=evaluation, wrap_peft=True)
    args = Seq2SeqTrainingArguments(
        **trainer_kwargs(recipe, setup.out, setup.dtype, has_eval=bool(setup.data.eval)),
        label_names=["labels"],  # a PeftModel's forward hides `labels` from transformers' signature check
        remove_unused_columns=False,  # the rows hold exactly the model's inputs
    )
    # No `model=` for the collator: T5 and BART shift the labels into decoder inputs themselves.
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    trainer = Seq2SeqTrainer(args=args, data_collator=collator, **inputs)
    from tunekit.use.generate import cache_keeps_prefix

    generation = _generation_eval(trainer, setup)
    if not cache_keeps_prefix(trainer.model, is_seq2seq=True):
        report("note: generation figures skipped: with the installed peft and transformers a prefix-tuned model "
               "generates as its base (eval loss is measured as usual)")
        generation = None
    return fit(trainer, setup, report, {"eval_loss": "eval_loss"}, extra_eval=generation)


def check_targets(data: Data, source: str) -> None:
    """Every example needs a target for the decoder: text data has none, and a chat must end with the
    assistant turn to learn. Run by common.prepare before the run folder is written, and by `tunekit validate`
    (torch-free)."""
    if data.kind == "text":
        raise DataError(
            f"{source}: format text has no targets; an encoder-decoder model learns prompt -> completion: "
            "use prompt/completion, alpaca or chat data"
        )
    if data.kind != "messages":
        return  # prompt/completion rows were checked when read: a missing or empty completion stops there
    for part, rows in (("train", data.train), ("eval", data.eval)):
        for number, row in enumerate(rows, start=1):
            role = row["messages"][-1]["role"]
            if role != "assistant":
                raise DataError(
                    f"{source} ({part} example {number}): field 'messages': ends with a {role} turn; an "
                    "encoder-decoder model learns the final assistant turn as its target"
                )


def encode(rows: list[dict[str, Any]], kind: str, tokenizer: Any, max_length: int) -> list[dict]:
    """Rows as encoder ids and target labels, rendered as `tunekit eval` renders them (same loss)."""
    from tunekit.use.evaluate import pair
    from tunekit.use.generate import render_prompt

    encoded = []
    for row in rows:
        found = pair(row, kind)
        assert found is not None, "check_targets lets only rows with a target through"
        prompt, target = found
        shown = render_prompt(tokenizer, prompt, chat_template=isinstance(prompt, list))
        source_ids = tokenizer(shown.text, add_special_tokens=shown.special_tokens, truncation=True, max_length=max_length)
        labels = tokenizer(text_target=target, truncation=True, max_length=max_length)["input_ids"]
        encoded.append({"input_ids": source_ids["input_ids"], "attention_mask": source_ids["attention_mask"],
                        "labels": labels})
    return encoded


def _generation_eval(trainer: Any, setup: Setup) -> Any:
    """Greedy completions of the held-out prompts, scored against their targets (tunekit.use.evaluate)."""
    from tunekit.use.evaluate import EvalData, evaluate
    from tunekit.use.load import Loaded, Reference
    from tunekit.models.loading import resolve_model_path

    data = setup.data
    name = setup.recipe.model.name_or_path
    held_out = EvalData(data.eval_source, data.format, data.kind, data.eval, demos=[], demo_source="")

    def scores() -> dict[str, float]:
        trainer.model.eval()
        loaded = Loaded(trainer.model, setup.tokenizer, Reference(name, resolve_model_path(name)), is_seq2seq=True)
        metrics, _ = evaluate(
            loaded, held_out, batch_size=setup.recipe.training.batch_size, max_length=setup.recipe.data.max_length
        )
        return {f"eval_{key}": float(metrics[key]) for key in GENERATION_FIGURES}

    return scores
