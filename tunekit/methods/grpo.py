"""GRPO through trl's GRPOTrainer: the critic-free alternative to `tunekit ppo`, same reward sources.

    $ tunekit grpo recipes/tiny/grpo.yaml grpo.num_generations=8

Each prompt gets `grpo.num_generations` sampled completions; their rewards, compared within the group,
are the advantages (no value head). `training.batch_size x gradient_accumulation_steps` completions
per step, a multiple of the group size. With LoRA the reference is the base with the adapter
disabled. summary.json adds `eval_reward_before` / `eval_reward_after` (trl's mean reward of sampled
completions to the held-out prompts); metrics.jsonl carries trl's reward, KL, entropy, clip ratios
and completion lengths.
"""

from __future__ import annotations

from typing import Any

from tunekit.errors import UserError
from tunekit.train.builders import trainer_inputs
from tunekit.train.fit import fit_trainer
from tunekit.train.pipeline import Echo, Plan, Run
from tunekit.train.summary import Trained


def check(plan: Plan) -> None:
    """Completions come in groups of grpo.num_generations: the batch must hold whole groups."""
    settings, t = plan.recipe.grpo, plan.recipe.training
    if (t.batch_size * t.gradient_accumulation_steps) % settings.num_generations:
        raise UserError(
            f"training.batch_size x gradient_accumulation_steps ({t.batch_size * t.gradient_accumulation_steps}) "
            f"must be a multiple of grpo.num_generations ({settings.num_generations})"
        )
    if t.batch_size % settings.num_generations:
        raise UserError(
            f"training.batch_size ({t.batch_size}) must be a multiple of grpo.num_generations "
            f"({settings.num_generations}): evaluation samples one group per prompt per batch"
        )


def train(run: Run, echo: Echo) -> Trained:
    recipe, data = run.recipe, run.data
    settings = recipe.grpo

    from trl import GRPOConfig, GRPOTrainer

    from tunekit.data.formats import prompts_only
    from tunekit.rl.rewards import reward_source
    from tunekit.train.builders import trainer_kwargs

    source = reward_source(settings, str(run.model.device))

    def reward(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        # trl passes chat completions as message lists; reward sources take the text.
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return source(prompts, texts)

    reward.__name__ = (settings.reward_function or "reward_model").split(":")[-1]  # trl's metric name
    config = GRPOConfig(
        **trainer_kwargs(recipe, run.out, run.dtype, has_eval=bool(data.eval)),
        num_generations=settings.num_generations,
        max_completion_length=settings.max_new_tokens,
        temperature=settings.temperature,
        top_k=settings.top_k or 0,
        top_p=settings.top_p,
        beta=settings.beta,
        epsilon=settings.epsilon,
        loss_type=settings.loss_type,
    )
    prompts = prompts_only(data.train)
    held_out = prompts_only(data.eval) if data.eval is not None else None
    trainer = GRPOTrainer(reward_funcs=reward, args=config, **trainer_inputs(run, train=prompts, evaluation=held_out))
    return fit_trainer(trainer, run, echo, {"eval_reward": "eval_reward"})
