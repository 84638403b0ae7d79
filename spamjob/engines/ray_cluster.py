"""The Ray cluster behind `spamjob score --engine ray`: joining it in one line when it refuses, and
checking before any work that every node can do its part: see a local `--out` (else each node's
parts would land on its own disk) and reach every store URI of the job.

Store endpoints and regions (never secrets) go to every worker through Ray's runtime_env;
credentials must come from each node's own environment, profile or instance role.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import ray

from spamjob import stores
from spamjob.errors import SpamjobError, first_line
from spamjob.threads import usable_cpus

WHERE_NODES_WRITE = "a folder every node mounts at the same path, or a store URI (s3://, gs://, abfs://)"


def join(address: str | None) -> None:
    """Join `address` ($RAY_ADDRESS), else start a local cluster on the CPUs this process may use;
    the store endpoint settings of this process go to every worker. A refused join is one line
    with Ray's own reason (Ray logs it to the terminal, not into its exception)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline clusters: no usage report
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = {} if address else {"num_cpus": usable_cpus(), "include_dashboard": False}
    env = {k: os.environ[k] for k in stores.ENDPOINT_VARIABLES if os.environ.get(k)}
    with _stderr_kept() as said:
        try:
            ray.init(
                address=address,
                log_to_driver=False,
                configure_logging=False,
                runtime_env={"env_vars": env} if env else None,
                **kwargs,
            )
            return
        except (ConnectionError, ValueError, RuntimeError) as e:
            failure, why = first_line(e), _cause(e) or _ray_reason(said())
    raise SpamjobError(f"cannot join the Ray cluster {address}: {failure}{f' ({why})' if why else ''}")


def _cause(e: BaseException) -> str:
    """What the deepest exception behind `e` says last (e.g. Ray's AuthenticationError, with its fix)."""
    deepest = e
    while deepest.__cause__ is not None:
        deepest = deepest.__cause__
    return "" if deepest is e else last_line(deepest).removeprefix("ray.exceptions.")


@contextlib.contextmanager
def _stderr_kept() -> Iterator:
    """What Ray's C++ core writes to file descriptor 2 in the block, kept from the terminal and
    handed back (a callable: the text)."""
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as kept:
        os.dup2(kept.fileno(), 2)
        try:
            yield lambda: (kept.seek(0), kept.read().decode(errors="replace"))[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _ray_reason(logged: str) -> str:
    """The last reason Ray's core logged (`... gcs_client.cc:210: <reason>`), e.g. a missing token."""
    reasons = re.findall(r"^\[[^\]]*\] \S+:\d+: (.+)$", logged, flags=re.M)
    return reasons[-1].strip() if reasons else ""


def check_nodes(out: str, uris: list[str]) -> None:
    """Before any work: every alive node sees a local `out` (a probe file written here) and reaches
    each URI of the job (read and list); else one line naming the node and the fix."""
    probe = None if stores.is_uri(out) else _probe_file(Path(out))
    try:
        views = ray.get([_on(node).remote(str(probe) if probe else None, uris) for node in _alive_nodes()])
    except ray.exceptions.RayError as e:
        raise SpamjobError(
            f"a Ray node cannot run spamjob ({last_line(e)}); install spamjob[ray] on every node"
        ) from None
    finally:
        if probe is not None:
            probe.unlink(missing_ok=True)
    blind = [v["node"] for v in views if not v["sees_out"]]
    if blind:
        raise SpamjobError(
            f"--out {out} is not shared: Ray node(s) {', '.join(blind)} do not see it, and their parts would land on "
            f"their own disks; give --out {WHERE_NODES_WRITE}"
        )
    for view in views:
        for uri, why in view["stores"].items():
            passed = ", ".join(k for k in stores.ENDPOINT_VARIABLES if os.environ.get(k)) or "none set here"
            raise SpamjobError(
                f"Ray node {view['node']} cannot reach {uri} ({why}); every node needs the store's endpoint and "
                f"credentials: spamjob passes the endpoint settings ({passed}) to Ray's workers, never secrets, so "
                "give each node its credentials (environment, profile or instance role)"
            )


def _probe_file(out: Path) -> Path:
    """A file in `out`'s nearest existing folder, that every node must see."""
    folder = next(p for p in (out, *out.parents) if p.is_dir())
    probe = folder / f".spamjob-probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
    except OSError as e:
        raise SpamjobError(f"--out {out}: cannot write in {folder} ({e.strerror or e})") from None
    return probe


def _alive_nodes() -> list[str]:
    return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]


def _on(node: str):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return _node_view.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))


@ray.remote(num_cpus=0, max_retries=0)
def _node_view(probe: str | None, uris: list[str]) -> dict:
    """On one node: its address, whether it sees the probe, and what each URI answers it."""
    answers = {}
    for uri in uris:
        try:
            stores.info(uri)
        except SpamjobError as e:
            answers[uri] = str(e).removeprefix(f"{uri}: ")
    node = f"{ray.util.get_node_ip_address()} ({ray.get_runtime_context().get_node_id()[:8]})"
    return {"node": node, "sees_out": probe is None or os.path.exists(probe), "stores": answers}


def last_line(e: BaseException) -> str:
    """What a Ray error says last (its own traceback text comes first), or its type."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__
