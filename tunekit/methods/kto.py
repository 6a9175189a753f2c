"""KTO (unpaired desirable / undesirable completions) through trl's KTOTrainer.

    $ tunekit kto recipes/tiny/kto.yaml

Takes prompt/completion/label rows, or preference pairs (chosen -> desirable, rejected ->
undesirable). The reference is the starting model (the base with the adapter disabled under LoRA).
summary.json adds `eval_reward_margin_*` (desirable minus undesirable implicit reward) and, when the
eval data are pairs, the reference-free `eval_preference_accuracy_*`.
"""

from __future__ import annotations

from typing import Any

from tunekit.config import Recipe
from tunekit.data.formats import unpair
from tunekit.methods.common import Report, fit, prepare


def run(recipe: Recipe, overwrite: bool = False, report: Report = print) -> dict[str, Any]:
    setup = prepare(recipe, overwrite)
    data, settings = setup.data, recipe.kto
    assert settings is not None
    paired = data.kind == "preference"
    train = unpair(data.train) if paired else data.train
    evaluation = unpair(data.eval) if paired else data.eval

    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from tunekit.preference import preference_accuracy
    from tunekit.training import callbacks, lora_config, trainer_kwargs

    config = KTOConfig(
        **trainer_kwargs(recipe, setup.out, setup.dtype, has_eval=bool(evaluation)),
        max_length=recipe.data.max_length,
        beta=settings.beta,
        desirable_weight=settings.desirable_weight,
        undesirable_weight=settings.undesirable_weight,
    )
    trainer = KTOTrainer(
        model=setup.model,
        args=config,
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(evaluation) if evaluation else None,
        processing_class=setup.tokenizer,
        peft_config=lora_config(recipe.adapter, setup.model),
        callbacks=callbacks(recipe, setup.out),
    )

    def held_out() -> dict[str, float]:
        return {"eval_preference_accuracy": preference_accuracy(trainer.model, setup.tokenizer, data.eval)}

    return fit(trainer, setup, report, {"eval_reward_margin": "eval_rewards/margins"},
               extra_eval=held_out if paired else None)
