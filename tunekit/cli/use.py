"""Commands that use a trained model: `merge`, `generate`, `chat`, `eval`.

    $ tunekit merge runs/lora/final runs/lora/merged
    $ tunekit generate runs/lora/final --prompt "Reverse the words: red green blue"
    $ tunekit chat runs/lora/merged --system "You are terse."
    $ tunekit eval runs/lora/merged --data test.jsonl --compare tiny:llama --shots 0 --shots 4

MODEL is a local folder, a Hub id, `tiny:ARCH`, or a run's `final/` (a full model, or an adapter that
is put on its recorded base); `--adapter DIR` puts an adapter on the MODEL given instead.
"""

from __future__ import annotations

import functools
import gc
import inspect
import json
import sys
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from tunekit.errors import UserError

if TYPE_CHECKING:
    from tunekit.use.generate import Decoding


class Dtype(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class Quantization(str, Enum):
    auto = "auto"
    none = "none"
    int8 = "8bit"
    int4 = "4bit"


MODEL = typer.Argument(
    ...,
    show_default=False,
    help="Model folder, Hub id, tiny:ARCH, or a run's final/ (a full model, or an adapter loaded on its base).",
)
ADAPTER = typer.Option(None, "--adapter", help="Adapter folder to put on MODEL (MODEL is then its base).")
DTYPE = typer.Option(Dtype.auto, "--dtype", help="Weights precision; auto: bf16 on a GPU that has it, else fp32.")
QUANT = typer.Option(
    Quantization.auto,
    "--quantization",
    help="Load the base in 8-bit or 4-bit (bitsandbytes); auto: as the run that trained the adapter did (QLoRA: 4bit).",
)
TRUST = typer.Option(False, "--trust-remote-code", help="Run modelling code shipped with the model.")
SYSTEM = typer.Option(None, "--system", help="System prompt (with the chat template).")
# The decoding options of `generate` and `chat`, as (parameter, type, option); None: not given, so
# Decoding.from_options keeps its default and knows no sampling knob was set.
DECODING_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    (
        "max_new_tokens",
        int,
        typer.Option(256, "--max-new-tokens", min=1, help="Most tokens to generate per completion."),
    ),
    ("do_sample", bool, typer.Option(False, "--do-sample", help="Sample instead of greedy decoding (the default).")),
    (
        "temperature",
        float | None,
        typer.Option(None, "--temperature", min=0.0, help="Sampling temperature; implies --do-sample; 0 is greedy."),
    ),
    (
        "top_k",
        int | None,
        typer.Option(
            None, "--top-k", min=0, help="Sample from the k likeliest tokens (default 50; 0: off); implies --do-sample."
        ),
    ),
    (
        "top_p",
        float | None,
        typer.Option(
            None, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass (default 1.0: off); implies --do-sample."
        ),
    ),
    (
        "num_beams",
        int,
        typer.Option(
            1, "--num-beams", min=1, help="Beam search with this many beams; returns the highest-scoring beam."
        ),
    ),
    (
        "repetition_penalty",
        float,
        typer.Option(1.0, "--repetition-penalty", min=0.0, help="> 1 discourages repeated tokens (1: off)."),
    ),
    (
        "stop",
        list[str] | None,
        typer.Option(None, "--stop", help="Stop before this string (repeatable); it is not included."),
    ),
    ("seed", int | None, typer.Option(None, "--seed", help="Seed for sampling: same seed, same text.")),
)


EVAL_DATA = typer.Option(
    ..., "--data", show_default=False, help="Evaluation data: .jsonl/.json/.csv/.parquet, a Hub id or builtin:NAME."
)
EVAL_FORMAT = typer.Option(
    "auto", "--format", help="Row format: auto, text, prompt_completion, messages, alpaca, sharegpt."
)
EVAL_COMPARE = typer.Option(
    None, "--compare", help="Another model or adapter folder to evaluate alongside, one row each (repeatable)."
)
EVAL_SHOTS = typer.Option(
    None,
    "--shots",
    min=0,
    help="Put K demonstrations before each prompt; repeatable: --shots 0 --shots 4 gives a row for each.",
)
EVAL_SHOTS_FROM = typer.Option(
    None,
    "--shots-from",
    help="Rows to take demonstrations from; default: the first K rows of --data, which are then not scored.",
)
EVAL_MAX_LENGTH = typer.Option(
    1024, "--max-length", min=8, help="Tokens per example for the loss; longer ones are truncated."
)
EVAL_MAX_NEW = typer.Option(
    None, "--max-new-tokens", min=1, help="Tokens to generate; default: the longest reference completion + 16."
)
EVAL_PREDICTIONS = typer.Option(
    None, "--predictions", help="Write each model's prompt, target and prediction per example to this .jsonl."
)
EVAL_JSON = typer.Option(
    False,
    "--json",
    help="Print JSON: loss, perplexity, exact_match, rougeL, bleu, num_examples (a list for several rows).",
)
BATCH_SIZE = typer.Option(8, "--batch-size", min=1, help="Examples decoded or scored together.")


def with_decoding(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with the decoding options in place of its `decoding` parameter, which gets one Decoding.

    Typer reads a command's options from inspect.signature, which honours `__signature__`: so the
    options are declared once, in DECODING_OPTIONS, and every command that takes them reads them alike.
    """
    signature = inspect.signature(command)
    slot = signature.parameters["decoding"]  # where --help lists the options
    shared = [
        inspect.Parameter(name, slot.kind, default=option, annotation=kind) for name, kind, option in DECODING_OPTIONS
    ]
    params = [q for p in signature.parameters.values() for q in (shared if p is slot else [p])]

    @functools.wraps(command)
    def run(**given: Any) -> None:
        options = {name: given.pop(name) for name, _, _ in DECODING_OPTIONS}
        command(**given, decoding=_decoding(**options))

    run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}  # what typing.get_type_hints reads
    return run


def register(app: typer.Typer) -> None:
    app.command("merge")(merge)
    app.command("generate")(generate)
    app.command("chat")(chat)
    app.command("eval")(evaluate)


def merge(
    adapter: Path = typer.Argument(..., show_default=False, help="LoRA adapter folder (e.g. a run's final/)."),
    output: Path = typer.Argument(..., show_default=False, help="Folder for the merged model (new or empty)."),
    dtype: Dtype = typer.Option(
        Dtype.auto, "--dtype", help="Precision to merge and save in; auto: the base's own dtype."
    ),
    base: str | None = typer.Option(None, "--base", help="Base model, when not the one adapter_config.json records."),
    tolerance: float | None = typer.Option(
        None,
        "--tolerance",
        min=0.0,
        help="Largest accepted |logit diff|, merged vs adapter; default scales with dtype.",
    ),
    check_only: bool = typer.Option(
        False, "--check-only", help="Merge nothing: check that OUTPUT, merged elsewhere, matches the adapter."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a merged model in OUTPUT (swapped in once the new one is checked)."
    ),
    overwrite_any: bool = typer.Option(
        False, "--overwrite-any", help="--overwrite even an OUTPUT that holds files tunekit did not write."
    ),
) -> None:
    """Merge a LoRA adapter into its base: a plain model (safetensors) + tokenizer + chat template, checked.

    The merged model is reloaded and compared with the adapter model on a few prompts; exit 1 (nothing
    written) when logits differ beyond the tolerance or the merge left the base weights unchanged. OUTPUT
    may not be the adapter's folder or its base's, nor a folder holding them (the adapter's run folder).
    """
    from tunekit.use.merge import MergeCheckFailed, check_merged
    from tunekit.use.merge import merge as run_merge

    try:
        if check_only:
            check = check_merged(adapter, output, dtype.value, base, tolerance, report=typer.echo)
        else:
            check = run_merge(
                adapter, output, dtype.value, base, tolerance, overwrite, report=typer.echo, overwrite_any=overwrite_any
            )
    except MergeCheckFailed as failed:
        typer.echo(f"check: {failed.check.summary()}")
        written = "" if check_only else f"; nothing written to {output}"
        typer.echo(f"merge check failed: {failed}{written}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"check: {check.summary()}")
    typer.echo(f"ok: {output} matches the adapter" if check_only else f"saved merged model to {output}")


def _loaded(ref: Any, dtype: Dtype, quant: Quantization, trust: bool) -> Any:
    from tunekit.use.load import load

    return load(ref, dtype.value, quant.value, trust)


def _reference(model: str, adapter: Path | None = None) -> Any:
    from tunekit.use.load import resolve_reference

    return resolve_reference(model, adapter)


def _decoding(**given: Any) -> Decoding:
    from tunekit.use.generate import Decoding

    given["stop"] = list(given["stop"] or []) or None
    return Decoding.from_options(**given)


@with_decoding
def generate(
    model: str = MODEL,
    adapter: Path | None = ADAPTER,
    prompt: list[str] | None = typer.Option(None, "--prompt", help="Prompt text (repeatable)."),
    file: str | None = typer.Option(
        None, "--file", help="Prompts from .jsonl/.json/.csv/.parquet rows: 'prompt' (text or messages) or 'messages'."
    ),
    system: str | None = SYSTEM,
    no_chat_template: bool = typer.Option(False, "--no-chat-template", help="Feed prompts as plain text."),
    *,
    decoding: Decoding,
    echo: bool = typer.Option(False, "--echo", help="Print the prompt (as the model read it) before each completion."),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object per prompt: prompt, completion, token counts, finish_reason."
    ),
    batch_size: int = BATCH_SIZE,
    dtype: Dtype = DTYPE,
    quantization: Quantization = QUANT,
    trust_remote_code: bool = TRUST,
) -> None:
    """Complete prompts (greedy by default); prints only the completions.

    The tokenizer's chat template is applied when it has one (--no-chat-template: plain text).
    """
    if bool(prompt) == bool(file):
        raise UserError("give --prompt TEXT or --file PROMPTS.jsonl (one of them)")
    from tunekit.data.chat import render_prompt
    from tunekit.use.generate import generate as run_generate
    from tunekit.use.generate import read_prompts

    texts = list(prompt) if prompt else read_prompts(file or "")
    loaded = _loaded(_reference(model, adapter), dtype, quantization, trust_remote_code)
    for note in loaded.notes:
        typer.echo(f"note: {note}", err=True)  # stdout carries only completions
    prompts = [render_prompt(loaded.tokenizer, p, chat_template=not no_chat_template, system=system) for p in texts]
    done = run_generate(loaded, prompts, decoding, batch_size=batch_size)
    for i, completion in enumerate(done):
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "prompt": completion.prompt,
                        "completion": completion.text,
                        "prompt_tokens": completion.prompt_tokens,
                        "completion_tokens": completion.completion_tokens,
                        "finish_reason": completion.finish_reason,
                    },
                    ensure_ascii=False,
                )
            )
            continue
        if i:
            typer.echo("")
        typer.echo(completion.prompt + completion.text if echo else completion.text)


@with_decoding
def chat(
    model: str = MODEL,
    adapter: Path | None = ADAPTER,
    system: str | None = SYSTEM,
    *,
    decoding: Decoding,
    dtype: Dtype = DTYPE,
    quantization: Quantization = QUANT,
    trust_remote_code: bool = TRUST,
) -> None:
    """Chat with a model through its chat template, streaming replies.

    Type a message and press Enter. Commands: /reset, /set KEY VALUE (temperature, top-k, top-p,
    max-new-tokens, num-beams, repetition-penalty, stop, seed, do-sample), /settings, /help, /exit.
    Reads lines from standard input, so a script can drive it.
    """
    from tunekit.use.chat import ChatSession, run_chat

    loaded = _loaded(_reference(model, adapter), dtype, quantization, trust_remote_code)
    for note in loaded.notes:
        typer.echo(f"note: {note}")
    session = ChatSession(loaded, decoding, system)
    run_chat(
        session,
        _user_lines(),
        write=lambda text: typer.echo(text, nl=False),
        notify=typer.echo,
        warn=lambda text: typer.echo(text, err=True),
    )


def _user_lines() -> Iterator[str]:
    if not sys.stdin.isatty():
        yield from sys.stdin
        return
    while True:
        try:
            yield input("> ")
        except EOFError:
            return


def evaluate(
    model: str = MODEL,
    adapter: Path | None = ADAPTER,
    data: str = EVAL_DATA,
    fmt: str = EVAL_FORMAT,
    compare: list[str] | None = EVAL_COMPARE,
    shots: list[int] | None = EVAL_SHOTS,
    shots_from: str | None = EVAL_SHOTS_FROM,
    max_length: int = EVAL_MAX_LENGTH,
    max_new_tokens: int | None = EVAL_MAX_NEW,
    batch_size: int = BATCH_SIZE,
    predictions: Path | None = EVAL_PREDICTIONS,
    as_json: bool = EVAL_JSON,
    dtype: Dtype = DTYPE,
    quantization: Quantization = QUANT,
    trust_remote_code: bool = TRUST,
) -> None:
    """Loss and perplexity, and on prompt/completion or chat data exact match, ROUGE-L and BLEU (0-100).

    Loss covers exactly the tokens training puts loss on (completions, assistant turns, or all text),
    rendered as training renders them; generation is greedy.
    """
    from tunekit.train.rundir import finite
    from tunekit.use.evaluate import evaluate as run_eval
    from tunekit.use.evaluate import load_eval_data, write_predictions
    from tunekit.use.load import shown_name

    counts = sorted(set(shots or [0]))
    eval_data = load_eval_data(data, fmt, max(counts), shots_from)
    # Every reference is resolved before the first (slow) load, so a typo fails at once.
    refs = [_reference(model, adapter)] + [_reference(name) for name in compare or []]
    rows, records = [], []
    for ref in refs:
        name = shown_name(ref)
        loaded = _loaded(ref, dtype, quantization, trust_remote_code)
        for note in loaded.notes:
            typer.echo(f"note: {note}", err=as_json)
        for count in counts:
            metrics, predicted = run_eval(loaded, eval_data, count, batch_size, max_length, max_new_tokens)
            rows.append({"model": name, **metrics})
            records += [{"model": name, "shots": count, **r} for r in predicted]
        del loaded
        gc.collect()  # free this model before the next one loads
    if predictions is not None:
        write_predictions(predictions, records)
    if as_json:
        typer.echo(json.dumps(finite(rows[0]) if len(rows) == 1 else [finite(r) for r in rows], indent=2))
        return
    typer.echo(
        f"data: {data} ({eval_data.format}), {len(eval_data.rows)} examples scored"
        + (f"; demonstrations from {eval_data.demo_source}" if max(counts) else "")
    )
    typer.echo(_table(rows))


def _table(rows: list[dict[str, Any]]) -> str:
    columns = [
        ("model", "model"),
        ("shots", "shots"),
        ("loss", "loss"),
        ("perplexity", "ppl"),
        ("exact_match", "exact"),
        ("rougeL", "rougeL"),
        ("bleu", "bleu"),
    ]
    cells = [[label for _, label in columns]]
    for row in rows:
        cells.append([_cell(row[key]) for key, _ in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)
