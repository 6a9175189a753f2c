"""Samples while training: greedy answers to a few prompts, into samples.jsonl and the trackers, and the
before/after block a run of a generating method ends with.

    >>> rows = [{"prompt": "Reverse the words: a b", "completion": " b a"},
    ...         {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    >>> [(p.shown, p.reference) for p in prompts_of(rows)]
    [('Reverse the words: a b', 'b a'), ('hi', 'hello')]
    >>> print(block([({"prompt": "hi", "output": "xx", "reference": "hello"}, {"output": "hello"})]))
    samples (greedy, 1 prompt):
      hi
        expected  hello
        before    xx
        after     hello

The prompts are `training.sample_prompts`, or with `eval` the first `training.sample_count` held-out
prompts with their references (the completion, the chosen answer, the last assistant turn). A sample is
drawn before training, every `training.sample_every` steps, and after training; the first three prompts'
answers before and after are the block. Generation is tunekit.use.generate's, on the model being trained,
rendered by tunekit.data.chat (the chat template when the data is chat).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from tunekit.data.chat import Messages
from tunekit.data.formats import prompt_part
from tunekit.errors import UserError

if TYPE_CHECKING:
    from tunekit.train.pipeline import Plan, Run

BLOCK = 3  # prompts in the before/after block
GENERATING_HEADS = ("causal-lm", "seq2seq-lm")
Score = Callable[[list[Any], list[str]], list[float]]  # (prompts, completions) -> one reward each


@dataclass(frozen=True)
class SamplePrompt:
    prompt: str | Messages  # as the data poses it
    reference: str | None = None

    @property
    def shown(self) -> str:
        """The prompt as a person reads it: its text, or the last user turn of a chat."""
        if isinstance(self.prompt, str):
            return self.prompt
        users = [m["content"] for m in self.prompt if m["role"] == "user"]
        return users[-1] if users else self.prompt[-1]["content"]


def prompts_of(rows: list[dict[str, Any]]) -> list[SamplePrompt]:
    return [SamplePrompt(prompt_part(row), _reference(row)) for row in rows]


def _reference(row: dict[str, Any]) -> str | None:
    """What the data says a good answer is: a completion, the chosen answer, the last assistant turn."""
    answer = row.get("completion") if row.get("label", True) else None
    answer = row.get("chosen", answer)
    if "messages" in row:
        answer = row["messages"][-1]["content"] if row["messages"][-1]["role"] == "assistant" else None
    if isinstance(answer, list):  # a chat completion: its assistant turn
        answer = answer[-1]["content"] if answer else None
    return answer.strip() if isinstance(answer, str) else None


def sample_prompts(plan: Plan) -> list[SamplePrompt]:
    """The prompts to sample, checked in the preflight stage: a model that cannot generate takes no sample
    settings, and text rows pose no prompt to take from `eval`."""
    t, data = plan.recipe.training, plan.data
    asked = t.sample_every is not None or t.sample_prompts != "eval"
    if plan.head not in GENERATING_HEADS:
        if asked:
            raise UserError(
                f"training.sample_every / sample_prompts: this run trains a {plan.head} model, which scores or "
                "fills in text rather than writes it; there is nothing to sample"
            )
        return []
    if t.sample_prompts != "eval":
        return [SamplePrompt(prompt) for prompt in t.sample_prompts]
    if data.kind == "text":
        if t.sample_every is not None:
            raise UserError(
                f"training.sample_prompts: eval takes held-out prompts, and {plan.recipe.data.train} holds plain "
                'text; give the prompts as a list (sample_prompts: ["Once upon a time"])'
            )
        return []
    from tunekit.data import first_rows

    return prompts_of(first_rows(data.eval, t.sample_count))


class Sampler:
    """Greedy answers of the model being trained to the sample prompts, at a step: samples.jsonl and the
    trackers (through run.log); the first and the last answers make the before/after block."""

    def __init__(self, run: Run, prompts: list[SamplePrompt], echo: Callable[[str], None], score: Score | None = None):
        self.run, self.prompts, self.echo, self.score = run, prompts, echo, score
        self.first: list[dict[str, Any]] = []
        self.last: list[dict[str, Any]] = []
        self.skipped = False
        self.seconds = 0.0  # spent sampling inside train(), which the run's training time leaves out

    def __call__(self, model: Any, step: int) -> None:
        import time

        if self.skipped:
            return
        started = time.perf_counter()
        texts = self._generate(model)
        self.seconds += time.perf_counter() - started
        if texts is None:
            return
        rows = [
            {"step": step, "prompt": p.shown, "output": text, "reference": p.reference}
            for p, text in zip(self.prompts, texts)
        ]
        if self.score is not None:  # an empty answer has nothing to score (a classifier cannot read no tokens)
            scored = [i for i, text in enumerate(texts) if text.strip()]
            rewards = self.score([self.prompts[i].prompt for i in scored], [texts[i] for i in scored]) if scored else []
            for row in rows:
                row["reward"] = None
            for i, reward in zip(scored, rewards):
                rows[i]["reward"] = round(float(reward), 4)
        self.run.log.samples(rows)
        self.first = self.first or rows
        self.last = rows

    def _generate(self, model: Any) -> list[str] | None:
        from tunekit.data.chat import render_prompt
        from tunekit.use.generate import Decoding, cache_keeps_prefix, generate
        from tunekit.use.load import Loaded

        run = self.run
        is_seq2seq = run.plan.head == "seq2seq-lm"
        tokenizer, training, side = run.tokenizer, model.training, run.tokenizer.padding_side
        model.eval()
        try:
            if not cache_keeps_prefix(model, is_seq2seq):
                self.skipped = True
                self._note(
                    "note: no samples: with the installed peft and transformers a prefix-tuned model generates as "
                    "its base (tunekit.use.generate.cache_keeps_prefix); the loss figures still measure it"
                )
                return None
            chat = run.data.conversational
            rendered = [render_prompt(tokenizer, p.prompt, chat_template=chat) for p in self.prompts]
            decoding = Decoding(max_new_tokens=run.recipe.training.sample_max_new_tokens)
            loaded = Loaded(model, tokenizer, run.ref, is_seq2seq)
            return [done.text for done in generate(loaded, rendered, decoding)]
        finally:  # the trainer's batches are padded on the right, and it trains in training mode
            tokenizer.padding_side = side
            model.train(training)

    def _note(self, text: str) -> None:
        from tqdm.auto import tqdm

        with tqdm.external_write_mode():  # a progress bar may be on screen
            self.echo(text)

    def pairs(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(before, after) of the block's prompts; empty unless both were drawn."""
        if not self.first or self.first is self.last:
            return []
        return list(zip(self.first, self.last))[:BLOCK]


def sampler_for(run: Run, echo: Callable[[str], None], score: Score | None = None) -> Sampler | None:
    """A sampler when the run has prompts to sample (None for models that do not generate, or no prompts)."""
    prompts = sample_prompts(run.plan)
    return Sampler(run, prompts, echo, score) if prompts else None


class SampleCallback(TrainerCallback):
    """Draw samples before training, every `training.sample_every` steps, and after training (rank 0)."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.sampler(model, state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        every = self.sampler.run.recipe.training.sample_every
        step = state.global_step
        if state.is_world_process_zero and every and step % every == 0 and step < state.max_steps:
            self.sampler(model, step)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.sampler(model, state.global_step)


def block(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """The before/after lines a run ends with."""
    lines = [f"samples (greedy, {len(pairs)} prompt{'s' if len(pairs) != 1 else ''}):"]
    for before, after in pairs:
        lines.append(f"  {_line(before['prompt'])}")
        if before.get("reference") is not None:
            lines.append(f"    expected  {_line(before['reference'])}")
        lines += [f"    before    {_line(before['output'])}", f"    after     {_line(after['output'])}"]
    return "\n".join(lines)


def _line(text: str, width: int = 100) -> str:
    flat = " ".join(str(text).split())
    if not flat:
        return "(nothing: end of text at once)"
    return flat if len(flat) <= width else flat[: width - 3] + "..."
