"""Drift: how the rows a job scored differ from a reference, every run.

A profile is what a set of scored rows looks like, from their `Counts` (so it adds up over work
units and processes): the spam-probability histogram (fine, logit-spaced bins), the token-count
histogram (half-octaves), the predicted-spam rate, and the truncated, empty and error shares.
Every report carries its own (`report.json` "profile"). The reference is the classifier's
`profile.json`, written by training from its held-out test split reweighted to the natural class
balance (`write_reference`: the recipe's splits are balanced 50/50, real traffic is not), or an
earlier output's report (`--drift-reference OUT`).

The comparison gives the population stability index (PSI = sum (a - e) ln(a / e)) of the scores,
over the deciles of the reference's scores, and of the token counts, over their bins; and the
change in each rate. Rules of thumb: PSI < 0.1 is no shift, 0.1-0.25 a moderate one, > 0.25 a
shift worth a look (`--fail-on-drift`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spamjob import stores
from spamjob.errors import SpamjobError
from spamjob.fsutil import write_json

PROFILE = "profile.json"  # in a classifier's folder
FORMAT = "spamjob-profile/1"
QUANTILES = 10  # the score PSI's bins: deciles of the reference
EPSILON = 1e-4  # an empty bin's share, so that PSI stays finite
DRIFT_EXIT = 3  # `spamjob score --fail-on-drift`'s exit status (docs/scoring.md)
REFERENCE_ROWS = 20_000  # at most this many held-out rows of each class are scored for the reference


def profile(counts, source: str) -> dict:
    """What the scored rows of `counts` (a spamjob.scoring.report.Counts) look like."""
    scored, read = max(counts.rows_scored, 1), max(counts.rows_read, 1)
    return {
        "source": source,
        "rows": counts.rows_read,
        "scores": _shares(counts.scores),
        "lengths": _shares(counts.lengths),
        "spam_rate": counts.predicted_spam / scored,
        "truncated_rate": counts.truncated / scored,
        "empty_rate": counts.flagged.get("empty text", 0) / read,
        "error_rate": sum(counts.flagged.values()) / read,
    }


def mixed(ham: dict, spam: dict, spam_share: float, source: str) -> dict:
    """The profile of traffic with `spam_share` spam, from the profiles of each class."""
    mix = {
        key: (1 - spam_share) * np.asarray(ham[key]) + spam_share * np.asarray(spam[key])
        for key in ("scores", "lengths", "spam_rate", "truncated_rate", "empty_rate", "error_rate")
    }
    return {
        "source": source,
        "rows": ham["rows"] + spam["rows"],
        **{k: v.tolist() if v.ndim else float(v) for k, v in mix.items()},
    }


def psi(expected, actual, groups: np.ndarray | None = None) -> float | None:
    """PSI of two histograms (shares; `groups`: the bin each fine bin goes into); None when either is empty."""
    e, a = np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if groups is not None:
        e, a = np.bincount(groups, e), np.bincount(groups, a)
    if e.sum() == 0 or a.sum() == 0:
        return None
    e, a = np.clip(e / e.sum(), EPSILON, None), np.clip(a / a.sum(), EPSILON, None)
    return round(float(np.sum((a - e) * np.log(a / e))), 6)


def decile_groups(reference_scores) -> np.ndarray:
    """Fine score bins -> QUANTILES groups of about equal reference mass (contiguous; fewer where
    the reference's mass is concentrated in one fine bin)."""
    shares = np.asarray(reference_scores, dtype=np.float64)
    before = np.concatenate([[0.0], np.cumsum(shares)[:-1]]) / max(shares.sum(), 1e-12)
    return np.minimum((before * QUANTILES).astype(np.int64), QUANTILES - 1)


def compare(reference: dict, now: dict) -> dict:
    """The drift of `now` (a profile) from `reference`: PSIs and the change of each rate."""

    def change(key: str) -> dict:
        return {"reference": reference[key], "now": now[key], "change": now[key] - reference[key]}

    lengths_known = sum(reference["lengths"]) > 0 and sum(now["lengths"]) > 0
    return {
        "reference": reference["source"],
        "reference_rows": reference["rows"],
        "score_psi": psi(reference["scores"], now["scores"], decile_groups(reference["scores"])),
        "token_length_psi": psi(reference["lengths"], now["lengths"]) if lengths_known else None,
        **{key: change(key) for key in ("spam_rate", "truncated_rate", "empty_rate", "error_rate")},
        "reference_scores": [round(x, 6) for x in reference["scores"]],  # report.png's drift panel
    }


def reference(drift_reference: str | None, classifier_folder: Path) -> dict | None:
    """The reference profile: an earlier output's (its cumulative report where it has one), else
    the classifier's profile.json; None when the classifier has none (trained before profiles)."""
    if drift_reference is None:
        path = Path(classifier_folder) / PROFILE
        return json.loads(path.read_text())["profile"] if path.is_file() else None
    for name in ("cumulative.json", "report.json"):
        uri = stores.join(drift_reference, name) if stores.is_uri(drift_reference) else Path(drift_reference, name)
        data = stores.read_bytes(uri) if stores.is_uri(drift_reference) else _read(uri)
        if data is not None:
            found = json.loads(data).get("profile")
            if found is None:
                raise SpamjobError(
                    f"--drift-reference {drift_reference}: its report holds no profile (written by an "
                    "older spamjob); score it again, or leave --drift-reference out"
                )
            return {**found, "source": f"{drift_reference} ({name})"}
    raise SpamjobError(f"--drift-reference {drift_reference} is not a finished scoring output (no report.json)")


def drifted(report: dict, fail_on: float | None) -> str | None:
    """Why a run exits DRIFT_EXIT: its score PSI above --fail-on-drift's; None when it does not."""
    psi_now = (report.get("drift") or {}).get("score_psi")
    if fail_on is None or psi_now is None or psi_now <= fail_on:
        return None
    return (
        f"drift: the PSI of the scores is {psi_now:.3f}, above --fail-on-drift {fail_on:g}, against "
        f"{report['drift']['reference']}; the output is committed (exit status {DRIFT_EXIT})"
    )


def write_reference(folder: Path, ham, spam, spam_share: float, share_from: str) -> dict:
    """The classifier's profile.json: the held-out rows' profile at `spam_share` spam."""
    source = f"the held-out test split, reweighted to {spam_share * 100:.1f}% spam ({share_from})"
    by_class = [profile(c, name) for c, name in ((ham, "ham"), (spam, "spam"))]
    record = {
        "format": FORMAT,
        "spam_share": spam_share,
        "share_from": share_from,
        "by_class": by_class,
        "profile": mixed(*by_class, spam_share, source),
    }
    write_json(Path(folder) / PROFILE, record)
    return record


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _shares(counts: list) -> list[float]:
    total = sum(counts)
    return [c / total for c in counts] if total else [0.0] * len(counts)
