"""SimPO (length-normalised, reference-free preference loss) through trl's experimental CPOTrainer.

    $ tunekit simpo recipes/tiny/simpo.yaml simpo.beta=2.5

trl implements SimPO as CPO with `loss_type="simpo"` and no behaviour-cloning term (`cpo_alpha=0`);
both live under `trl.experimental`. summary.json adds `eval_reward_accuracy_*`,
`eval_reward_margin_*` and the reference-free `eval_preference_accuracy_*`.
"""

from __future__ import annotations

from typing import Any

from tunekit.config import Recipe
from tunekit.methods.common import Report, fit, prepare
from tunekit.methods.dpo import FIGURES


def run(recipe: Recipe, overwrite: bool = False, report: Report = print) -> dict[str, Any]:
    setup = prepare(recipe, overwrite)
    data, settings = setup.data, recipe.simpo
    assert settings is not None

    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    from tunekit.preference import preference_accuracy
    from tunekit.training import callbacks, lora_config, trainer_kwargs

    config = CPOConfig(
        **trainer_kwargs(recipe, setup.out, setup.dtype, has_eval=bool(data.eval)),
        max_length=recipe.data.max_length,
        loss_type="simpo",
        cpo_alpha=0.0,
        beta=settings.beta,
        simpo_gamma=settings.gamma,
    )
    trainer = CPOTrainer(
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
