"""A run that watches itself: the divergence guard, one run per workdir, save failures that stop
the run at once, the host's bounded lead over the devices, and every numeric config field
checked.

Whole runs start the command-line programs in fresh interpreters (tests/run_helpers.py) on tiny
random images; the jitted guard is checked on 3 simulated devices with a NaN injected into one
device's shard (tests/guard_worker.py).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import config_dict
from run_helpers import (
    EVALUATE,
    REPO,
    TINY_RUN,
    checkpoint_steps,
    finish,
    read_metrics,
    saved_state,
    start,
    tiny_config,
    xla_flags,
)

from mvcl import train
from mvcl.configs import common as common_config
from mvcl.train import checkpoint, cli, config_checks, guard, lock, loop, run_identity, writers
from mvcl.train.errors import (
    CheckpointSaveError,
    ConfigError,
    NonFiniteCheckpointError,
    WorkdirLockedError,
)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err[-4000:]
    return lines[0]


# --- the guard inside the step -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("micro_batch", [0, 1], ids=["one pass", "gradient caching"])
def test_a_nan_in_one_devices_shard_skips_the_step_on_every_device(micro_batch):
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=xla_flags(3),
    )
    out = subprocess.run(
        [sys.executable, str(REPO / "tests" / "guard_worker.py"), str(micro_batch)],
        cwd=REPO / "tests",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["devices"] == 3
    assert result["bad_finite"] is False and result["unchanged"] is True
    assert result["step"] == [0, 1]  # the counter advances: the batch is skipped
    assert result["good_finite"] is True and result["changed"] is True
    assert np.isfinite(result["good_loss"])


def test_all_finite_and_keep_if():
    tree = {"a": jnp.ones(3), "b": (jnp.zeros((2, 2)), jnp.arange(3))}
    assert bool(guard.all_finite(tree))
    bad = {"a": jnp.array([1.0, jnp.inf, 0.0]), "b": tree["b"]}
    assert not bool(guard.all_finite(bad))
    assert not bool(guard.all_finite({"x": jnp.array(jnp.nan, jnp.bfloat16)}))
    kept = guard.keep_if(jnp.asarray(False), bad, tree)
    assert np.array_equal(kept["a"], tree["a"])
    assert guard.nonfinite_summary(tree) is None
    assert guard.nonfinite_summary(bad) == "1 of 7 values are not finite (first: a)"


def test_bad_steps_counts_streaks_and_stops_at_the_limit():
    bad = guard.BadSteps(3)
    bad.update(1, True, 2.0)
    bad.update(2, False, float("nan"))
    bad.update(3, True, float("inf"))  # a finite flag with an infinite loss is bad too
    assert bad.streak == 2 and bad.take_window() == 2 and bad.take_window() == 0
    bad.update(4, True, 1.5)
    assert bad.streak == 0 and bad.last_finite == (4, 1.5)
    bad.update(5, False, 0.0)
    bad.update(6, False, 0.0)
    with pytest.raises(guard.DivergenceError) as e:
        bad.update(7, False, 0.0)
    assert "steps 5-7 (3 in a row" in str(e.value)
    assert "the last finite loss was 1.5 at step 4" in str(e.value)


def test_window_means_skip_non_finite_values():
    means = loop._mean_metrics([{"loss": 1.0, "g": np.nan}, {"loss": 3.0, "g": np.nan}])
    assert means == {"train/loss": 2.0}  # no NaN is logged


# --- a diverging run -----------------------------------------------------------------------------


DIVERGE = ["--config.optim.lr=1e9", "--config.train.max_bad_steps=3", "--config.optim.momentum=0"]


@pytest.mark.parametrize("micro_batch", [None, 4], ids=["one pass", "gradient caching"])
def test_a_diverging_run_stops_without_touching_the_good_checkpoints(tmp_path, micro_batch):
    cached = [f"--config.train.micro_batch={micro_batch}"] if micro_batch else []
    run = [
        *TINY_RUN,
        *cached,
        "--config.checkpoint_every_steps=2",
        "--config.keep_checkpoints=10",
        f"--workdir={tmp_path}",
    ]
    finish(start([*run, "--config.num_steps=4"]))
    assert checkpoint_steps(tmp_path) == [2, 4]
    before = snapshot(tmp_path / "checkpoints")

    proc = start([*run, *DIVERGE, "--allow_config_change=optim.lr,optim.momentum,num_steps"])
    _, err = finish(proc, status=cli.STOPPED_STATUS)
    line = one_error_line(err)
    assert line.startswith("mvcl-pretrain: error: training diverged: steps ")
    assert "config.train.max_bad_steps = 3" in line and "Try a lower config.optim.lr" in line
    first_bad = int(line.split("training diverged: steps ")[1].split("-")[0])
    # The good checkpoints are untouched; any new one came before the bad streak and is finite.
    steps = checkpoint_steps(tmp_path)
    assert steps[:2] == [2, 4] and all(s < first_bad for s in steps), (steps, line)
    after = snapshot(tmp_path / "checkpoints")
    assert {k: after.get(k) for k in before} == before
    assert f"The newest good checkpoint is step {steps[-1]} in {tmp_path / 'checkpoints'}" in line
    for step in steps:
        state = saved_state(tmp_path, step)
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(state) if x.dtype.kind == "f")
    bad = [m["train/bad_steps"] for m in read_metrics(tmp_path) if "train/bad_steps" in m]
    assert sum(bad) >= 1  # bad steps are counted in the logs
    for record in read_metrics(tmp_path):
        assert all(np.isfinite(v) for k, v in record.items() if k != "time")
    assert not (tmp_path / lock.LOCK_FILE).exists()  # the lock was given back


def test_a_non_finite_checkpoint_is_never_written_and_is_refused_or_set_aside(tmp_path):
    finish(start([*TINY_RUN, "--config.checkpoint_every_steps=2", f"--workdir={tmp_path}"]))
    steps = checkpoint_steps(tmp_path)
    state = saved_state(tmp_path, steps[-1])
    poisoned = jax.tree.map(lambda x: x, state)
    kernel = next(iter(jax.tree.leaves(poisoned["params"])))
    poisoned["params"] = jax.tree.map(
        lambda x: jnp.full_like(x, jnp.nan) if x is kernel else x, poisoned["params"]
    )
    directory = tmp_path / "checkpoints"
    keeper = checkpoint.Checkpointer(directory, max_to_keep=10)
    with pytest.raises(CheckpointSaveError, match="refusing to save the checkpoint of step 99"):
        keeper.save(99, poisoned, {"epoch": 0})
    keeper.close()
    assert 99 not in checkpoint_steps(tmp_path)

    # A checkpoint with NaNs written by an older mvcl (the check bypassed):
    original = checkpoint.nonfinite_summary
    checkpoint.nonfinite_summary = lambda tree: None
    try:
        keeper = checkpoint.Checkpointer(directory, max_to_keep=10)
        keeper.save(21, poisoned, {"epoch": 0})
        keeper.close()
    finally:
        checkpoint.nonfinite_summary = original
    assert checkpoint_steps(tmp_path)[-1] == 21
    _, err = finish(start([f"--workdir={tmp_path}"], script=EVALUATE), status=2)
    line = one_error_line(err)
    assert "the checkpoint at step 21" in line and "holds non-finite values" in line
    assert "values are not finite" in line

    # Training sets it aside (quarantine) and resumes from the newest finite one.
    resume = [*TINY_RUN, "--config.num_steps=22", "--allow_config_change=num_steps"]
    out, _ = finish(start([*resume, f"--workdir={tmp_path}"]))
    assert f"Resumed from the checkpoint at step {steps[-1]}" in out
    assert (directory / "quarantine" / "21").is_dir()
    assert checkpoint_steps(tmp_path)[-1] == 22


def test_evaluate_refuses_a_non_finite_checkpoint_in_process(tmp_path):
    state = {"params": {"w": np.array([1.0, np.nan], np.float32)}}
    original = checkpoint.nonfinite_summary
    checkpoint.nonfinite_summary = lambda tree: None
    try:
        keeper = checkpoint.Checkpointer(tmp_path, max_to_keep=2)
        keeper.save(1, state, {})
        keeper.close()
    finally:
        checkpoint.nonfinite_summary = original
    reader = checkpoint.Checkpointer(tmp_path, max_to_keep=2, read_only=True)
    with pytest.raises(NonFiniteCheckpointError, match="1 of 2 values are not finite"):
        reader.restore_latest({"params": {"w": np.zeros(2, np.float32)}})
    reader.close()


# --- one run per workdir -------------------------------------------------------------------------


def test_a_second_run_on_a_locked_workdir_is_refused_naming_the_holder(tmp_path):
    run = [*TINY_RUN, "--config.num_steps=2", f"--workdir={tmp_path}"]
    finish(start(run))
    held = lock.WorkdirLock(tmp_path)
    assert held.acquire() is None
    try:
        with pytest.raises(WorkdirLockedError, match=f"pid {os.getpid()}"):
            lock.WorkdirLock(tmp_path).acquire()
        _, err = finish(start(run), status=2)
        line = one_error_line(err)
        assert "is in use by" in line and f"pid {os.getpid()} on host" in line
        _, err = finish(start([f"--workdir={tmp_path}"], script=EVALUATE), status=2)
        assert "is in use by" in one_error_line(err)  # evaluation writes logs: it waits too
    finally:
        held.release()
    assert not (tmp_path / lock.LOCK_FILE).exists()


def test_a_stale_lock_is_taken_over_with_a_message(tmp_path):
    # A lock file left by a process that is gone (SIGKILL): its flock went with it.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    holder = {"pid": pid, "host": "here", "started": "earlier", "command": "mvcl-pretrain"}
    (tmp_path / lock.LOCK_FILE).write_text(json.dumps(holder))
    out, _ = finish(start([*TINY_RUN, "--config.num_steps=2", f"--workdir={tmp_path}"]))
    assert f"took over the lock of mvcl-pretrain (pid {pid} on host here" in out
    assert "that process is gone" in out
    assert checkpoint_steps(tmp_path) == [2]


def test_a_second_run_while_the_first_trains_is_refused_and_metrics_hold_each_step_once(tmp_path):
    run = [*TINY_RUN, "--config.num_steps=6", f"--workdir={tmp_path}"]
    resume = tmp_path / "resume"  # the first run waits at step 2 until this file exists
    first = start(run, worker=["pause", "2"], env={"MVCL_TEST_RESUME": str(resume)})
    deadline = time.time() + 300
    while not any(m.get("step") == 2 for m in _metrics_so_far(tmp_path)):
        assert time.time() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.2)
    _, err = finish(start(run), status=2)  # while the first is paused at step 2
    line = one_error_line(err)
    assert "is in use by" in line and f"pid {first.pid} on host" in line
    assert first.poll() is None  # (still paused: the refusal came while it held the lock)
    resume.touch()
    finish(first)
    steps = [m["step"] for m in read_metrics(tmp_path) if "train/loss" in m]
    assert steps == sorted(set(steps)) == list(range(1, 7))


def _metrics_so_far(workdir: Path) -> list[dict]:
    path = workdir / writers.METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_metrics_logged_twice_by_an_older_mvcl_are_deduplicated_on_open(tmp_path):
    lines = [
        {"step": 1, "time": 1.0, "train/loss": 3.0},
        {"step": 1, "time": 1.1, "train/loss": 3.5},
        {"step": 2, "time": 2.0, "train/loss": 2.0, "train/lr": 0.1},
        {"step": 2, "time": 2.1, "train/loss": 2.5},
    ]
    (tmp_path / writers.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines))
    writer = writers.MetricWriter(tmp_path, resume_step=2)
    writer.close()
    records = read_metrics(tmp_path)
    pairs = [(r["step"], k, v) for r in records for k, v in r.items() if k not in ("step", "time")]
    assert sorted(pairs) == [(1, "train/loss", 3.5), (2, "train/loss", 2.5), (2, "train/lr", 0.1)]


# --- save failures -------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs of its own (needs root and permission to mount, as on CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_run_at_the_next_step_with_one_line_and_a_rerun_resumes(small_disk):
    workdir = small_disk / "run"
    run = [
        *TINY_RUN,
        "--config.checkpoint_every_steps=4",
        "--config.num_steps=16",
        f"--workdir={workdir}",
    ]
    proc = start(run, worker=["fill", "5", "4"], env={"MVCL_TEST_FILL_LEAVE": "65536"})
    _, err = finish(proc, status=cli.STOPPED_STATUS)
    line = one_error_line(err)  # no orbax or tensorstore traceback (those need --verbose)
    failed = int(line.split("saving the checkpoint of step ")[1].split()[0])
    assert failed in (8, 12, 16) and "failed: no space left on device" in line
    newest = failed - 4
    assert f"The newest good checkpoint is step {newest} in {workdir / 'checkpoints'}" in line
    assert "rerun the same command to resume" in line
    # Nothing that looks like a checkpoint of the failed step, and the earlier ones intact.
    left = sorted(os.listdir(workdir / "checkpoints"), key=int)
    assert left == [str(s) for s in range(4, failed, 4)][-3:]
    steps_logged = [m["step"] for m in read_metrics(workdir) if "train/loss" in m]
    assert max(steps_logged) <= failed + 4 + 2  # by the next save, within the host's lead

    (small_disk / "filler").unlink()  # space freed: the same command resumes and finishes
    out, _ = finish(start(run))
    assert f"Resumed from the checkpoint at step {newest}" in out
    assert checkpoint_steps(workdir)[-1] == 16
    steps_logged = [m["step"] for m in read_metrics(workdir) if "train/loss" in m]
    assert steps_logged == list(range(1, 17))


# --- the host's lead -----------------------------------------------------------------------------


class _Progress:
    total = 100

    def __init__(self):
        self.n = 0

    def update(self):
        self.n += 1

    def set_postfix_str(self, text):
        self.postfix = text


class _Checkpointer:
    def check(self):
        pass


def test_the_host_waits_for_all_but_steps_ahead_steps():
    config = tiny_config(train__steps_ahead=2, log_every_steps=1000)
    progress = _Progress()
    steps = loop._Steps(
        config,
        writers.MetricWriter("/nonexistent", enabled=False),
        progress,
        _Checkpointer(),
        steps_per_epoch=10,
    )
    metrics = {
        "loss": jnp.float32(1.0),
        "grad_norm": jnp.float32(0.5),
        "learning_rate": jnp.float32(0.1),
        "finite": jnp.asarray(True),
    }
    for step in range(1, 8):
        steps.dispatched(step, metrics)
        assert len(steps.pending) == min(step, 2)
        assert progress.n == max(0, step - 2)  # completed steps only
    steps.complete_all()
    assert progress.n == 7 and not steps.pending


def test_ctrl_c_stops_within_the_hosts_lead(tmp_path):
    run = [*TINY_RUN, "--config.num_steps=40", f"--workdir={tmp_path}"]
    out, err = finish(start(run, worker=["int", "3"]), status=130)
    saved = checkpoint_steps(tmp_path)
    assert len(saved) == 1 and 3 <= saved[0] <= 3 + 2, saved
    assert f"SIGINT: saved the checkpoint at step {saved[0]}" in out


# --- every numeric config field ------------------------------------------------------------------


def _numeric_fields(config) -> list[str]:
    flat = run_identity.flatten(run_identity.plain(config))
    return [k for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]


def test_every_numeric_field_of_the_common_config_has_a_range():
    base = common_config.base_config()
    missing = [f for f in _numeric_fields(base) if f not in config_checks.RANGES]
    assert not missing, f"numeric config fields without a range in RANGES: {missing}"
    unknown = [
        f for f in config_checks.RANGES if f not in run_identity.flatten(run_identity.plain(base))
    ]
    assert not unknown, unknown


@pytest.mark.parametrize("field", sorted(config_checks.RANGES))
@pytest.mark.parametrize(
    "value", [0, -3, "abc", True, 2.5], ids=["zero", "negative", "str", "bool", "float"]
)
def test_every_numeric_field_is_checked_against_its_range(field, value):
    plain = run_identity.plain(tiny_config())
    node = plain
    *path, name = field.split(".")
    for part in path:
        node = node[part]
    node[name] = value
    config = config_dict.ConfigDict(plain)  # (not type-safe: a file or JSON could hold anything)
    allowed = config_checks.RANGES[field]
    if allowed.holds(value):
        config_checks.check_ranges(config)
    else:
        with pytest.raises(ConfigError) as e:
            config_checks.validate_config(config, device_count=1, process_count=1)
        assert str(e.value) == f"config.{field}: must be {allowed}, got {value!r}"


def test_range_messages_name_the_field_value_and_range():
    config = tiny_config()
    for field, value, message in [
        (
            "num_steps",
            0,
            "config.num_steps: must be -1 (unset: num_epochs sets the length) or an "
            "integer >= 1, got 0",
        ),
        ("num_steps", -5, "got -5"),
        ("batch_size", -8, "config.batch_size: must be an integer >= 2, got -8"),
        ("optim.warmup_fraction", 1.0, "must be a number in [0, 1), got 1.0"),
        ("data.num_workers", -2, "must be -1 (one per CPU core) or an integer >= 0, got -2"),
    ]:
        bad = config_dict.ConfigDict(run_identity.plain(config))
        target = bad
        *path, name = field.split(".")
        for part in path:
            target = target[part]
        target[name] = value
        with pytest.raises(ConfigError) as e:
            config_checks.validate_config(bad, device_count=1, process_count=1)
        assert message in str(e.value)


def test_a_refused_schedule_change_shows_the_step_counts_the_user_knows(tmp_path):
    finish(start([*TINY_RUN, "--config.num_steps=4", f"--workdir={tmp_path}"]))
    run = [a for a in TINY_RUN if not a.startswith("--config.num_steps")]
    _, err = finish(start([*run, "--config.num_epochs=5", f"--workdir={tmp_path}"]), status=2)
    line = one_error_line(err)
    assert (
        "num_steps 4 -> unset" in line and "the run trains for 4 steps, this config for 20" in line
    )


def test_zero_and_negative_num_steps_are_refused_before_anything_is_written(tmp_path):
    for value in (0, -5):
        config = tiny_config(num_steps=value)
        with pytest.raises(ConfigError, match=r"config\.num_steps: must be -1 \(unset"):
            train.train_and_evaluate(config, tmp_path / str(value), allow_config_change=[])
        assert not (tmp_path / str(value)).exists()


# --- online evaluation and the collapse alarm in the loop ----------------------------------------


def test_online_evaluation_is_logged_and_the_collapse_alarm_fires_once(tmp_path):
    run = [
        "--config=digits:width=0.125",
        f"--config.dataset.data_dir={tmp_path / 'data'}",
        "--config.batch_size=16",
        "--config.num_steps=3",
        "--config.model.proj_dim=16",
        "--config.progress_bar=False",
        "--config.eval.probe_epochs=2",
        "--config.eval.geometry_examples=32",
        "--config.eval.every_steps=1",
        "--config.eval.online_train_examples=64",
        "--config.eval.online_test_examples=32",
        "--config.eval.collapse_rank_fraction=1.0",  # rank < D always: the alarm must fire
        f"--workdir={tmp_path / 'run'}",
    ]
    out, _ = finish(start(run))
    assert out.count("Warning at step") == 1 and "Warning at step 1:" in out
    metrics = read_metrics(tmp_path / "run")
    online = [m["step"] for m in metrics if "online/knn_backbone" in m]
    assert online == [1, 2, 3]
    assert [m["step"] for m in metrics if "online/collapse" in m] == [1]
    for m in metrics:
        for key in ("online/knn_backbone", "online/knn_projector"):
            if key in m:
                assert 0 <= m[key] <= 1
        if "online/effective_rank_projector" in m:
            assert 1 <= m["online/effective_rank_projector"] <= 16
