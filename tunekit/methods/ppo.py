"""PPO (RLHF): sample responses, score them, and push the policy towards higher reward at a KL cost.

    $ tunekit ppo recipes/tiny/ppo.yaml ppo.kl_coef=0.1

Each step: sample `batch_size x gradient_accumulation_steps x ppo.num_mini_batches` responses; score
them (a reward model, a classifier label or a `module:function`); shape per-token rewards with a KL
penalty to the reference; estimate advantages with GAE on a value head that shares the policy's
trunk; then `ppo.ppo_epochs` passes of clipped policy and value losses over minibatches. With
LoRA/QLoRA the reference is the base with the adapter disabled (one copy of the base in memory);
full fine-tuning keeps a frozen copy. metrics.jsonl gets reward, KL, entropy, losses, clip fraction,
approx KL and response length per logged step (to the trackers too); samples.jsonl greedy answers to
held-out prompts, with their reward, every `training.sample_every` steps and before/after. summary.json
adds `reward_mean_first`, `reward_mean_last`, `kl_last` and,
with eval prompts, `eval_reward_before` / `eval_reward_after` (mean reward of sampled responses).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Iterator
from typing import Any

from tunekit.config import Recipe
from tunekit.errors import UserError
from tunekit.train.pipeline import Echo, Plan, Run
from tunekit.train.rundir import where
from tunekit.train.summary import Trained

EVAL_PROMPTS = 64  # held-out prompts scored before and after training


def check(plan: Plan) -> None:
    """PPO's loop is tunekit's own, outside transformers' Trainer: one process, no checkpoints to resume,
    and the optimizers it builds itself."""
    from tunekit.train.launch import world_size

    options, optimizer = plan.options, plan.recipe.training.optimizer
    if optimizer not in ("adamw", "sgd"):
        raise UserError(f"training.optimizer: tunekit ppo supports adamw and sgd, not {optimizer}")
    if (options.num_processes or 1) > 1 or options.accelerate_config or world_size() > 1:
        raise UserError(
            "tunekit ppo runs in one process (its loop is tunekit's own, not transformers' Trainer); "
            "leave out --num-processes / --accelerate-config, or use tunekit grpo, which scales out"
        )
    if options.resume:
        raise UserError("tunekit ppo cannot --resume: its loop writes no checkpoints; start again with --overwrite")


def train(run: Run, echo: Echo) -> Trained:
    import torch

    from tunekit.data.formats import prompts_only
    from tunekit.models.loading import new_token_ids
    from tunekit.rl.ppo_loop import PPOLoop
    from tunekit.rl.rewards import reward_source
    from tunekit.rl.rollout import ValueHead
    from tunekit.train.builders import count_parameters, peft_config, save_adapter, wrap
    from tunekit.train.preflight import is_peft
    from tunekit.train.samples import sampler_for

    recipe, settings = run.recipe, run.recipe.ppo
    torch.manual_seed(recipe.training.seed)
    model, reference = run.model, None
    peft = peft_config(recipe.adapter, model, new_tokens=new_token_ids(run.tokenizer, recipe.model.add_tokens))
    if peft is not None:
        model = wrap(run, peft)
    elif not is_peft(model):
        reference = copy.deepcopy(model).eval().requires_grad_(False)  # full fine-tuning: a frozen copy
    value_head = ValueHead(model.config.hidden_size).to(model.device)
    reward = reward_source(settings, str(model.device))
    prompts = prompts_only(run.data.train)["prompt"]
    held_out = run.data.eval.select(range(min(EVAL_PROMPTS, run.data.eval_rows))) if run.data.eval else None
    eval_prompts = list(prompts_only(held_out)["prompt"]) if held_out is not None else []

    steps = _steps(recipe, len(prompts))
    head = sum(p.numel() for p in value_head.parameters())
    total, trainable = (n + head for n in count_parameters(model))
    echo(
        f"tunekit ppo: {recipe.model.name_or_path} [{recipe.adapter.type}] {total:,} parameters, "
        f"{trainable:,} trainable (value head included)\n"
        f"  prompts: {run.data.names} {len(prompts)} train, {len(eval_prompts)} eval; "
        f"{_rollouts(recipe)} responses per step\n  {steps} steps -> {where(run.out, run.dest)}"
    )
    loop = PPOLoop(recipe, run.tokenizer, model, reference, value_head, reward, steps)
    before = {"eval_reward": loop.evaluate(eval_prompts)} if eval_prompts else {}
    if before:
        echo(f"before training: eval reward {before['eval_reward']:.4f}")
    sampler = sampler_for(run, echo, score=reward)
    if sampler is not None:
        sampler(model, 0)
    started = time.perf_counter()
    history = loop.train(_batches(prompts, _rollouts(recipe), recipe.training.seed), run.log, echo, sampler)
    runtime = time.perf_counter() - started - (sampler.seconds if sampler is not None else 0.0)
    if sampler is not None:
        sampler(model, steps)
    after = {"eval_reward": loop.evaluate(eval_prompts)} if eval_prompts else {}

    final = run.out / "final"
    model.save_pretrained(str(final))
    save_adapter(model, run)
    run.tokenizer.padding_side = "right"  # what the other commands and trainers expect to load
    run.tokenizer.save_pretrained(str(final))
    torch.save(value_head.state_dict(), run.out / "value_head.pt")
    figures = {
        "reward_mean_first": history[0]["reward_mean"],
        "reward_mean_last": _tail_mean(history, "reward_mean"),
        "kl_last": _tail_mean(history, "kl"),
        "kl_coef_last": history[-1]["kl_coef"],
    }
    return Trained(
        steps=steps,
        runtime=runtime,
        train_loss=sum(h["loss"] for h in history) / len(history),
        total_parameters=total,
        trainable_parameters=trainable,
        before=before,
        after=after,
        eval_examples=len(eval_prompts),
        figures=figures,
        final=final,
        samples=sampler.pairs() if sampler is not None else [],
        closing=f"reward {figures['reward_mean_first']:.4f} -> {figures['reward_mean_last']:.4f}, "
        f"KL {figures['kl_last']:.4f}",
    )


def _rollouts(recipe: Recipe) -> int:
    return recipe.training.batch_size * recipe.training.gradient_accumulation_steps * recipe.ppo.num_mini_batches


def _steps(recipe: Recipe, n_prompts: int) -> int:
    if recipe.training.max_steps > 0:
        return recipe.training.max_steps
    return max(1, math.ceil(recipe.training.epochs * n_prompts / _rollouts(recipe)))


def _batches(prompts: list[Any], size: int, seed: int) -> Iterator[list[Any]]:
    """Endless shuffled passes over the prompts, `size` at a time."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(prompts)))
        rng.shuffle(order)
        for start in range(0, len(order) - size + 1 if len(order) >= size else 1, size):
            chosen = order[start : start + size]
            yield [prompts[i] for i in (chosen * size)[:size]]  # fewer prompts than a batch: repeat them


def _tail_mean(history: list[dict[str, float]], key: str) -> float:
    """Mean over the last tenth of the steps (at least one): one step's figure is noisy."""
    tail = history[-max(1, len(history) // 10) :]
    return sum(h[key] for h in tail) / len(tail)
