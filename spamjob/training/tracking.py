"""Experiment tracking (`--report-to`) through accelerate's own tracker API: `log_with` on the
Accelerator, `init_trackers` with the run's options as hyperparameters, `accelerator.log` at every
evaluation (the records history.jsonl holds, at their step) and once with the final figures, and
for MLflow the classifier folder as an artifact. accelerate logs on the main process only.

TensorBoard writes event files under `--tracking-dir` (default: OUT/tracking); MLflow logs to
$MLFLOW_TRACKING_URI (a server, or any store MLflow takes), else to a SQLite store in
`--tracking-dir/mlflow.db` with the artifacts beside it (MLflow 3 refuses new file stores);
Weights & Biases to its own settings ($WANDB_MODE=offline keeps it on disk). Each is an optional extra, checked before
any work (`check`).
"""

from __future__ import annotations

import os
from pathlib import Path

from spamjob import extras

TRACKERS = ("tensorboard", "mlflow", "wandb")  # --report-to's names, and their extras'
PROJECT = "spamjob"  # TensorBoard's run folder, MLflow's experiment, W&B's project


def chosen(report_to: str) -> list[str]:
    """The trackers --report-to names: one, `all` (every one installed) or `none`."""
    if report_to == "none":
        return []
    if report_to == "all":
        return [t for t in TRACKERS if extras.is_available(t)]
    return [report_to]


def check(report_to: str) -> None:
    """A named tracker that is not installed: one line, before any work."""
    if report_to not in ("all", "none"):
        extras.require(report_to, f"--report-to {report_to}")


def tracking_dir(cfg) -> Path:
    return Path(cfg.tracking_dir) if cfg.tracking_dir else Path(cfg.out) / "tracking"


def accelerator_options(cfg) -> dict:
    """What the Accelerator needs to log where --report-to says."""
    from accelerate.utils import ProjectConfiguration

    names = chosen(cfg.report_to)
    if not names:
        return {}
    folder = tracking_dir(cfg)
    if "mlflow" in names and not os.environ.get("MLFLOW_TRACKING_URI"):
        folder.mkdir(parents=True, exist_ok=True)  # MLflow 3's local store: a SQLite file, artifacts beside it
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
    return {"log_with": names, "project_config": ProjectConfiguration(project_dir=str(folder), logging_dir=str(folder))}


def start(accelerator, cfg) -> None:
    """init_trackers with the run's options as hyperparameters (scalars and text only)."""
    if not chosen(cfg.report_to):
        return
    params = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in cfg.to_dict().items()}
    name = Path(cfg.out).name
    local = os.environ.get("MLFLOW_TRACKING_URI", "").startswith(("sqlite:", "file:"))  # a store on this disk
    artifacts = {"logging_dir": (tracking_dir(cfg) / "mlartifacts").resolve().as_uri()} if local else {}
    names = {"mlflow": {"run_name": name, **artifacts}, "wandb": {"name": name}}
    accelerator.init_trackers(PROJECT, config=params, init_kwargs=names)


def log_record(accelerator, record: dict) -> None:
    """One history.jsonl record (an evaluation, an epoch's accuracies) at its step."""
    keys = {
        "train_loss": "train/loss",
        "val_loss": "validation/loss",
        "train_acc": "train/accuracy",
        "val_acc": "validation/accuracy",
    }
    values = {name: record[k] for k, name in keys.items() if k in record}
    if accelerator.trackers and values:
        accelerator.log({**values, "examples_seen": record["examples_seen"]}, step=record["step"])


def log_final(accelerator, metrics: dict, step: int) -> None:
    """The final figures: each split's accuracy and loss, the operating point, calibration, speed."""
    if not accelerator.trackers:
        return
    op, cal = metrics["operating_point"], metrics["calibration"]
    values = {
        f"final/{split}/{k}": metrics[split][k]
        for split in ("train", "validation", "test")
        for k in ("accuracy", "loss")
    }
    values.update({f"operating_point/{k}": op["test"][k] for k in ("precision", "recall", "accuracy")})
    values.update({"operating_point/threshold": op["threshold"], "calibration/temperature": cal["temperature"]})
    values.update({f"calibration/validation_{k}": cal["validation"][k] for k in ("ece_before", "ece_after")})
    values["train_examples_per_s"] = metrics["train_examples_per_s"] or 0.0
    accelerator.log({k: float(v) for k, v in values.items() if v is not None}, step=step)


def log_artifact(accelerator, out: Path) -> None:
    """MLflow: the classifier folder (its checkpoints left out) as the run's artifact `classifier`."""
    if "mlflow" not in [t.name for t in accelerator.trackers]:
        return
    import mlflow

    for path in sorted(Path(out).iterdir()):
        if path.name in ("checkpoints", "tracking"):
            continue
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=f"classifier/{path.name}")
        else:
            mlflow.log_artifact(str(path), artifact_path="classifier")
