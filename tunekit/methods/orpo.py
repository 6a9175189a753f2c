"""ORPO (SFT and preference in one step, no reference model) through trl's experimental ORPOTrainer.

    $ tunekit orpo recipes/tiny/orpo.yaml

Experimental upstream: trl keeps ORPO under `trl.experimental`. summary.json adds
`eval_reward_accuracy_*`, `eval_reward_margin_*` (ORPO's log-odds rewards) and the reference-free
`eval_preference_accuracy_*`.
"""

from __future__ import annotations

from typing import Any

from tunekit.config import Recipe
from tunekit.methods.common import Report, fit, prepare
from tunekit.methods.dpo import FIGURES


def run(recipe: Recipe, overwrite: bool = False, report: Report = print) -> dict[str, Any]:
    setup = prepare(recipe, overwrite)
    data, settings = setup.data, recipe.orpo
    assert settings is not None

    from datasets import Dataset
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from tunekit.preference import preference_accuracy
    from tunekit.training import callbacks, lora_config, trainer_kwargs

    config = ORPOConfig(
        **trainer_kwargs(recipe, setup.out, setup.dtype, has_eval=bool(data.eval)),
        max_length=recipe.data.max_length,
        beta=settings.beta,
    )
    trainer = ORPOTrainer(
        model=setup.model,
        args=config,
        train_dataset=Dataset.from_list(data.train),
        eval_dataset=Dataset.from_list(data.eval) if data.eval else None,
        processing_class=setup.tokenizer,
        peft_config=lora_config(recipe.adapter, setup.model),
        callbacks=callbacks(recipe, setup.out),
    )

    def held_out() -> dict[str, float]:
        return {"eval_preference_accuracy": preference_accuracy(trainer.model, setup.tokenizer, data.eval)}

    return fit(trainer, setup, report, FIGURES, extra_eval=held_out)
