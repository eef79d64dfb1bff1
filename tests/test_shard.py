"""Studies split over shards (probes/shard.py): which shard a process is, how jobs are claimed,
waited for and taken over, and that a study split over 2 gloo ranks, or run as ``--shard 0/2``
then ``--shard 1/2``, gives bit for bit the files of a single run and repeats nothing."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from ifid_callback.probes.shard import Job, JobBoard, Shard, resolve_shard, run_jobs
from ifid_callback.probes.study import StudyConfig, run_study
from ifid_callback.probes.zoo import ZooMember, train_zoo
from tests.helpers import RandomFeatures, run_ranks

torch.set_num_threads(1)
FAST = {"poll": 0.05, "heartbeat": 0.2, "stale_after": 30.0}


# --- which shard


def test_shard_from_spec_slurm_and_torchrun():
    assert resolve_shard(None, {}) == Shard(0, 1)
    assert resolve_shard("1/4", {}) == Shard(1, 4)
    slurm = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "3"}
    assert resolve_shard("slurm", slurm) == Shard(1, 3)
    stepped = {**slurm, "SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_STEP": "2"}
    assert resolve_shard("slurm", stepped) == Shard(2, 3)
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    assert resolve_shard(None, torchrun) == Shard(1, 2, local_rank=1)
    # An array task's share split again over its torchrun ranks.
    assert resolve_shard("1/2", torchrun) == Shard(3, 4, local_rank=1)
    assert resolve_shard(None, {"RANK": "0", "WORLD_SIZE": "1"}) == Shard(0, 1)
    assert [p for p in range(7) if Shard(1, 3).owns(p)] == [1, 4]


@pytest.mark.parametrize("spec", ["2/2", "-1/2", "1", "a/b", "0/0"])
def test_bad_shard_specs_say_what_is_expected(spec):
    with pytest.raises(ValueError, match="'i/n' with 0 <= i < n"):
        resolve_shard(spec, {})


def test_slurm_shard_outside_an_array_names_the_fix():
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_ID"):
        resolve_shard("slurm", {})
    irregular = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "2"}
    with pytest.raises(ValueError, match="--array=0-1"):
        resolve_shard("slurm", irregular)


# --- the job board


def _recording_jobs(log: list[str]) -> list[Job]:
    def job(name: str, *needs: str) -> Job:
        return Job(name, lambda: log.append(name), needs)

    return [job("a"), job("b"), job("c", "a"), job("d", "b"), job("e", "c", "d")]


def test_a_shard_runs_its_jobs_and_what_they_need_once(tmp_path):
    log: list[str] = []
    jobs = _recording_jobs(log)
    finished, _ = run_jobs(jobs, JobBoard(tmp_path, Shard(0, 2), **FAST), finish=lambda: 1)
    # Shard 0 owns a, c, e; e needs d (shard 1's, not started): it does d itself, and b for d.
    assert log == ["a", "c", "b", "d", "e"] and finished
    log.clear()
    assert run_jobs(jobs, JobBoard(tmp_path, Shard(1, 2), **FAST), finish=lambda: 7) == (True, 7)
    assert log == []  # everything was done: shard 1 only merges


def test_unfinished_shard_leaves_the_report_to_the_last(tmp_path):
    log: list[str] = []
    jobs = _recording_jobs(log)[:2]
    assert run_jobs(jobs, JobBoard(tmp_path, Shard(0, 2), **FAST), finish=lambda: 1) == (
        False,
        None,
    )
    assert log == ["a"]
    assert run_jobs(jobs, JobBoard(tmp_path, Shard(1, 2), **FAST), finish=lambda: 2) == (True, 2)
    assert log == ["a", "b"]


def test_a_job_another_process_is_on_is_waited_for(tmp_path):
    other = JobBoard(tmp_path, Shard(1, 2), **FAST)
    assert other.claim("a")
    log: list[str] = []

    def finish_a_later() -> None:
        time.sleep(0.5)
        log.append("a (other)")
        other.mark_done("a", {})
        other.release("a")

    thread = threading.Thread(target=finish_a_later)
    thread.start()
    jobs = [Job("a", lambda: log.append("a")), Job("b", lambda: log.append("b"), ("a",))]
    run_jobs(jobs, JobBoard(tmp_path, Shard(0, 1), **FAST))
    thread.join()
    other.close()
    assert log == ["a (other)", "b"]


def test_wait_for_all_leaves_every_shard_with_every_job_done_once(tmp_path):
    # A stage every process needs whole (the natural family's VAEs before its study): each
    # shard does its own jobs, then waits for, or does, the others'; no job runs twice.
    log: list[str] = []
    lock = threading.Lock()

    def job(name: str) -> Job:
        def run() -> None:
            time.sleep(0.05)
            with lock:
                log.append(name)

        return Job(name, run)

    jobs = [job(n) for n in "abcdef"]
    seen: dict[int, list[bool]] = {}

    def shard(i: int) -> None:
        board = JobBoard(tmp_path, Shard(i, 2), **FAST)
        run_jobs(jobs, board, wait_for_all=True)
        seen[i] = [board.done(j.name) for j in jobs]

    threads = [threading.Thread(target=shard, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(log) == list("abcdef")  # each once
    assert seen == {0: [True] * 6, 1: [True] * 6}
    # Alone (the other shard never started), a shard does everything itself.
    alone: list[str] = []
    jobs = [Job(n, lambda n=n: alone.append(n)) for n in "xyz"]
    run_jobs(jobs, JobBoard(tmp_path / "alone", Shard(1, 3), **FAST), wait_for_all=True)
    assert alone == ["y", "x", "z"]


def test_stale_and_orphaned_claims_are_taken_over(tmp_path):
    board = JobBoard(tmp_path, Shard(0, 2), **FAST)
    claim = tmp_path / "x.claim"
    # A live process of another shard on this host: not taken.
    claim.write_text(json.dumps({"host": board._me["host"], "pid": os.getppid(), "shard": "1/2"}))
    assert not board.claim("x")
    # Caught while its owner writes it: only its age can tell, and it is fresh.
    claim.write_text("")
    assert not board.claim("x")
    # Not refreshed for longer than stale_after: taken.
    old = time.time() - 60
    os.utime(claim, (old, old))
    assert board.claim("x")
    board.release("x")
    # Left by an earlier run of this very shard: taken.
    claim.write_text(json.dumps({"host": "elsewhere", "pid": 1, "shard": "0/2"}))
    assert board.claim("x")
    board.release("x")
    # Its process is gone from this host: taken.
    gone = 2**22 + 12345
    claim.write_text(json.dumps({"host": board._me["host"], "pid": gone, "shard": "1/2"}))
    assert board.claim("x")
    board.close()
    assert not claim.exists()


def test_jobs_must_come_after_what_they_need(tmp_path):
    jobs = [Job("b", lambda: None, ("a",)), Job("a", lambda: None)]
    with pytest.raises(ValueError, match="not listed before it"):
        run_jobs(jobs, JobBoard(tmp_path, Shard(0, 1), **FAST))


# --- a study split over shards equals the single run


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(64, 3, 32, 32, generator=g) * 2 - 1).clamp(-1, 1)
    members = [ZooMember("ae", 4), ZooMember("kl", 2, kl_weight=1e-2, latent_noise=0.1)]
    return train_zoo(out, images, members, steps=3, batch_size=16, base_channels=8, progress=False)


def _config(zoo, out) -> StudyConfig:
    """test_probe_study's smoke study, with two probe seeds per VAE."""
    return StudyConfig(
        vaes=[str(p) for p in zoo],
        out_dir=str(out),
        image_size=32,
        max_train=96,
        num_eval=48,
        num_reference=64,
        num_samples=32,
        t_grid=[0.5],
        feature="tests.helpers:RandomFeatures",
        probe={
            "size": "tiny",
            "steps": 6,
            "batch_size": 16,
            "ema_decay": 0.9,
            "model_overrides": {"depth": 1, "hidden_size": 32, "num_heads": 2},
            "checkpoint_every": 3,
        },
        sampling_steps=3,
        batch_size=32,
        sample_batch_size=16,
        probe_seeds=2,
    )


def _study(config: StudyConfig, shard: Shard | None = None):
    feature = RandomFeatures(in_dim=3 * 32 * 32, num_features=16)
    return run_study(config, feature=feature, progress=False, log=None, shard=shard, board=FAST)


def _study_rank(rank: int, world: int, zoo: list[Path], out: Path):
    # The shard comes from the process group, as under torchrun.
    assert resolve_shard() == Shard(rank, world)
    return _study(_config(zoo, out)) is not None


def _files(out: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every result file of a study (not those with timings: stages.json, events, job markers,
    probe checkpoints, and ``skip``), with the study's own path written as <out>."""
    found = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        timed = rel.startswith(("jobs/", "events", *skip)) or path.name.startswith("stages")
        if path.is_file() and not timed and "/probe" not in f"/{rel}":
            found[rel] = path.read_bytes().replace(str(out).encode(), b"<out>")
    return found


def _shards_that_worked(out: Path) -> set[str]:
    return {json.loads(p.read_text())["shard"] for p in (out / "jobs").rglob("*.done")}


def _events(out: Path) -> list[str]:
    return (out / "events.jsonl").read_text().splitlines()


def test_sharded_study_equals_the_single_run_and_repeats_nothing(zoo, tmp_path):
    single = tmp_path / "single"
    assert _study(_config(zoo, single)) is not None
    expected = _files(single)
    assert "results_raw.json" in expected and "report/results.md" in expected
    assert "vaes/kl/features_samples_s1.npy" in expected

    # Two gloo ranks at once: one of them (the last to finish) merges and reports.
    ranks = tmp_path / "ranks"
    assert sorted(run_ranks(_study_rank, 2, tmp_path, zoo, ranks)) == [False, True]
    assert _files(ranks) == expected
    assert _shards_that_worked(ranks) == {"0/2", "1/2"}

    # Two shards one after the other (a SLURM array whose tasks ran in turn).
    shards = tmp_path / "shards"
    assert _study(_config(zoo, shards), Shard(0, 2)) is None
    first = _events(shards)
    assert _study(_config(zoo, shards), Shard(1, 2)) is not None
    assert _files(shards) == expected
    assert _shards_that_worked(shards) == {"0/2", "1/2"}
    # Every stage was computed once, across the shards and ranks as in the single run.
    for out in (ranks, shards):
        stages = sorted((e["file"], e["stage"]) for e in map(json.loads, _events(out)))
        assert stages == sorted((e["file"], e["stage"]) for e in map(json.loads, _events(single)))

    # Re-running a finished shard repeats nothing (and, all jobs being done, reports).
    events = _events(shards)
    assert len(events) > len(first)
    assert _study(_config(zoo, shards), Shard(0, 2)) is not None
    assert _events(shards) == events
    assert _files(shards) == expected


def test_probe_seed_stages_written_before_the_split_are_still_found(tmp_path):
    from ifid_callback.probes.stages import Stages

    events = tmp_path / "events.jsonl"
    shared = Stages(tmp_path / "stages.json", events)
    shared.put("probe@s1", {"k": 1}, {"steps": 6}, 1.0)  # where seed 1's stages used to go
    own = Stages(tmp_path / "stages_s1.json", events, fallback=tmp_path / "stages.json")
    assert own.get("probe@s1", {"k": 1}) == {"steps": 6}
    assert own.get("probe@s1", {"k": 2}) is None
    own.put("gfid@s1", {"k": 1}, {"gfid": 3.0}, 1.0)
    assert json.loads((tmp_path / "stages.json").read_text()).keys() == {"probe@s1"}
    assert json.loads((tmp_path / "stages_s1.json").read_text()).keys() == {"gfid@s1"}
