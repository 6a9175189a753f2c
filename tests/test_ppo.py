"""PPO: the math against hand-computed values, then tiny-model runs (learning, the KL leash, sources, errors)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT
from tunekit.rl import ppo_math


def test_gae_matches_a_hand_computed_example() -> None:
    # rewards r = [1, 0, 2], values V = [0.5, 1, 1.5], gamma 0.9, lambda 0.8, then a padded position:
    # deltas: d2 = 2 - 1.5 = 0.5; d1 = 0 + 0.9*1.5 - 1 = 0.35; d0 = 1 + 0.9*1 - 0.5 = 1.4
    # A2 = 0.5; A1 = 0.35 + 0.72*0.5 = 0.71; A0 = 1.4 + 0.72*0.71 = 1.9112
    rewards = torch.tensor([[1.0, 0.0, 2.0, 9.0]])
    values = torch.tensor([[0.5, 1.0, 1.5, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    advantages, returns = ppo_math.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    assert advantages[0].tolist() == pytest.approx([1.9112, 0.71, 0.5, 0.0])
    assert returns[0].tolist() == pytest.approx([2.4112, 1.71, 2.0, 0.0])


def test_shaped_rewards_put_the_score_on_the_last_real_token() -> None:
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    rewards = ppo_math.shaped_rewards(torch.tensor([1.0, -1.0]), kl, mask, kl_coef=0.1)
    assert rewards.flatten().tolist() == pytest.approx([-0.01, 0.98, 0.0, -0.05, -0.05, -1.05])


def test_clipped_policy_loss() -> None:
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    advantages = torch.tensor([[1.0, -1.0, 1.0]])
    loss, clip_fraction, approx_kl = ppo_math.policy_loss(new, old, advantages, torch.ones(1, 3), cliprange=0.2)
    # per token max(-A r, -A clip(r)): -1.2 (clipped), 0.8 (clipped), -1.1 (inside the range)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 1.1) / 3)
    assert clip_fraction.item() == pytest.approx(2 / 3)
    assert approx_kl.item() == pytest.approx(0.5 * float((new**2).mean()))
    # pessimism: a ratio pushed the harmful way is never clipped
    loss, clip_fraction, _ = ppo_math.policy_loss(
        torch.log(torch.tensor([[0.5]])), torch.zeros(1, 1), torch.tensor([[1.0]]), torch.ones(1, 1), 0.2
    )
    assert loss.item() == pytest.approx(-0.5) and clip_fraction.item() == 0


def test_clipped_value_loss() -> None:
    loss, fraction = ppo_math.value_loss(
        torch.tensor([[2.0, 0.1]]), torch.zeros(1, 2), torch.tensor([[0.0, 1.0]]), torch.ones(1, 2), cliprange=0.5
    )
    # token 0: max((2-0)^2, (0.5-0)^2) = 4; token 1: max((0.1-1)^2, same) = 0.81
    assert loss.item() == pytest.approx(0.5 * (4 + 0.81) / 2) and fraction.item() == 0


def test_whitening_ignores_padding() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    whitened = ppo_math.whiten(values, mask)
    assert whitened[0, :3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6) and whitened[0, 3] == 0
    kept = ppo_math.whiten(values, mask, shift_mean=False)
    assert kept[0, :3].tolist() == pytest.approx([1.0, 2.0, 3.0], abs=1e-6)  # unit variance, mean kept (2 +- 1)


def test_kl_estimators() -> None:
    logp, ref = torch.log(torch.tensor([0.5, 0.2])), torch.log(torch.tensor([0.25, 0.4]))
    assert ppo_math.kl_per_token(logp, ref, "k1").tolist() == pytest.approx([math.log(2), math.log(0.5)])
    # k3 = (q/p - 1) - log(q/p): 0.5 - 1 + log 2, 2 - 1 - log 2; never negative
    assert ppo_math.kl_per_token(logp, ref, "k3").tolist() == pytest.approx([-0.5 + math.log(2), 1 - math.log(2)])
    # both are unbiased: averaged over samples from p they give KL(p || q)
    p, q = torch.tensor([0.7, 0.3]), torch.tensor([0.4, 0.6])
    exact = float((p * (p / q).log()).sum())
    for estimator in ("k1", "k3"):
        assert float((p * ppo_math.kl_per_token(p.log(), q.log(), estimator)).sum()) == pytest.approx(exact)


def test_adaptive_kl_moves_towards_target() -> None:
    controller = ppo_math.AdaptiveKL(0.1, target=1.0, horizon=100)
    controller.update(kl=5.0, n_responses=10)
    assert controller.value == pytest.approx(0.1 * 1.02)
    controller.update(kl=0.0, n_responses=10)
    assert controller.value < 0.1 * 1.02
    fixed = ppo_math.AdaptiveKL(0.1, target=None, horizon=100)
    fixed.update(kl=5.0, n_responses=10)
    assert fixed.value == 0.1


def _summary(cli, tmp_path: Path, name: str, *overrides: str) -> dict:
    out = tmp_path / name
    result = cli("ppo", str(ROOT / "recipes" / "tiny" / "ppo.yaml"), f"output_dir={out}", *overrides)
    assert result.code == 0, result.err
    return json.loads((out / "summary.json").read_text())


def test_reward_rises_with_bounded_kl_and_a_large_kl_coef_holds_the_policy(cli, tmp_path: Path) -> None:
    free = _summary(cli, tmp_path, "free")
    assert free["reward_mean_last"] > free["reward_mean_first"] + 0.15, free
    assert free["eval_reward_after"] > free["eval_reward_before"] + 0.15, free
    assert 0 < free["kl_last"] < 12  # nats per 12-token response
    held = _summary(cli, tmp_path, "held", "ppo.kl_coef=2.0")
    assert held["kl_last"] < 1.0 and held["kl_last"] < free["kl_last"] / 3, (held, free)
    assert held["eval_reward_after"] < held["eval_reward_before"] + 0.1, held
    records = [json.loads(line) for line in (tmp_path / "free" / "metrics.jsonl").open()]
    assert {
        "step",
        "reward_mean",
        "reward_std",
        "kl",
        "entropy",
        "policy_loss",
        "value_loss",
        "clip_fraction",
        "approx_kl",
        "response_length",
        "kl_coef",
    } <= set(records[-1])
    samples = [json.loads(line) for line in (tmp_path / "free" / "samples.jsonl").open()]
    # greedy answers to held-out prompts before training, every training.sample_every (10) steps, and after
    assert {s["step"] for s in samples} == {0, 10, 20, 30, 40}
    assert set(samples[0]) == {"step", "prompt", "output", "reference", "reward"}


def test_lora_run_with_a_reward_model_folder_keeps_one_base(cli, tmp_path: Path) -> None:
    reward = cli(
        "reward",
        str(ROOT / "recipes" / "tiny" / "reward.yaml"),
        f"output_dir={tmp_path / 'rm'}",
        "training.max_steps=2",
    )
    assert reward.code == 0, reward.err
    summary = _summary(
        cli,
        tmp_path,
        "lora",
        "adapter.type=lora",
        "adapter.r=4",
        "training.max_steps=2",
        "ppo.reward_function=null",
        f"ppo.reward_model={tmp_path / 'rm' / 'final'}",
        "ppo.missing_eos_penalty=1.0",
        "ppo.kl_estimator=k3",
        "ppo.target_kl=1.0",
        "training.gradient_accumulation_steps=2",
        "training.batch_size=4",
    )
    assert 0 < summary["trainable_parameters"] < summary["total_parameters"] and summary["steps"] == 2
    assert (tmp_path / "lora" / "final" / "adapter_config.json").exists()
    assert summary["kl_coef_last"] != 0.05  # the adaptive controller moved it


def test_classifier_label_as_reward(cli, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunekit.models.tiny import ensure_tiny

    tiny = ensure_tiny("tiny:llama")
    classifier = AutoModelForSequenceClassification.from_pretrained(
        tiny, num_labels=2, id2label={0: "hateful", 1: "nothate"}, label2id={"hateful": 0, "nothate": 1}, pad_token_id=0
    )
    classifier.save_pretrained(tmp_path / "clf")
    AutoTokenizer.from_pretrained(tiny).save_pretrained(tmp_path / "clf")
    common = (
        "training.max_steps=1",
        "ppo.reward_function=null",
        f"ppo.reward_model={tmp_path / 'clf'}",
        "ppo.reward_input=completion",
    )
    assert _summary(cli, tmp_path, "clf-run", *common, "ppo.reward_label=nothate")["steps"] == 1
    wrong = cli(
        "ppo",
        str(ROOT / "recipes" / "tiny" / "ppo.yaml"),
        f"output_dir={tmp_path / 'x'}",
        *common,
        "ppo.reward_label=toxic",
    )
    assert wrong.code == 2 and "reward_label 'toxic' is not a label" in wrong.err and "nothate" in wrong.err


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["ppo.reward_function=tunekit.nowhere:f"], "cannot import tunekit.nowhere"),
        (["ppo.reward_function=tunekit.rl.rewards:missing"], "tunekit.rl.rewards has no function missing"),
        (["ppo.reward_function=nocolon"], "expected module:function"),
        (["ppo.reward_model=some/model"], "set exactly one of reward_model and reward_function"),
        (["training.optimizer=adafactor"], "tunekit ppo supports adamw and sgd"),
    ],
)
def test_bad_reward_settings_exit_2(cli, tmp_path: Path, overrides: list[str], expected: str) -> None:
    result = cli("ppo", str(ROOT / "recipes" / "tiny" / "ppo.yaml"), f"output_dir={tmp_path / 'r'}", *overrides)
    assert result.code == 2 and expected in result.err, result.err
    assert "Traceback" not in result.err


def test_prompt_only_rows(tmp_path: Path) -> None:
    from tunekit.config.sections import DataSection
    from tunekit.data import load_data
    from tunekit.errors import DataError

    path = tmp_path / "prompts.jsonl"
    path.write_text(
        '{"prompt": [{"role": "user", "content": "Tell me"}]}\n{"prompt": [{"role": "user", "content": "hi"}]}\n'
    )
    data = load_data(DataSection(train=str(path), eval_fraction=0), seed=0, method="ppo")
    assert data.format == "prompt" and data.train[1]["prompt"][0]["content"] == "hi"
    # One Arrow column holds one type: text in one row and messages in the next is named, not mixed.
    path.write_text('{"prompt": "Tell me"}\n{"prompt": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(DataError, match=r"row 2: field 'prompt': a list of messages, where the first row has text"):
        load_data(DataSection(train=str(path), eval_fraction=0), seed=0, method="ppo")


def test_ppo_help(cli) -> None:
    result = cli("ppo", "--help")
    assert result.code == 0 and "PPO" in result.out


def test_validate_checks_the_reward_function_and_renders_prompt_rows(cli, tmp_path) -> None:
    from tests.conftest import ROOT, write_jsonl

    recipe = ROOT / "recipes" / "tiny" / "ppo.yaml"
    missing = cli("validate", str(recipe), "ppo.reward_function=no_such_module:score")
    assert missing.code == 2 and "no_such_module" in missing.err
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Say something"}] * 4)
    shown = cli("validate", str(recipe), f"data.train={prompts}", "--examples", "1")
    assert shown.code == 0, shown.err
    assert "format prompt" in shown.out and "Say something" in shown.out
