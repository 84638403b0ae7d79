"""The reference's training plots: loss and accuracy against examples seen, with an epoch axis."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from spamjob.console import say
from spamjob.errors import SpamjobError
from spamjob.fsutil import atomic_path
from spamjob.threads import count_as_own

NO_MATPLOTLIB = 3  # the plotting child's exit status when matplotlib cannot be imported


def plot_values(
    path: str | os.PathLike,
    examples: list[int],
    series: dict[str, list[float]],
    epochs: int,
    examples_per_epoch: int,
    ylabel: str,
) -> Path:
    """One PNG: each series against examples seen (bottom axis) and epochs (top axis)."""
    from matplotlib.figure import Figure  # not pyplot: no GUI state, files only, a quicker import

    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    styles = ["-", "-."]
    for (label, values), style in zip(series.items(), styles * 4):
        ax.plot(examples, values, style, label=label)
    ax.set_xlabel("Examples seen")
    ax.set_ylabel(ylabel)
    ax.legend()
    if examples_per_epoch > 0:
        top = ax.secondary_xaxis("top", functions=(lambda x: x / examples_per_epoch, lambda e: e * examples_per_epoch))
        top.set_xlabel("Epochs")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def training_plots(run_dir: str | os.PathLike, history: list[dict], epochs: int, examples_per_epoch: int) -> list[Path]:
    """loss.png (every evaluation) and accuracy.png (every epoch) from history records."""
    run_dir = Path(run_dir)
    evals = [h for h in history if h["kind"] == "eval"]
    ends = [h for h in history if h["kind"] == "epoch"]
    out = []
    if evals:
        out.append(
            plot_values(
                run_dir / "loss.png",
                [h["examples_seen"] for h in evals],
                {"Training loss": [h["train_loss"] for h in evals], "Validation loss": [h["val_loss"] for h in evals]},
                epochs,
                examples_per_epoch,
                "Loss",
            )
        )
    if ends:
        out.append(
            plot_values(
                run_dir / "accuracy.png",
                [h["examples_seen"] for h in ends],
                {
                    "Training accuracy": [h["train_acc"] for h in ends],
                    "Validation accuracy": [h["val_acc"] for h in ends],
                },
                epochs,
                examples_per_epoch,
                "Accuracy",
            )
        )
    return out


def reliability_plot(run_dir: str | os.PathLike, calibration: dict) -> Path:
    """reliability.png: validation's reliability before and after the temperature (spamjob.calibration)."""
    from matplotlib.figure import Figure

    from spamjob.scoring.report_plot import reliability_panel

    fig = Figure(figsize=(4.5, 4))
    val = calibration["validation"]
    t = calibration["temperature"]
    reliability_panel(
        fig.subplots(), {"validation, raw": val["reliability_before"], f"T = {t:.3g}": val["reliability_after"]}
    )
    fig.tight_layout()
    path = Path(run_dir) / "reliability.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


@contextlib.contextmanager
def plot_process(enabled: bool, started: PlotProcess | None = None) -> Iterator[PlotProcess | None]:
    """A PlotProcess for the block (None where `enabled` is false, e.g. not the main process),
    stopped if the block fails before it was waited for. `started`: one begun earlier (see
    early_plot_process), used if enabled, stopped if not."""
    if started is not None and not enabled:
        started.cancel()
    proc = (started or PlotProcess()) if enabled else None
    try:
        yield proc
    finally:
        if proc is not None:
            proc.cancel()  # nothing to stop once wait() returned


@contextlib.contextmanager
def early_plot_process() -> Iterator[PlotProcess | None]:
    """A PlotProcess started before the job imports torch, on the process that will likely be the
    main one (RANK unset or 0): matplotlib's import then overlaps the parent's imports (single-
    threaded) rather than training (every core), ~0.4 s of a 4-layer CPU fine-tune. A wrong
    guess costs one import: train.main stops it where it is not the main process, starts its own
    where it is."""
    with plot_process(os.environ.get("RANK", "0") == "0") as proc:
        yield proc


class PlotProcess:
    """`training_plots` in a child process started early in a run: matplotlib's import
    (~0.5 s) runs on another core while the job starts up (`spamjob train`) or trains, and the
    rendering while the artifact is written, instead of ~0.7 s at the end of the job."""

    def __init__(self) -> None:
        self._err = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "spamjob.training.plots"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._err,
        )
        count_as_own(self._proc.pid)  # its import is not load that should lower training's threads

    def render(
        self, run_dir: str | os.PathLike, history: list[dict], epochs: int, examples_per_epoch: int, calibration=None
    ) -> None:
        """Hand over the finished history (and the calibration's figures); the child writes loss.png,
        accuracy.png (and reliability.png)."""
        request = {
            "run_dir": str(run_dir),
            "history": history,
            "epochs": epochs,
            "examples_per_epoch": examples_per_epoch,
            "calibration": calibration,
        }
        try:
            self._proc.stdin.write(json.dumps(request).encode())
            self._proc.stdin.close()
        except BrokenPipeError:  # the child is gone; wait() says why
            pass

    def wait(self) -> None:
        """Block until the plots are written; a failure in the child is one SpamjobError line, a
        missing matplotlib a warning (the plots are optional: history.jsonl holds their figures)."""
        code = self._proc.wait()
        self._err.seek(0)
        lines = self._err.read().decode(errors="replace").strip().splitlines()
        self._err.close()
        last = lines[-1] if lines else f"exit status {code}"
        if code == NO_MATPLOTLIB:
            say(f"warning: no loss.png / accuracy.png: {last}; history.jsonl holds the same figures")
        elif code:
            raise SpamjobError(f"writing the training plots failed: {last}")

    def cancel(self) -> None:
        """Stop the child if it still runs (the job failed before the plots were due)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._err.close()


def _child() -> None:
    try:  # the slow part, done while the parent works
        import matplotlib.backends.backend_agg  # noqa: F401  (what savefig draws PNGs with)
        import matplotlib.figure  # noqa: F401
    except ImportError as e:
        print(f"matplotlib cannot be imported ({e})", file=sys.stderr)
        sys.exit(NO_MATPLOTLIB)

    data = sys.stdin.buffer.read()
    if not data:  # the parent closed stdin without a request: nothing to draw
        return
    r = json.loads(data)
    training_plots(r["run_dir"], r["history"], r["epochs"], r["examples_per_epoch"])
    if r.get("calibration"):
        reliability_plot(r["run_dir"], r["calibration"])


if __name__ == "__main__":
    _child()
