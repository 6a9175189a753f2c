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

from tunekit.errors import UserError
from tunekit.train.builders import trainer_inputs
from tunekit.train.fit import fit_trainer
from tunekit.train.pipeline import Echo, Plan, Run
from tunekit.train.preflight import check_targets
from tunekit.train.summary import Trained

GENERATION_FIGURES = ("exact_match", "rougeL", "bleu")  # from tunekit.use.evaluate, as eval_<name>


HEAD = "seq2seq-lm"


def check(plan: Plan) -> None:
    if plan.recipe.data.packing:
        raise UserError(
            "data.packing: packing joins decoder-only sequences; an encoder-decoder model reads one "
            "prompt per example: turn packing off"
        )
    check_targets(plan.data, plan.data.names)


def train(run: Run, echo: Echo) -> Trained:
    recipe = run.recipe

    from transformers import (
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
    )

    from tunekit.train.builders import trainer_kwargs

    tokenizer = run.tokenizer
    rows, held_out = encode(run, "train"), encode(run, "eval")
    # Seq2SeqTrainer takes no peft_config: the model comes wrapped
    inputs = trainer_inputs(run, task_type="SEQ_2_SEQ_LM", train=rows, evaluation=held_out, wrap_peft=True)
    args = Seq2SeqTrainingArguments(
        **trainer_kwargs(recipe, run.out, run.dtype, has_eval=bool(run.data.eval)),
        label_names=["labels"],  # a PeftModel's forward hides `labels` from transformers' signature check
        remove_unused_columns=False,  # the rows hold exactly the model's inputs
    )
    # No `model=` for the collator: T5 and BART shift the labels into decoder inputs themselves.
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    trainer = Seq2SeqTrainer(args=args, data_collator=collator, **inputs)

    from tunekit.use.generate import cache_keeps_prefix

    generation = _generation_eval(trainer, run)
    if not cache_keeps_prefix(trainer.model, is_seq2seq=True):
        echo(
            "note: generation figures skipped: with the installed peft and transformers a prefix-tuned model "
            "generates as its base (eval loss is measured as usual)"
        )
        generation = None
    return fit_trainer(trainer, run, echo, {"eval_loss": "eval_loss"}, extra_eval=generation)


def encode(run: Run, split: str) -> Any:
    """Rows as encoder ids and target labels (cached), rendered as `tunekit eval` renders them (same loss)."""
    from tunekit.data.tokenize import encoded

    rows = run.data.train if split == "train" else run.data.eval
    recipe = run.recipe
    kwargs = {"tokenizer": run.tokenizer, "kind": run.data.kind, "max_length": recipe.data.max_length}
    return encoded(
        rows,
        encode_batch,
        kwargs,
        "seq2seq",
        run.data,
        split,
        run.tokenizer,
        recipe.data.cache,
        recipe.data.num_proc,
        {"max_length": recipe.data.max_length},
    )


def encode_batch(batch: dict[str, list[Any]], tokenizer: Any, kind: str, max_length: int) -> dict[str, list[Any]]:
    from tunekit.data.chat import render_prompt
    from tunekit.use.evaluate import pair

    encoded: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for row in (dict(zip(batch, values)) for values in zip(*batch.values())):
        found = pair(row, kind)
        assert found is not None, "check_targets lets only rows with a target through"
        prompt, target = found
        shown = render_prompt(tokenizer, prompt, chat_template=isinstance(prompt, list))
        source_ids = tokenizer(
            shown.text, add_special_tokens=shown.special_tokens, truncation=True, max_length=max_length
        )
        labels = tokenizer(text_target=target, truncation=True, max_length=max_length)["input_ids"]
        for name, value in (
            ("input_ids", source_ids["input_ids"]),
            ("attention_mask", source_ids["attention_mask"]),
            ("labels", labels),
        ):
            encoded[name].append(value)
    return encoded


def _generation_eval(trainer: Any, run: Run) -> Any:
    """Greedy completions of the held-out prompts, scored against their targets (tunekit.use.evaluate)."""
    from tunekit.use.evaluate import EvalData, evaluate
    from tunekit.use.load import Loaded

    data = run.data
    from tunekit.train.builders import trainer_rows

    held_out = EvalData(data.eval_source, data.format, data.kind, trainer_rows(data.eval), demos=[], demo_source="")

    def scores() -> dict[str, float]:
        trainer.model.eval()
        loaded = Loaded(trainer.model, run.tokenizer, run.ref, is_seq2seq=True)
        metrics, _ = evaluate(
            loaded, held_out, batch_size=run.recipe.training.batch_size, max_length=run.recipe.data.max_length
        )
        return {f"eval_{key}": float(metrics[key]) for key in GENERATION_FIGURES}

    return scores
