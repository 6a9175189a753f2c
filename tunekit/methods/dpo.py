"""Direct Preference Optimisation through trl's DPOTrainer.

    $ tunekit dpo recipes/tiny/dpo.yaml dpo.beta=0.2

With LoRA/QLoRA the reference is the base with the adapter disabled (no second copy in memory); with
full fine-tuning trl loads a frozen copy of the starting model, or `dpo.reference` names another.
summary.json adds `eval_reward_accuracy_*` and `eval_reward_margin_*` (trl's implicit rewards: all
zero before training, where policy and reference agree) and `eval_preference_accuracy_*`
(reference-free, see tunekit.train.figures).
"""

from __future__ import annotations

from tunekit.train.builders import trainer_inputs
from tunekit.train.fit import PREFERENCE_FIGURES, fit_trainer, preference_eval
from tunekit.train.pipeline import Echo, Run
from tunekit.train.summary import Trained


def train(run: Run, echo: Echo) -> Trained:
    recipe = run.recipe
    data, settings = run.data, recipe.dpo

    from trl import DPOConfig, DPOTrainer

    from tunekit.train.builders import trainer_kwargs

    reference = None
    if settings.reference:
        from tunekit.models.loading import load_model
        from tunekit.models.refs import resolve

        section = recipe.model.model_copy(update={"name_or_path": settings.reference})
        reference = load_model(resolve(settings.reference, recipe.model.revision, build=True, download=True), section)
        reference.requires_grad_(False)
    config = DPOConfig(
        **trainer_kwargs(recipe, run.out, run.dtype, has_eval=bool(data.eval)),
        max_length=recipe.data.max_length,
        truncation_mode=settings.truncation,
        beta=settings.beta,
        loss_type=settings.loss_type,
        loss_weights=settings.loss_weights,
        label_smoothing=settings.label_smoothing,
    )
    trainer = DPOTrainer(ref_model=reference, args=config, **trainer_inputs(run))

    return fit_trainer(trainer, run, echo, PREFERENCE_FIGURES, extra_eval=preference_eval(trainer, run))
