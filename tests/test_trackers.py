"""Experiment trackers against the real thing, nothing mocked: one tiny run logs to TensorBoard, W&B (offline)
and an MLflow tracking server this module starts on 127.0.0.1, and each is read back with its own tools;
trackio locally; PPO's own loop reaches the trackers the same way. Every figure of metrics.jsonl must be on
every tracker, at the same step, with the same value."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import chat_rows, reversal_pairs, write_jsonl, write_recipe

ROWS = chat_rows(reversal_pairs(40, seed=3))


def tracked_recipe(tmp_path: Path, report_to: list[str], **training: object) -> Path:
    data = write_jsonl(tmp_path / "pairs.jsonl", ROWS)
    return write_recipe(
        tmp_path / "recipe.yaml",
        method="sft",
        model={"name_or_path": "tiny:llama"},
        data={"train": str(data), "eval_fraction": 0.1, "max_length": 48},
        training={
            "learning_rate": 3e-3,
            "max_steps": 12,
            "batch_size": 8,
            "logging_steps": 3,
            "eval_steps": 6,
            "sample_every": 6,
            "sample_max_new_tokens": 6,
            "report_to": report_to,
            "run_name": "tiny-tracked",
            "project": "tunekit-tests",
            **training,
        },
        output_dir=str(tmp_path / "run"),
    )


def figures(run: Path) -> dict[str, dict[int, float]]:
    """metrics.jsonl as figure -> {step: value} (the numbers every tracker must hold)."""
    found: dict[str, dict[int, float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                found.setdefault(key, {})[record["step"]] = float(value)
    return found


def same(expected: dict[str, dict[int, float]], got: dict[str, dict[int, float]], rel: float = 1e-6) -> None:
    for key, steps in expected.items():
        assert key in got, f"{key} missing; the tracker has {sorted(got)}"
        for step, value in steps.items():
            assert step in got[key], f"{key} at step {step} missing: {sorted(got[key])}"
            assert math.isclose(got[key][step], value, rel_tol=rel, abs_tol=1e-9), (key, step, got[key][step], value)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real MLflow tracking server on 127.0.0.1 with an sqlite backend, stopped at the end of the module."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--default-artifact-root", str(root / "art")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job workers: starts faster
    log = (root / "server.log").open("w")
    # its own process group: the server's uvicorn worker is stopped with it, whatever mlflow forwards
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (root / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the MLflow server did not start in 300 s"
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def tensorboard_figures(run: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def wandb_records(run: Path) -> list[dict]:
    """The offline run's records, read back by wandb's own `wandb leet inspect --json`."""
    (folder,) = (run / "wandb").glob("offline-run-*")
    exe = Path(sys.executable).parent / "wandb"
    out = subprocess.run(
        [str(exe), "leet", "inspect", "--json", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def wandb_figures(records: list[dict]) -> dict[str, dict[int, float]]:
    found: dict[str, dict[int, float]] = {}
    for record in records:
        if record["type"] != "history":
            continue
        step = int(record["history"]["step"]["num"])
        for key, value in record["history"]["item"].items():
            if not key.startswith("_") and isinstance(value, (int, float)):
                found.setdefault(key, {})[step] = float(value)
    return found


def test_one_run_reaches_tensorboard_wandb_and_mlflow_with_the_same_figures(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_server: str
) -> None:
    pytest.importorskip("wandb")
    from mlflow import MlflowClient

    from tunekit import __version__

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    result = cli("sft", str(tracked_recipe(tmp_path, ["tensorboard", "wandb", "mlflow"])))
    assert result.code == 0, result.err
    run = tmp_path / "run"
    expected = figures(run)
    summary = json.loads((run / "summary.json").read_text())
    final = summary["steps"]
    assert {"loss", "eval_loss", "grad_norm", "learning_rate"} <= set(expected)
    assert set(expected["eval_loss"]) == {0, 6, 12}  # before, during and after training
    names = ("eval_loss_before", "eval_loss_after", "train_loss", "trainable_parameters", "train_tokens_per_second")
    wanted_summary = {f"summary/{k}": summary[k] for k in names}

    # TensorBoard stores float32
    tensorboard = tensorboard_figures(run)
    same(expected, tensorboard, rel=1e-6)
    for key, value in wanted_summary.items():
        assert math.isclose(tensorboard[key][final], value, rel_tol=1e-6)

    records = wandb_records(run)
    same(expected, wandb_figures(records))
    (started,) = [r["run"] for r in records if r["type"] == "run"]
    assert started["display_name"] == "tiny-tracked" and started["project"] == "tunekit-tests"
    config = started["config"]["update"]
    assert config["model.name_or_path"] == "tiny:llama" and config["tunekit_version"] == __version__
    assert config["training.report_to"] == ["tensorboard", "wandb", "mlflow"]
    assert config["environment.torch.version"] == summary["environment"]["torch"]["version"]
    pushed = {}
    for record in records:
        if record["type"] == "summary":
            pushed.update(record["summary"]["update"])
    for key, value in wanted_summary.items():
        assert math.isclose(pushed[key], value, rel_tol=1e-9)
    assert pushed["method"] == "sft" and pushed["adapter"] == "none"
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    tables = (next((run / "wandb").glob("offline-run-*")) / "files" / "media" / "table").glob("samples_*")
    rows = [row for found in tables for row in json.loads(found.read_text())["data"]]  # one table per sample step
    assert sorted(rows) == sorted([row[c] for c in ("step", "prompt", "output", "reference")] for row in samples)

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("tunekit-tests")
    (mlflow_run,) = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'tiny-tracked'")
    assert mlflow_run.info.status == "FINISHED"
    got = {key: {m.step: m.value for m in client.get_metric_history(mlflow_run.info.run_id, key)} for key in expected}
    same(expected, got)
    for key, value in wanted_summary.items():
        assert math.isclose(mlflow_run.data.metrics[key], value, rel_tol=1e-9)
    params = mlflow_run.data.params
    assert params["model.name_or_path"] == "tiny:llama" and params["tunekit_version"] == __version__
    assert params["environment.packages.transformers"] == summary["environment"]["packages"]["transformers"]
    assert mlflow_run.data.tags["tunekit.method"] == "sft"
    logged = client.load_table(experiment.experiment_id, "samples.json", run_ids=[mlflow_run.info.run_id])
    assert list(logged["output"]) == [row["output"] for row in samples]
    assert sorted({row["step"] for row in samples}) == [0, 6, 12]


def test_trackio_gets_the_same_figures(tmp_path: Path) -> None:
    """trackio keeps a local database (TRACKIO_DIR, read when trackio is imported: a fresh process)."""
    pytest.importorskip("trackio")
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio")}
    recipe = tracked_recipe(tmp_path, ["trackio"], max_steps=6, eval_steps=3, sample_every=3)
    train = subprocess.run(
        [sys.executable, "-m", "tunekit", "sft", str(recipe)], capture_output=True, text=True, env=env, timeout=600
    )
    assert train.returncode == 0, train.stderr
    expected = figures(tmp_path / "run")
    exe = str(Path(sys.executable).parent / "trackio")
    base = ["--project", "tunekit-tests", "--run", "tiny-tracked", "--json"]

    def read(*args: str) -> dict:
        answer = subprocess.run([exe, "get", *args, *base], capture_output=True, text=True, env=env, timeout=120)
        assert answer.returncode == 0, answer.stderr
        return json.loads(answer.stdout)

    run = read("run")
    assert run["config"]["model.name_or_path"] == "tiny:llama" and "environment.torch.version" in run["config"]
    # every figure at every step in one call: steps 0..6 (`--step 0` reads as no step in trackio 0.43's CLI)
    logged = read("snapshot", "--around", "3", "--window", "3")["metrics"]
    got = {key: {v["step"]: v["value"] for v in values} for key, values in logged.items()}
    same(expected, got)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert got["summary/eval_loss_after"] == {6: pytest.approx(summary["eval_loss_after"])}


def test_ppo_reaches_the_trackers_through_the_same_log(cli, tmp_path: Path) -> None:
    """PPO's loop is tunekit's own, outside the Trainer: its figures and samples go the same way."""
    recipe = write_recipe(
        tmp_path / "ppo.yaml",
        method="ppo",
        model={"name_or_path": "tiny:llama"},
        data={"train": "builtin:reversal", "eval_fraction": 0.05},
        training={
            "learning_rate": 1e-3,
            "max_steps": 4,
            "batch_size": 4,
            "logging_steps": 2,
            "sample_every": 2,
            "sample_max_new_tokens": 6,
            "report_to": "tensorboard",
        },
        ppo={"max_prompt_length": 64, "reward_function": "tunekit.rl.rewards:s_words", "max_new_tokens": 6},
        output_dir=str(tmp_path / "run"),
    )
    result = cli("ppo", str(recipe))
    assert result.code == 0, result.err
    run = tmp_path / "run"
    expected = figures(run)
    assert {"reward_mean", "kl", "loss"} <= set(expected) and set(expected["kl"]) == {2, 4}
    tensorboard = tensorboard_figures(run)
    same(expected, tensorboard)
    summary = json.loads((run / "summary.json").read_text())
    assert math.isclose(tensorboard["summary/eval_reward_after"][4], summary["eval_reward_after"], rel_tol=1e-6)
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert sorted({row["step"] for row in samples}) == [0, 2, 4]
    assert all(set(row) == {"step", "prompt", "output", "reference", "reward"} for row in samples)
    assert "samples (greedy, 3 prompts):" in result.out


def test_a_missing_tracker_package_exits_2_naming_the_extra(cli, tmp_path: Path, monkeypatch) -> None:
    """Before anything is written, in `tunekit validate` too (the package is hidden from importlib)."""
    monkeypatch.setitem(sys.modules, "trackio", None)
    recipe = tracked_recipe(tmp_path, ["tensorboard", "trackio"])
    for command in ("validate", "sft"):
        result = cli(command, str(recipe))
        assert result.code == 2
        assert result.err.strip() == (
            'error: training.report_to: trackio needs the trackio package: pip install "tunekit[trackio]"'
        )
    assert not (tmp_path / "run").exists()


def test_report_to_takes_a_list_and_the_old_single_names() -> None:
    from tunekit.config import load_recipe
    from tunekit.errors import UserError

    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    assert load_recipe(quickstart).training.report_to == []
    assert load_recipe(quickstart, ["training.report_to=none"]).training.report_to == []
    assert load_recipe(quickstart, ["training.report_to=tensorboard"]).training.report_to == ["tensorboard"]
    assert load_recipe(quickstart, ["training.report_to=[wandb,mlflow]"]).training.report_to == ["wandb", "mlflow"]
    with pytest.raises(UserError, match="training.report_to.*'comet' is not one of"):
        load_recipe(quickstart, ["training.report_to=[comet]"])
    with pytest.raises(UserError, match="name each tracker once"):
        load_recipe(quickstart, ["training.report_to=[wandb,wandb]"])
