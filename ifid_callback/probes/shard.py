"""Split a study's jobs over the ranks of ``torchrun`` or the tasks of a SLURM job array.

A study is a list of named jobs in dependency order (a job only needs jobs listed before it).
Job ``i`` of the list belongs to shard ``i mod n``. Every shard works in the same results
folder, where each finished job leaves a marker (``<job>.done``) and a job being worked on a
claim (``<job>.claim``, refreshed every ``heartbeat`` seconds by the process that holds it):

* a shard runs its own jobs in list order; a job that is done (by any shard, in this run or an
  earlier one) is never started again;
* a job it needs that nobody has finished: if someone holds a live claim on it, the shard waits
  for it; if nobody does (its owner is busy elsewhere, or is a SLURM task still in the queue),
  the shard does it itself. So no shard ever waits for a process that is not running, and a
  shard run alone does everything it needs;
* a claim is stale (taken over) when it has not been refreshed for ``stale_after`` seconds,
  when its process is gone from this host, or when it was left by an earlier run of the same
  shard (one process per shard at a time).

Which shard ran a job does not change its result: every job is seeded by what it computes,
never by the shard. After its own jobs a shard that finds every job done does the closing step
(merge and report; at most one at a time, under the claim ``finish``), so the last shard to
finish writes the report, and re-running the study's command without ``--shard`` once all
shards are done writes it too, repeating nothing.

Shards come from ``--shard i/n`` (``slurm``: this task of the SLURM array, from
``SLURM_ARRAY_TASK_ID``/``_MIN``/``_STEP``/``_COUNT``) and from ``torchrun``'s ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` (or an initialised ``torch.distributed`` process group); both
together split each task's share over its ranks. No process group is needed: ranks meet only
through the results folder, so no collective can time out while a rank trains for hours.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["Job", "JobBoard", "Shard", "config_digest", "resolve_shard", "run_jobs", "use_device"]


@dataclass(frozen=True)
class Shard:
    """This process's share of the jobs: those at positions ``i`` with ``i % count == index``.

    ``local_rank`` is torchrun's ``LOCAL_RANK`` (the device of this rank), None elsewhere.
    """

    index: int = 0
    count: int = 1
    local_rank: int | None = None

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"a shard needs 0 <= index < count, got {self.index}/{self.count}")

    def owns(self, position: int) -> bool:
        return position % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {value!r}") from None


def _parse_spec(spec: str, environ: Mapping[str, str]) -> tuple[int, int]:
    if spec.strip().lower() == "slurm":
        task, count = (
            _env_int(environ, n) for n in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")
        )
        if task is None or count is None:
            raise ValueError(
                "--shard slurm needs $SLURM_ARRAY_TASK_ID and $SLURM_ARRAY_TASK_COUNT: run it "
                "inside a job array (sbatch --array=0-7), or give --shard i/n"
            )
        first = _env_int(environ, "SLURM_ARRAY_TASK_MIN") or 0
        step = _env_int(environ, "SLURM_ARRAY_TASK_STEP") or 1
        index = (task - first) // step
        if not 0 <= index < count:
            raise ValueError(
                f"SLURM array task {task} is not one of {count} evenly spaced tasks from {first} "
                f"(step {step}); use --array=0-{count - 1}, or give --shard i/n"
            )
        return index, count
    head, sep, tail = spec.partition("/")
    try:
        index, count = int(head), int(tail)
    except ValueError:
        index, count = -1, 0
    if not sep or count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard must be 'i/n' with 0 <= i < n, or 'slurm'; got {spec!r}")
    return index, count


def resolve_shard(spec: str | None = None, environ: Mapping[str, str] | None = None) -> Shard:
    """This process's shard.

    Args:
        spec: ``"i/n"`` (shard ``i`` of ``n``, counting from 0), ``"slurm"`` (this task of the
            SLURM job array) or None (one shard).
        environ: the environment (default ``os.environ``).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) or in an initialised ``torch.distributed`` process
    group, each rank is a shard too: ``spec`` ``i/n`` with ``W`` ranks gives rank ``r`` the
    shard ``i * W + r`` of ``n * W``.
    """
    env = os.environ if environ is None else environ
    index, count = _parse_spec(spec, env) if spec is not None else (0, 1)
    rank, world = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE")
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    local = _env_int(env, "LOCAL_RANK")
    if world is not None and world > 1 and rank is not None:
        return Shard(index * world + rank, count * world, local)
    return Shard(index, count, local)


def use_device(device: str, shard: Shard) -> str:
    """The device a shard runs on: ``"cuda"`` under torchrun means ``cuda:LOCAL_RANK``.

    It is made the current CUDA device, and the name stays ``"cuda"``: the study records the
    same settings (and finds the same cached stages) on every rank.
    """
    if device == "cuda" and shard.local_rank is not None:
        import torch

        torch.cuda.set_device(shard.local_rank)
    return device


def config_digest(*parts: Any) -> str:
    """A short hash of JSON-able settings: the job markers of one configuration."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Job:
    """A named piece of work; ``needs`` names jobs that must be done before it, and ``key``
    (JSON-able) holds settings it depends on that its caller's configuration does not."""

    name: str
    run: Callable[[], Any]
    needs: tuple[str, ...] = ()
    key: Any = None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobBoard:
    """The markers of one configuration's jobs in a folder shared by every shard.

    Args:
        folder: where ``<job>.done`` and ``<job>.claim`` files go.
        shard: this process's shard (recorded in its claims).
        heartbeat: seconds between refreshes of the claims this process holds.
        stale_after: a claim not refreshed for this long is taken over.
        poll: seconds between looks at a job another process is working on.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        shard: Shard,
        *,
        heartbeat: float = 30.0,
        stale_after: float = 600.0,
        poll: float = 5.0,
    ) -> None:
        if not 0 < heartbeat < stale_after:
            raise ValueError(f"need 0 < heartbeat < stale_after, got {heartbeat}, {stale_after}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shard = shard
        self.heartbeat, self.stale_after, self.poll = heartbeat, stale_after, poll
        self._held: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._me = {"host": socket.gethostname(), "pid": os.getpid(), "shard": str(shard)}

    def _path(self, name: str, kind: str) -> Path:
        return self.folder / f"{quote(name, safe='')}.{kind}"

    def done(self, name: str) -> bool:
        return self._path(name, "done").is_file()

    def mark_done(self, name: str, info: dict[str, Any]) -> None:
        _write_atomic(self._path(name, "done"), json.dumps({**info, **self._me}, sort_keys=True))

    def _stale(self, path: Path) -> bool:
        try:
            age = time.time() - path.stat().st_mtime
            text = path.read_text()
        except FileNotFoundError:
            return True  # gone: try to take it again
        try:
            owner = json.loads(text)
        except json.JSONDecodeError:
            owner = {}  # caught while its owner writes it: only its age can tell
        if age > self.stale_after:
            return True
        if owner.get("shard") == self._me["shard"] and owner.get("pid") != self._me["pid"]:
            return True  # an earlier run of this very shard left it
        here = owner.get("host") == self._me["host"]
        return here and isinstance(owner.get("pid"), int) and not _pid_alive(owner["pid"])

    def claim(self, name: str) -> bool:
        """Take the claim on ``name``; False while another live process holds it."""
        path = self._path(name, "claim")
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._stale(path):
                    return False
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(self._me))
            with self._lock:
                self._held.add(path)
            self._start_heartbeat()
            return True
        return False

    def release(self, name: str) -> None:
        path = self._path(name, "claim")
        with self._lock:
            self._held.discard(path)
        path.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="ifid-job-claims", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with self._lock:
                held = list(self._held)
            for path in held:
                try:
                    os.utime(path)
                except FileNotFoundError:
                    pass

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            held, self._held = list(self._held), set()
        for path in held:
            path.unlink(missing_ok=True)


def _check_order(jobs: Sequence[Job]) -> dict[str, Job]:
    by_name: dict[str, Job] = {}
    for job in jobs:
        if job.name in by_name:
            raise ValueError(f"two jobs are named {job.name!r}")
        missing = [n for n in job.needs if n not in by_name]
        if missing:
            raise ValueError(f"job {job.name!r} needs {missing}, which are not listed before it")
        by_name[job.name] = job
    return by_name


def run_jobs(
    jobs: Sequence[Job],
    board: JobBoard,
    *,
    finish: Callable[[], Any] | None = None,
    log: Callable[[str], Any] | None = None,
    wait_for_all: bool = False,
) -> tuple[bool, Any]:
    """Run this shard's jobs (and what they need that nobody has done), then, when every job is
    done, ``finish()`` unless another process is finishing right now. With ``wait_for_all`` a
    shard then sees every other job done too (waiting for live claims, doing the rest), so
    every process leaves with all the results (a stage the next one needs everywhere).

    Returns ``(finished, finish's result)``: ``finished`` is False when other shards' jobs are
    still to do (or another process is finishing), and the result is then None.
    """
    by_name = _check_order(jobs)
    say = log or (lambda _msg: None)

    def ensure(job: Job) -> None:
        if board.done(job.name):
            return
        for dep in job.needs:
            ensure(by_name[dep])
        waiting = False
        while not board.done(job.name):
            if board.claim(job.name):
                try:
                    if board.done(job.name):  # finished between our look and our claim
                        return
                    started = time.time()
                    job.run()
                    seconds = time.time() - started
                    board.mark_done(job.name, {"seconds": round(seconds, 3)})
                    if board.shard.count > 1:  # one process alone has its progress bars
                        say(f"shard {board.shard}: {job.name} done [{seconds:.0f}s]")
                finally:
                    board.release(job.name)
                return
            if not waiting:
                say(f"shard {board.shard}: waiting for {job.name}, which another process is on")
                waiting = True
            time.sleep(board.poll)

    try:
        for position, job in enumerate(jobs):
            if board.shard.owns(position):
                ensure(job)
        if wait_for_all:
            for job in jobs:
                ensure(job)
        left = [j.name for j in jobs if not board.done(j.name)]
        if left:
            say(f"shard {board.shard}: done; {len(left)} jobs of other shards still to do")
            return False, None
        if finish is None:
            return True, None
        if not board.claim("finish"):
            say(f"shard {board.shard}: done; another process writes the report")
            return False, None
        try:
            return True, finish()
        finally:
            board.release("finish")
    finally:
        board.close()
