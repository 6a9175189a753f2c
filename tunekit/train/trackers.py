"""Experiment trackers: the run's figures, samples and summary to TensorBoard, W&B, MLflow and trackio.

    >>> flatten({"model": {"name_or_path": "tiny:llama"}, "training": {"report_to": ["wandb"]}})
    {'model.name_or_path': 'tiny:llama', 'training.report_to': ['wandb']}
    >>> numbers({"loss": 1.5, "step": 3, "method": "sft", "replicas_identical": True, "eval_loss": float("nan")})
    {'loss': 1.5, 'step': 3.0}

One `RunLog` per run is the only writer: every record it is given goes to metrics.jsonl and, under the
same names, to each tracker of `training.report_to`; samples go to samples.jsonl and to the trackers as a
table; summary.json's figures go to every tracker at the final step as `summary/<name>` (the trainer
logs a few of the same names with other meanings, e.g. train_tokens_per_second over the wall time). Every
method reaches it the same way, the Trainer-based ones through tunekit.train.callbacks.MetricsLogger and
PPO's own loop directly, so a figure on one tracker is on all of them. Each tracker is driven by its own client (wandb,
mlflow's MlflowClient, trackio, torch's SummaryWriter) rather than transformers' integration
callbacks: those rename figures per tracker, record TrainingArguments instead of the recipe, and do not
exist for PPO. Only rank 0 starts trackers. Where each writes: TensorBoard into output_dir/tensorboard;
W&B into output_dir/wandb (WANDB_MODE=offline keeps it there); MLflow to MLFLOW_TRACKING_URI; trackio
to its local database (TRACKIO_DIR).
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path
from typing import Any, Protocol

from tunekit.errors import UserError

# tracker -> the module it needs; the pip extra has the tracker's name (`pip install "tunekit[wandb]"`)
MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}
SAMPLE_COLUMNS = ("step", "prompt", "output", "reference")


def check_installed(report_to: list[str]) -> None:
    """Each tracker's package must import; checked before anything is written (and by `tunekit validate`)."""
    for name in report_to:
        if importlib.util.find_spec(MODULES[name]) is None:
            raise UserError(
                f'training.report_to: {name} needs the {MODULES[name]} package: pip install "tunekit[{name}]"'
            )


class Tracker(Protocol):
    def log(self, figures: dict[str, float], step: int) -> None: ...

    def samples(self, rows: list[dict[str, Any]], step: int) -> None: ...

    def summary(self, summary: dict[str, Any], step: int) -> None: ...

    def finish(self, failed: bool) -> None: ...


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as `section.key -> value` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def numbers(record: dict[str, Any]) -> dict[str, float]:
    """The finite numeric figures of a record (booleans, text and NaN are not figures)."""
    return {
        key: float(value)
        for key, value in record.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def summary_figures(summary: dict[str, Any]) -> dict[str, float]:
    return {f"summary/{key}": value for key, value in numbers(summary).items()}


class TensorBoard:
    """torch's SummaryWriter: scalars per figure, the recipe and samples as text."""

    def __init__(self, out: Path, name: str, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))
        self.writer.add_text("config", _markdown_table(["key", "value"], [[k, v] for k, v in config.items()]))

    def log(self, figures: dict[str, float], step: int) -> None:
        for key, value in figures.items():
            self.writer.add_scalar(key, value, step)

    def samples(self, rows: list[dict[str, Any]], step: int) -> None:
        table = [[row.get(column, "") for column in SAMPLE_COLUMNS] for row in rows]
        self.writer.add_text("samples", _markdown_table(list(SAMPLE_COLUMNS), table), step)

    def summary(self, summary: dict[str, Any], step: int) -> None:
        self.log(summary_figures(summary), step)

    def finish(self, failed: bool) -> None:
        self.writer.close()


class WandB:
    """A W&B run in output_dir/wandb; WANDB_MODE (online, offline) and the W&B login decide where it goes."""

    def __init__(self, out: Path, name: str, project: str, config: dict[str, Any]) -> None:
        import wandb

        try:
            self.run = wandb.init(
                project=project,
                name=name,
                dir=str(out),
                config=config,
                reinit="create_new",
                settings=wandb.Settings(console="off", silent=True),
            )
        except wandb.errors.UsageError as err:  # not logged in, no key: the user's setup, not our bug
            raise UserError(f"training.report_to: wandb could not start a run: {err}") from None

    def log(self, figures: dict[str, float], step: int) -> None:
        self.run.log(figures, step=step)

    def samples(self, rows: list[dict[str, Any]], step: int) -> None:
        import wandb

        data = [[row.get(column) for column in SAMPLE_COLUMNS] for row in rows]
        self.run.log({"samples": wandb.Table(columns=list(SAMPLE_COLUMNS), data=data)}, step=step)

    def summary(self, summary: dict[str, Any], step: int) -> None:
        self.run.log(summary_figures(summary), step=step)
        # the run's descriptions (method, adapter, model...) in W&B's own summary: they are no figures to plot
        self.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (str, bool))})

    def finish(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class MLflow:
    """An MLflow run in experiment `project`, on MLFLOW_TRACKING_URI (mlflow's default without it)."""

    def __init__(self, name: str, project: str, config: dict[str, Any]) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = client = MlflowClient()
        experiment = client.get_experiment_by_name(project)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(project)
        self.run_id = client.create_run(experiment_id, run_name=name).info.run_id
        params = [Param(key, _text(value)[:6000]) for key, value in config.items()]  # mlflow's value limit
        for start in range(0, len(params), 100):  # log_batch takes at most 100 params at a time
            client.log_batch(self.run_id, params=params[start : start + 100])

    def log(self, figures: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in figures.items()]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def samples(self, rows: list[dict[str, Any]], step: int) -> None:
        columns = {column: [row.get(column) for row in rows] for column in SAMPLE_COLUMNS}
        self.client.log_table(self.run_id, data=columns, artifact_file="samples.json")  # appends to the table

    def summary(self, summary: dict[str, Any], step: int) -> None:
        self.log(summary_figures(summary), step)
        self.client.log_dict(self.run_id, summary, "summary.json")
        for key in ("method", "adapter", "model"):
            if key in summary:
                self.client.set_tag(self.run_id, f"tunekit.{key}", str(summary[key]))

    def finish(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


class Trackio:
    """A trackio run in its local database (TRACKIO_DIR), or where trackio's own settings send it."""

    def __init__(self, name: str, project: str, config: dict[str, Any]) -> None:
        import trackio

        self.run = trackio.init(
            project=project, name=name, config=config, embed=False, auto_log_gpu=False, auto_log_cpu=False
        )

    def log(self, figures: dict[str, float], step: int) -> None:
        self.run.log(figures, step=step)

    def samples(self, rows: list[dict[str, Any]], step: int) -> None:
        import trackio

        data = [[row.get(column) for column in SAMPLE_COLUMNS] for row in rows]
        self.run.log({"samples": trackio.Table(columns=list(SAMPLE_COLUMNS), data=data)}, step=step)

    def summary(self, summary: dict[str, Any], step: int) -> None:
        self.log(summary_figures(summary), step)

    def finish(self, failed: bool) -> None:
        self.run.finish()


def start(report_to: list[str], out: Path, name: str, project: str, config: dict[str, Any]) -> list[Tracker]:
    """Start each tracker of `report_to` (rank 0 only: the caller decides)."""
    made: list[Tracker] = []
    for tracker in report_to:
        if tracker == "tensorboard":
            made.append(TensorBoard(out, name, config))
        elif tracker == "wandb":
            made.append(WandB(out, name, project, config))
        elif tracker == "mlflow":
            made.append(MLflow(name, project, config))
        else:
            made.append(Trackio(name, project, config))
    return made


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


class RunLog:
    """The run's one writer of figures: metrics.jsonl, samples.jsonl and every tracker (rank 0 writes)."""

    def __init__(self, out: Path, trackers: list[Tracker] | None = None, main: bool = True) -> None:
        self.out, self.trackers, self.main = out, list(trackers or []), main

    @classmethod
    def open(cls, recipe: Any, out: Path) -> RunLog:
        """Start the recipe's trackers with the run's name and configuration: the recipe flattened, the
        tunekit version and the environment (tunekit.doctor.environment). Other ranks log nothing."""
        from tunekit.train.launch import is_main_process

        if not is_main_process():
            return cls(out, main=False)
        t = recipe.training
        if not t.report_to:
            return cls(out)
        from tunekit import __version__
        from tunekit.doctor import environment

        config = {
            "tunekit_version": __version__,
            **flatten(recipe.model_dump(mode="json")),
            **flatten({"environment": environment()}),
        }
        return cls(out, start(t.report_to, out, t.run_name or out.resolve().name, t.project, config))

    def metrics(self, record: dict[str, Any]) -> None:
        """One record of metrics.jsonl (it has `step`), and its figures to every tracker at that step."""
        from tunekit.train.rundir import append_metrics

        if not self.main:
            return
        append_metrics(self.out, record)
        figures = numbers({key: value for key, value in record.items() if key != "step"})
        for tracker in self.trackers:
            tracker.log(figures, int(record["step"]))

    def samples(self, rows: list[dict[str, Any]]) -> None:
        """Rows of one step (`step`, `prompt`, `output`, `reference`...) to samples.jsonl and the trackers."""
        if not self.main or not rows:
            return
        with (self.out / "samples.jsonl").open("a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        for tracker in self.trackers:
            tracker.samples(rows, int(rows[0]["step"]))

    def summary(self, summary: dict[str, Any]) -> None:
        """summary.json's figures, at the final step."""
        for tracker in self.trackers:
            tracker.summary(summary, int(summary.get("steps", 0)))

    def finish(self, failed: bool = False) -> None:
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.finish(failed)
