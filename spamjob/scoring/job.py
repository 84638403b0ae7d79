"""`spamjob score`: stream inputs through a trained classifier on every process, commit parts, report.

The job in order: `setup` (spamjob.scoring.setup: inputs, schema, scorer, plan), this process's
units through the stages (spamjob.scoring.loop, units dealt by spamjob.scoring.units), then
`finish`: the report summed from every unit's sidecar, the manifest and `_SUCCESS`
(spamjob.scoring.output holds the output folder's protocol). Parts go to OUT/predictions/, one
Parquet (or CSV) dataset (`pandas.read_parquet(OUT / "predictions")`); unparsable CSV lines to
OUT/rejects/. A rerun after a kill skips every committed unit, so its report is the same as an
uninterrupted run's.
"""

from __future__ import annotations

import resource
import time

import torch

from spamjob import __version__
from spamjob.errors import SpamjobError
from spamjob.hardware import cpu
from spamjob.operating import threshold_record
from spamjob.scoring import incremental, metrics
from spamjob.scoring import report as rep
from spamjob.scoring.columns import OUTPUT_COLUMNS
from spamjob.scoring.committed import committed_units, manifest, sum_counts
from spamjob.scoring.config import ScoreConfig
from spamjob.scoring.inputs import skipped_counts
from spamjob.scoring.loop import score_all
from spamjob.scoring.output.names import METRICS
from spamjob.scoring.setup import ScoreJob, setup
from spamjob.scoring.units import byte_blocks


def main(cfg: ScoreConfig) -> dict:
    """Score every input on spamjob's processes (the engine `spamjob`; spamjob.engines.run dispatches);
    returns the report ({} on processes other than the main one)."""
    wall0 = time.perf_counter()
    job = setup(cfg)
    job.in_blocks = [i for i in job.inputs if byte_blocks(job, i)]
    try:
        score_all(job)
        if job.in_blocks:  # files whose byte blocks failed their check: read whole now, by every process
            job.accelerator.wait_for_everyone()
            if fell_back := [i for i in job.in_blocks if not byte_blocks(job, i)]:
                score_all(job, fell_back)
    finally:
        job.bar.close()
        job.scorer.close()
    return finish(job, wall0)


def finish(job: ScoreJob, wall0: float) -> dict:
    """Peak memory of every process; then, on the main process, the report, manifest and `_SUCCESS`."""
    accelerator = job.accelerator
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if accelerator.device.type == "cuda" else 0.0
    peaks = torch.tensor(
        [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, gpu_mb], device=accelerator.device
    )
    peak, peak_gpu = accelerator.reduce(peaks, "max").tolist()
    steady = accelerator.reduce(torch.tensor([job.steady.rate()], device=accelerator.device), "sum").item()
    accelerator.wait_for_everyone()
    report = None
    if accelerator.is_main_process:
        with job.out.finishing():
            report = _write_report(job, wall0, {"peak_rss_mb": peak, "peak_gpu_mb": peak_gpu or None}, steady)
        if job.cfg.metrics_file and "pending" not in report:
            metrics.write(job.cfg.metrics_file, report, job.out.location)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return report if report is not None else {}


def _write_report(job: ScoreJob, wall0: float, peaks: dict, steady: float) -> dict:
    """Check every unit committed, sum the sidecars, write the report, the manifest and `_SUCCESS`."""
    done, missing = committed_units(job)
    if missing:
        if job.cfg.shard is not None:  # other tasks are still at work: the last one writes the report
            return {
                "pending": f"shard {job.cfg.shard} done; {len(missing)} unit(s) of other shards still to come; "
                f"the last task to finish writes {job.out.child('report.md')} and _SUCCESS"
            }
        raise SpamjobError(
            f"{len(missing)} work unit(s) have no committed part (e.g. {missing[0]}); rerun the same command"
        )
    wall = time.perf_counter() - wall0
    extra = {
        "wall_time_s": round(wall, 3),
        "rows_per_s": None,
        "steady_rows_per_s": round(steady, 2) if steady else None,  # after each process's first window
        **_facts(job, len(done), peaks),
    }
    if job.run is not None:
        return incremental.finish(job, done, extra)
    total, per_input = sum_counts(done)
    extra["rows_per_s"] = round(total.rows_read / wall, 2) if wall else None
    report = rep.build(total, per_input, extra, job.reference)
    with job.out.staged() as folder:
        rep.write(folder, report)
        metrics.write(folder / METRICS, report, job.out.location)
    job.out.finish(manifest(job, done))
    return report


def _facts(job: ScoreJob, parts: int, peaks: dict) -> dict:
    """What the report says of how the job ran and what it wrote (`peaks`: per process, the largest)."""
    cfg = job.cfg
    facts = {
        "num_processes": job.accelerator.num_processes,
        "threads": job.threads,
        "model": job.plan["model"],
        "runtime": job.scorer.runtime_record,
        "mixed_precision": job.scorer.mixed_precision,
        "precision_choice": job.scorer.precision_reason,
        "quantize": cfg.quantize,
        "cpu": cpu().record(),
        "threshold": threshold_record(job.scorer.classifier.config, cfg.threshold),
        **padding_note(job.scorer.classifier),
        "skipped_files": skipped_counts(job.skipped),
        "csv_read_whole": {
            i.source.path: r["reason"] for i in job.inputs if "reason" in (r := job.out.source_record(i.source.key))
        }
        or None,
        **{k: round(v, 1) if v else None for k, v in peaks.items()},
        "output": {
            "folder": job.out.location,
            "format": cfg.format,
            "parts": parts,
            "columns": job.schema.names,
            "filled_with_nulls": _filled_with_nulls(job),
        },
        "spamjob_version": __version__,
    }
    if job.agreement is not None:
        facts["agreement_with_fp32"] = job.agreement.report(job.scorer.precision)
    return facts


def padding_note(clf) -> dict:
    """For a `last`-pooling classifier (the reference recipe): why its scoring costs several times more."""
    if clf.padding != "fixed":
        return {}
    return {
        "padding_note": f"every row is padded to max_length {clf.max_length}: this classifier reads the last "
        "padded position (`last` pooling, the reference recipe), so scoring costs several times "
        "the compute of a `last-token` classifier (about max_length / mean message length)"
    }


def _filled_with_nulls(job: ScoreJob) -> dict[str, list[str]]:
    """Per input, the output columns it does not have (null in its rows)."""
    kept = [f.name for f in job.schema if f.name not in OUTPUT_COLUMNS]
    missing = {
        i.source.path: [c for c in kept if c not in i.kept_names(job.renamed)]
        for i in job.inputs
        if i.columns is not None
    }
    return {path: cols for path, cols in missing.items() if cols}
