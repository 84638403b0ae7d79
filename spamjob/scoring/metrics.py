"""`metrics.prom`: a finished scoring run's figures in Prometheus' text exposition format, as
node_exporter's textfile collector reads a file and a Pushgateway takes a body (a scheduler
scrapes the last run; an alert on `spamjob_score_last_success_timestamp_seconds` catches runs that
stopped succeeding). Gauges of the run, labelled with the output they wrote."""

from __future__ import annotations

import time
from pathlib import Path

from spamjob.fsutil import atomic_path

PREFIX = "spamjob_score_"


def exposition(report: dict, output: str, now: float | None = None) -> str:
    """The run's metrics as Prometheus text (`report`: report.json's dictionary)."""
    rows = report["rows"]
    label = f'output="{_escape(output)}"'
    gauges = [
        ("rows", "Rows of this run, by what became of them.", [(f'{label},kind="{k}"', v) for k, v in rows.items()]),
        ("errors", "Rows written with `error` set (null, empty, invalid text).", [(label, rows["flagged"])]),
        ("rejects", "Input lines that could not be parsed (rejects/).", [(label, rows["rejected"])]),
        ("rows_per_second", "Rows read per second of the run's wall time.", [(label, report.get("rows_per_s"))]),
        ("duration_seconds", "Wall time of the run.", [(label, report.get("wall_time_s"))]),
        ("spam_rate", "Share of scored rows predicted spam.", [(label, report.get("spam_rate"))]),
        ("last_success_timestamp_seconds", "When the run finished (Unix time).", [(label, now or time.time())]),
    ]
    if (d := report.get("drift")) is not None:
        of = (("scores", "score_psi"), ("token_lengths", "token_length_psi"))
        psis = [(f'{label},of="{name}"', d[key]) for name, key in of]
        gauges.append(("drift_psi", "Population stability index against the drift reference.", psis))
    if (inc := report.get("incremental")) is not None:
        gauges.append(("run", "The incremental run's number.", [(label, inc["run"])]))
    lines = []
    for name, doc, samples in gauges:
        lines += [f"# HELP {PREFIX}{name} {doc}", f"# TYPE {PREFIX}{name} gauge"]
        lines += [f"{PREFIX}{name}{{{labels}}} {_value(v)}" for labels, v in samples]
    return "\n".join(lines) + "\n"


def write(path: str | Path, report: dict, output: str) -> Path:
    """The metrics into `path`, atomically (a collector never reads half a file)."""
    with atomic_path(path) as tmp:
        tmp.write_text(exposition(report, output))
    return Path(path)


def _value(v) -> str:
    return "NaN" if v is None else repr(float(v))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
