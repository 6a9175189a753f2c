"""`tunekit estimate-memory` and `tunekit estimate-compute` end to end: targets, flags, recipes, JSON,
errors (exit 2), the torch-free fast path and --measure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from tests.conftest import ROOT, Result, write_recipe
from tunekit.errors import UserError

JSON_KEYS = {"parameters", "trainable_parameters", "estimates"}
ESTIMATE_KEYS = {"dtype", "method", "weights", "gradients", "optimizer", "activations", "overhead", "total"}


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]):
    """The two commands on a Typer app of their own, behind the same error boundary as `tunekit`."""
    from tunekit.cli import estimate

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)

    @app.callback()
    def _root() -> None:
        """test app"""

    estimate.register(app)

    def invoke(*args: str) -> Result:
        capsys.readouterr()
        try:
            app(args=list(args), prog_name="tunekit")
            code = 0
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            code = 2
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 0
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return invoke


def recipe(tmp_path: Path, **training: object) -> Path:
    return write_recipe(
        tmp_path / "r.yaml",
        method="sft",
        model={"name_or_path": "tiny:llama", "dtype": "bf16"},
        adapter={"type": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
        data={"train": "builtin:reversal", "max_length": 64},
        training={"learning_rate": 1e-3, "batch_size": 3, **training},
        output_dir=str(tmp_path / "run"),
    )


@pytest.mark.parametrize("command", ["estimate-memory", "estimate-compute"])
def test_help(run, command: str) -> None:
    result = run(command, "--help")
    assert result.code == 0
    assert f"Usage: tunekit {command}" in result.out
    assert ("--method" if command == "estimate-memory" else "--tokens") in result.out


def test_preset_table_has_every_dtype_and_the_gpus_it_fits(run) -> None:
    result = run("estimate-memory", "llama-3-8b", "--method", "lora", "--seq-len", "1024")
    assert result.code == 0, result.err
    for dtype in ("fp32", "fp16", "bf16", "int8", "int4"):
        assert f"\n{dtype} " in result.out
    assert "8,030,261,248 parameters" in result.out
    assert "80 GB" in result.out


def test_json_is_exactly_the_documented_object(run) -> None:
    result = run("estimate-memory", "mistral-7b", "--method", "qlora", "--batch-size", "4", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert set(data) == JSON_KEYS
    assert data["parameters"] == 7_241_732_096
    assert [e["dtype"] for e in data["estimates"]] == ["int4"]
    for entry in data["estimates"]:
        assert set(entry) == ESTIMATE_KEYS
        assert all(isinstance(entry[k], int) for k in ESTIMATE_KEYS - {"dtype", "method"})


def test_dtype_flag_picks_one_row(run) -> None:
    data = json.loads(run("estimate-memory", "gpt2", "--dtype", "fp16", "--json").out)
    assert [e["dtype"] for e in data["estimates"]] == ["fp16"]
    assert data["trainable_parameters"] == data["parameters"] == 124_439_808


def test_recipe_fills_the_settings_and_flags_override_them(run, tmp_path: Path) -> None:
    path = recipe(tmp_path)
    from_recipe = json.loads(run("estimate-memory", str(path), "--json").out)
    assert from_recipe["trainable_parameters"] == 2 * 4 * ((64 + 64) + (64 + 32))  # r=4 on q_proj, v_proj
    assert [e["dtype"] for e in from_recipe["estimates"]] == ["bf16"]
    bigger = json.loads(run("estimate-memory", str(path), "--batch-size", "30", "--json").out)
    assert bigger["estimates"][0]["activations"] > 5 * from_recipe["estimates"][0]["activations"]
    override = json.loads(run("estimate-memory", str(path), "training.batch_size=30", "--json").out)
    assert override["estimates"][0]["activations"] == bigger["estimates"][0]["activations"]


def test_local_folder_and_config_json(run, tmp_path: Path) -> None:
    from tunekit.estimate.targets import load_preset

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(load_preset("qwen2.5-0.5b").config))
    by_folder = json.loads(run("estimate-memory", str(folder), "--json").out)
    by_file = json.loads(run("estimate-memory", str(folder / "config.json"), "--json").out)
    assert by_folder == by_file
    assert by_folder["parameters"] == 494_032_768


def test_tiny_target_and_hub_id_of_a_preset_work_offline(run) -> None:
    assert run("estimate-memory", "tiny:t5", "--json").code == 0
    data = json.loads(run("estimate-memory", "meta-llama/Meta-Llama-3-8B", "--json").out)
    assert data["parameters"] == 8_030_261_248
    chat = run("estimate-memory", "meta-llama/Llama-2-7b-chat-hf", "--dtype", "bf16")
    assert chat.code == 0
    assert "the architecture of preset llama-2-7b" in chat.out


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_estimates_offline(run, path: Path) -> None:
    result = run("estimate-memory", str(path), "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["estimates"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("lama-3-8b",), "closest presets: llama-3-8b"),
        (("some-org/not-a-model",), "cannot get config.json of 'some-org/not-a-model'"),
        (("gpt2", "--batch-size", "0"), "--batch-size must be at least 1"),
        (("gpt2", "--method", "lora", "--lora-r", "0"), "--lora-r must be at least 1"),
        (("gpt2", "--num-gpus", "4"), "more GPUs than --sharding none allows"),
        (("gpt2", "--method", "lorra"), "did you mean 'lora'"),
        (("gpt2", "--dtype", "int3"), "--dtype 'int3' is not one of"),
        (("gpt2", "--method", "lora", "--lora-targets", "q_proj"), "'q_proj' matches no linear layer of gpt2"),
        (("gpt2", "--json", "--measure"), "--json prints the estimate object only"),
    ],
)
def test_bad_input_exits_2_with_one_line(run, args: tuple[str, ...], message: str) -> None:
    result = run("estimate-memory", *args)
    assert result.code == 2
    assert message in result.err
    assert "Traceback" not in result.err


def test_a_config_lacking_a_field_exits_2_naming_it(run, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": 64,
                "num_attention_heads": 4,
                "vocab_size": 100,
                "intermediate_size": 128,
            }
        )
    )
    result = run("estimate-memory", str(path))
    assert result.code == 2
    assert "lacks num_hidden_layers" in result.err


def test_estimate_compute(run) -> None:
    result = run("estimate-compute", "llama-2-7b", "--tokens", "2B", "--gpu", "a100", "--num-gpus", "8")
    assert result.code == 0, result.err
    for label in ("training FLOPs", "petaflop/s-days", "GPU-hours", "wall time", "Chinchilla tokens"):
        assert label in result.out
    assert "NVIDIA A100" in result.out
    assert run("estimate-compute", "gpt2", "--tokens", "1M", "--gpu", "h1000").code == 2


def test_measure_on_a_cpu_prints_estimate_against_measured(run, tmp_path: Path) -> None:
    result = run("estimate-memory", str(recipe(tmp_path, batch_size=2)), "--measure", "--steps", "2")
    assert result.code == 0, result.err
    assert "measured on cpu" in result.out
    assert "CPU allocator peak" in result.out
    for term in ("weights", "gradients", "optimizer", "activations saved", "peak"):
        assert f"\n{term}" in result.out


def test_the_estimate_from_a_preset_imports_no_torch() -> None:
    script = (
        "import sys, typer\n"
        "from tunekit.cli import estimate\n"
        "app = typer.Typer()\n"
        "@app.callback()\n"
        "def root(): pass\n"
        "estimate.register(app)\n"
        "try:\n"
        "    app(args=['estimate-memory', 'llama-3-70b', '--method', 'qlora'], prog_name='tunekit')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'bitsandbytes') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    ).stdout
    assert "HEAVY []" in out, out


def test_tunekit_cli_registers_the_commands(cli) -> None:
    """Through the real `tunekit` app, once it registers this module's commands."""
    from tunekit.cli import app

    names = {c.name for c in app.registered_commands}
    if "estimate-memory" not in names:
        pytest.skip("tunekit.cli does not register estimate.register(app) yet")
    result = cli("estimate-memory", "gpt2", "--json")
    assert result.code == 0
    assert set(json.loads(result.out)) == JSON_KEYS
    assert cli("estimate-memory", "no-such-model").code == 2
