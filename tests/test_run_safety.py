"""No user action loses a run: run identity, bad workdirs, logs after a resume, signals, resuming
on another machine shape, and one line per mistake in the command-line programs.

Runs use tiny random images and narrow models; those that need their own device or process
count, a signal or an exit status start experiments/*.py in fresh interpreters
(tests/run_helpers.py), the others call `mvcl.train.train_and_evaluate` in this process.
"""

import json
import os
import shutil
import signal
from pathlib import Path

import jax
import numpy as np
import pytest
from run_helpers import (
    EVALUATE,
    PRETRAIN,
    SWEEP,
    TINY_RUN,
    checkpoint_steps,
    finish,
    logged_steps,
    processes,
    read_metrics,
    saved_state,
    start,
    tensorboard_steps,
    tiny_config,
    train_losses,
)

from mvcl import studies, train
from mvcl.studies import grid, runner
from mvcl.train import cli, run_identity, writers
from mvcl.train.run_identity import CONSENT, FREE, IDENTITY
from mvcl.train.workdir import plain_config


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def history(workdir) -> list[dict]:
    return run_identity.read_history(workdir)


# --- run identity: the rules --------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, kind",
    [
        ("log_every_steps", FREE),
        ("eval.knn_k", FREE),
        ("dataset.data_dir", FREE),
        ("loss.backend", FREE),
        ("num_devices", FREE),
        ("input.num_workers", FREE),
        ("num_epochs", CONSENT),
        ("optim.lr", CONSENT),
        ("augment.min_scale", CONSENT),
        ("model.dtype", CONSENT),
        ("train.micro_batch", CONSENT),
        ("data.prefetch", FREE),
        ("augment.crop_size", IDENTITY),
        ("augment.multicrop.num_small", IDENTITY),
        ("model.proj_dim", IDENTITY),
        ("model.kwargs.width", IDENTITY),
        ("loss.name", IDENTITY),
        ("num_views", IDENTITY),
        ("batch_size", IDENTITY),
        ("seed", IDENTITY),
        ("optim.name", IDENTITY),
        ("dataset.name", IDENTITY),
        ("some_future_field", IDENTITY),
    ],
)
def test_field_classes(field, kind):
    assert run_identity.field_class(field) == kind


def test_diff_lists_changed_added_and_removed_fields_and_ignores_multicrop_while_off():
    old = run_identity.plain(tiny_config())
    new = json.loads(json.dumps(old))
    new["optim"]["lr"] = 0.1
    new["augment"]["multicrop"]["small_size"] = 2  # unused while num_small = 0
    new["input"] = {"num_workers": 4}
    new["train"]["chunks"] = 2  # fields a newer version added
    new["future"] = {"switch": None}
    del new["eval"]["knn_k"]
    changes = {c.field: c for c in run_identity.diff(old, new)}
    assert sorted(changes) == [
        "eval.knn_k",
        "future.switch",
        "input.num_workers",
        "optim.lr",
        "train.chunks",
    ]
    assert str(changes["optim.lr"]) == "optim.lr 0.5 -> 0.1"
    assert changes["input.num_workers"].old is run_identity.ABSENT
    assert changes["eval.knn_k"].kind == FREE  # a free field stays free when absent
    assert changes["future.switch"].kind == FREE  # added unset: the old behaviour
    assert changes["train.chunks"].kind == CONSENT  # added with a value: the user must say
    new["augment"]["multicrop"]["num_small"] = 2
    assert "augment.multicrop.small_size" in {c.field for c in run_identity.diff(old, new)}


# --- run identity: whole runs -------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-step run (checkpoints at both steps), trained once for the module."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    config = tiny_config(num_steps=2, checkpoint_every_steps=1, log_every_steps=1)
    train.train_and_evaluate(config, workdir)
    return workdir


@pytest.fixture
def run_dir(finished_run, tmp_path):
    """A copy of `finished_run` in ``tmp_path / "run"``, for one test to change."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


@pytest.mark.parametrize(
    "overrides, shown",
    [
        ({"model__proj_dim": 32}, "model.proj_dim 16 -> 32"),
        ({"loss__name": "mv_infonce"}, 'loss.name "mv_dhel" -> "mv_infonce"'),  # same model
        ({"seed": 1}, "seed 0 -> 1"),
    ],
    ids=["model", "loss", "seed"],
)
def test_rerun_that_changes_the_run_is_refused_before_anything_is_written(
    run_dir, overrides, shown
):
    before = snapshot(run_dir)
    config = tiny_config(num_steps=2, checkpoint_every_steps=1, **overrides)
    with pytest.raises(train.RunIdentityError, match="another --workdir") as error:
        train.train_and_evaluate(config, run_dir)
    assert shown in str(error.value) and "\n" not in str(error.value)
    field = shown.split()[0]
    with pytest.raises(train.RunIdentityError, match="cannot change within it"):
        train.train_and_evaluate(config, run_dir, allow_config_change=[field])
    assert snapshot(run_dir) == before  # config.json, checkpoints and logs untouched


def test_free_changes_are_accepted_and_recorded_and_config_json_is_kept(run_dir):
    original = (run_dir / "config.json").read_bytes()
    config = tiny_config(num_steps=2, checkpoint_every_steps=1, log_every_steps=3)
    config.eval.knn_k = 5
    result = train.train_and_evaluate(config, run_dir)
    assert result["step"] == 2 and not result["preempted"]
    assert (run_dir / "config.json").read_bytes() == original
    first, second = history(run_dir)
    assert first["event"] == "start" and first["changes"] == {}
    assert second["event"] == "resume" and second["step"] == 2
    assert second["changes"] == {
        "eval.knn_k": {"old": 20, "new": 5, "absent": [], "accepted": "free"},
        "log_every_steps": {"old": 1, "new": 3, "absent": [], "accepted": "free"},
    }
    current = train.load_config(run_dir)  # config.json + the history
    assert (current.log_every_steps, current.eval.knn_k) == (3, 5)
    train.train_and_evaluate(config, run_dir)  # the same config again: nothing new to accept
    assert history(run_dir)[-1]["changes"] == {}


def test_a_new_schedule_length_needs_consent_states_its_effect_and_cannot_go_back(run_dir, capsys):
    longer = tiny_config(num_steps=4, checkpoint_every_steps=1, log_every_steps=1)
    with pytest.raises(train.RunIdentityError, match="--allow_config_change=num_steps"):
        train.train_and_evaluate(longer, run_dir)
    with pytest.raises(train.RunIdentityError, match="past the 1 steps"):
        train.train_and_evaluate(
            tiny_config(num_steps=1), run_dir, allow_config_change=["num_steps"]
        )
    with pytest.raises(train.RunIdentityError, match="did you mean num_steps"):
        train.train_and_evaluate(longer, run_dir, allow_config_change=["num_step"])

    capsys.readouterr()
    result = train.train_and_evaluate(longer, run_dir, allow_config_change=["num_steps"])
    assert result["step"] == 4
    out = capsys.readouterr().out
    lr = train.learning_rate_schedule(longer, 4)(2)
    assert f"the rate is {float(lr):.4g} instead of 0" in out  # the old schedule ended at 0
    (note,) = history(run_dir)[-1]["notes"]
    assert "from 2 to 4 steps" in note
    assert history(run_dir)[-1]["changes"]["num_steps"]["accepted"] == "allowed"
    logged = {m["step"]: m["train/learning_rate"] for m in read_metrics(run_dir)}
    np.testing.assert_allclose(logged[3], lr, rtol=1e-6)  # step 3 ran at the new schedule's rate
    # The same total step count said another way is no change of the schedule.
    same = tiny_config(num_steps=4, checkpoint_every_steps=1, log_every_steps=1, num_epochs=7)
    assert train.train_and_evaluate(same, run_dir)["step"] == 4
    assert history(run_dir)[-1]["changes"]["num_epochs"]["accepted"] == "free"


def test_checkpoints_without_a_config_are_refused(run_dir):
    workdir = run_dir
    (workdir / "config.json").unlink()
    (workdir / "config_history.jsonl").unlink()
    for name in ("metrics.jsonl", *(p.name for p in workdir.glob("events.*"))):
        (workdir / name).unlink()
    with pytest.raises(train.WorkdirError, match=r"holds files but no mvcl run .*: checkpoints/"):
        train.train_and_evaluate(tiny_config(num_steps=2), workdir)


# --- bad workdirs -------------------------------------------------------------------------------


def test_bad_workdirs_fail_before_training(tmp_path, monkeypatch):
    config = tiny_config()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(train.WorkdirError, match="is a file; a run needs a directory"):
        train.train_and_evaluate(config, a_file)
    with pytest.raises(train.WorkdirError, match="is a file, so no directory"):
        train.train_and_evaluate(config, a_file / "run")

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(train.WorkdirError, match=r"holds files but no mvcl run .*notes\.txt"):
        train.train_and_evaluate(config, other)
    (other / "config.json").write_text("{not json")
    with pytest.raises(train.WorkdirError, match="is not a run's config"):
        train.train_and_evaluate(config, other)

    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and access(p, mode))
    for workdir in (locked, locked / "new" / "run"):
        with pytest.raises(train.WorkdirError, match=f"no permission to write in {locked}"):
            train.train_and_evaluate(config, workdir)
    assert list(locked.iterdir()) == [] and list(other.iterdir()) != []


def test_evaluate_says_there_is_no_run_or_refuses_another_config(tmp_path, run_dir):
    with pytest.raises(train.NoRunError, match="no run in .*does not exist"):
        train.evaluate_workdir(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no run in .*no config.json"):
        train.evaluate_workdir(tmp_path / "empty")
    with pytest.raises(train.RunIdentityError, match='loss.name "mv_dhel" -> "pwe".*Omit --config'):
        train.evaluate_workdir(run_dir, tiny_config(num_steps=2, loss__name="pwe"))
    with pytest.raises(train.CheckpointMismatchError, match="another structure"):
        train.restore_variables(run_dir, tiny_config(model__proj_dim=8))


# --- logs after a resume ------------------------------------------------------------------------


def test_steps_redone_after_a_crash_are_logged_once(run_dir):
    # A crash after step 2 was logged, before its checkpoint was saved.
    (run_dir / "checkpoints" / "2").rename(run_dir / "lost")
    config = tiny_config(num_steps=2, checkpoint_every_steps=1, log_every_steps=1)
    assert train.train_and_evaluate(config, run_dir)["step"] == 2
    assert logged_steps(run_dir) == [1, 2]
    assert tensorboard_steps(run_dir) == [1, 2]
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2  # one per session


def test_a_value_logged_again_at_a_step_replaces_the_old_one(tmp_path):
    writer = writers.MetricWriter(tmp_path)
    writer.write_scalars(1, {"train/loss": 2.0})
    writer.write_scalars(2, {"train/loss": 1.0})
    writer.write_scalars(2, {"eval/knn": 0.5})
    writer.close()
    writer = writers.MetricWriter(tmp_path)  # an evaluation of the same checkpoint, again
    writer.write_scalars(2, {"eval/knn": 0.7})
    writer.close()
    records = read_metrics(tmp_path)
    assert [(r["step"], sorted(set(r) - {"step", "time"})) for r in records] == [
        (1, ["train/loss"]),
        (2, ["train/loss"]),
        (2, ["eval/knn"]),
    ]
    assert records[-1]["eval/knn"] == 0.7
    assert tensorboard_steps(tmp_path, "eval/knn") == [2]
    assert tensorboard_steps(tmp_path, "train/loss") == [1, 2]


# --- signals ------------------------------------------------------------------------------------


def test_ctrl_c_saves_and_exits_130_and_a_second_one_exits_at_once(tmp_path):
    run = [*TINY_RUN, "--config.checkpoint_every_steps=2"]
    once = start([*run, f"--workdir={tmp_path / 'once'}"], worker=["int", "3"])
    twice = start([*run, f"--workdir={tmp_path / 'twice'}"], worker=["int2", "3"])
    out, err = finish(once, status=130)
    # The signal came as step 3 completed; the host runs at most 2 steps ahead (steps_ahead).
    saved = int(out.split("SIGINT: saved the checkpoint at step ")[1].split()[0])
    assert 3 <= saved <= 5 and "Traceback" not in err
    assert checkpoint_steps(tmp_path / "once")[-1] == saved
    out, err = finish(twice, status=130)
    assert err.strip().splitlines()[-1] == (
        "mvcl-pretrain: SIGINT again: exiting without saving (the checkpoints on disk are kept)."
    )
    assert "Traceback" not in err
    assert 3 not in checkpoint_steps(tmp_path / "twice")


def digits_run(tmp_path) -> list[str]:
    """A 2-step run on the bundled digits, with evaluation (a small probe and geometry)."""
    return [
        "--config=digits:width=0.125",
        f"--config.dataset.data_dir={tmp_path / 'data'}",
        "--config.batch_size=16",
        "--config.num_steps=2",
        "--config.model.proj_dim=16",
        "--config.progress_bar=False",
        "--config.eval.probe_epochs=2",
        "--config.eval.geometry_examples=32",
    ]


def test_sigterm_during_evaluation_stops_it_with_a_message_and_exit_0(tmp_path):
    pretrain = start(
        [*digits_run(tmp_path), f"--workdir={tmp_path / 'run'}"], worker=["term-eval", "0"]
    )
    sweep_args = [
        "--config=sweeps/digits_claims:fake=True",
        "--config.base_arg=width=0.0625",  # the real digits: cells are evaluated
        f"--workdir={tmp_path / 'sweep'}",
    ]
    sweep = start(
        sweep_args, script=SWEEP, worker=["term-eval", "0"], env={"TFDS_DATA_DIR": str(tmp_path)}
    )
    out, err = finish(pretrain)
    assert "SIGTERM during evaluation: stopped it; the checkpoint of step 2 is saved" in out
    assert "Traceback" not in err
    # The bundled data set was prepared and decoded quietly: no tfds download or OpenCV notes.
    assert "Downloading and preparing" not in out + err and "OpenCV" not in err
    assert checkpoint_steps(tmp_path / "run") == [2]
    assert not [m for m in read_metrics(tmp_path / "run") if any(k.startswith("eval/") for k in m)]

    out, err = finish(sweep)
    assert "SIGTERM during evaluation" in out and "Stopped with 0 of 20 cells done" in out
    assert "Traceback" not in err
    assert not list((tmp_path / "sweep").glob("cells/*/result.json"))


# --- one line per mistake -----------------------------------------------------------------------


def done_sweep_cell_with_another_config(workdir: Path) -> list[str]:
    """A fake sweep whose first cell is done, with a config that differs from what the sweep
    gives it now; returns the sweep's arguments."""
    arg = "sweeps/digits_claims:fake=True"
    sweep = grid.load_config_file(*arg.split(":"))
    cell = studies.cells(sweep)[0]
    stored = plain_config(studies.cell_config(sweep, cell))
    stored["num_steps"] = 7
    directory = runner.cell_dir(workdir, cell)
    directory.mkdir(parents=True)
    result = {"cell": vars(cell), "step": 7, "seconds": 1.0, "train_loss": 1.0, "eval": {}}
    (directory / runner.RESULT_FILE).write_text(json.dumps({**result, "config": stored}))
    return [f"--config={arg}", f"--workdir={workdir}"]


def test_every_user_error_is_one_line_on_stderr(tmp_path):
    fake = ["--config=digits:fake=True", f"--workdir={tmp_path / 'run'}"]
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty").mkdir()
    cases = {
        "lr": (
            [*fake, "--config.optim.lr=-1"],
            PRETRAIN,
            "config.optim.lr: must be a number > 0, got -1.0",
        ),
        "loss": (
            ["--config=digits:fake=True,loss=nope", f"--workdir={tmp_path}/r"],
            PRETRAIN,
            "config.loss.name: unknown loss 'nope'",
        ),
        "config file": (
            ["--config=nope"],
            PRETRAIN,
            "config 'nope' is neither a packaged config nor an existing .py file",
        ),
        "config argument": (
            ["--config=digits:lss=2"],
            PRETRAIN,
            "unknown config argument 'lss'; known arguments: backend,",
        ),
        "misspelled field": (
            [*fake, "--config.num_view=8"],
            PRETRAIN,
            "--config.num_view: no such config field; did you mean --config.num_views",
        ),
        "misspelled nested field": (
            [*fake, "--config.optim.learning_rate=0.1"],
            PRETRAIN,
            "the fields of --config.optim are --config.optim.lr,",
        ),
        "bad value": ([*fake, "--config.optim.lr=abc"], PRETRAIN, "could not convert string"),
        "data set": (
            [
                "--config=cifar10",
                f"--config.dataset.data_dir={tmp_path / 'no_data'}",
                f"--workdir={tmp_path / 'cifar'}",
            ],
            PRETRAIN,
            "config.dataset.name: cannot read split 'train'",
        ),
        "workdir file": (
            ["--config=digits:fake=True", f"--workdir={tmp_path / 'a_file'}"],
            PRETRAIN,
            "is a file; a run needs a directory",
        ),
        "stray argument": ([*fake, "oops"], PRETRAIN, "unexpected arguments: oops"),
        "no run": ([f"--workdir={tmp_path / 'empty'}"], EVALUATE, "no run in"),
        "sweep cell": (
            done_sweep_cell_with_another_config(tmp_path / "sweep"),
            SWEEP,
            "was run with a different config (fields num_steps)",
        ),
    }
    procs = {name: start(args, script=script) for name, (args, script, _) in cases.items()}
    helped = start(["--help"])
    verbose = start([*fake, "--config.optim.lr=-1", "--verbose"])
    for name, proc in procs.items():
        out, err = finish(proc, status=cli.USAGE_STATUS)
        lines = [line for line in err.splitlines() if line.strip() and "cell/s]" not in line]
        assert len(lines) == 1, (name, err[-3000:])  # (the sweep's progress bar aside)
        line = lines[0]
        program = Path(cases[name][1]).name
        assert line.startswith(f"{program}: error: ") and cases[name][2] in line, (name, line)
    out, _ = finish(helped)
    assert "--allow_config_change" in out and "--[no]verbose" in out
    _, err = finish(verbose, status=1)
    assert "Traceback" in err and "config.optim.lr: must be a number > 0" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cifar").exists()


# --- resuming on another machine shape ----------------------------------------------------------


SHAPE_RUN = [*TINY_RUN, "--config.num_steps=12"]


def assert_same_run(workdir: Path, reference: Path) -> None:
    """Every logged loss and the final train state as the reference run's, to float32 rounding
    (reductions over the global batch add in another order on another machine shape)."""
    assert logged_steps(workdir) == list(range(1, 13))
    np.testing.assert_allclose(train_losses(workdir), train_losses(reference), rtol=1e-6)
    got, expected = saved_state(workdir, 12), saved_state(reference, 12)
    for name in ("params", "batch_stats", "opt_state"):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
            got[name],
            expected[name],
        )


def saved_step(out: str) -> int:
    """The step of "... saved the checkpoint at step N" in a stopped run's output."""
    return int(out.split("saved the checkpoint at step ")[1].split()[0])


@pytest.mark.slow
def test_a_run_resumes_from_8_devices_on_2_then_on_1(tmp_path):
    # The reference starts as the run does: on 1 device, a discrete event (a ReLU or crop edge
    # hit within rounding) makes step 8 differ by 7e-5 from every multi-device run.
    reference = start([*SHAPE_RUN, f"--workdir={tmp_path / 'reference'}"], devices=8)
    run = [*SHAPE_RUN, f"--workdir={tmp_path / 'run'}"]
    out, _ = finish(start(run, devices=8, worker=["term", "4"]))
    first = saved_step(out)  # the signal came as step 4 completed: the host's lead is 2 steps
    assert 4 <= first <= 6
    out, _ = finish(start(run, devices=2, worker=["term", "8"]))
    assert f"Resumed from the checkpoint at step {first}" in out and "on 2 device(s)" in out
    second = saved_step(out)
    assert 8 <= second <= 10
    out, _ = finish(start(run, devices=1))
    assert f"Resumed from the checkpoint at step {second}" in out
    finish(reference)
    shapes = [(h["step"], h["devices"]) for h in history(tmp_path / "run")]
    assert shapes == [(0, 8), (first, 2), (second, 1)]
    assert_same_run(tmp_path / "run", tmp_path / "reference")


@pytest.mark.slow
def test_a_run_moves_between_1_and_2_processes_and_sigterm_to_one_stops_both(tmp_path):
    reference = start([*SHAPE_RUN, f"--workdir={tmp_path / 'reference'}"], devices=2)
    run = [*SHAPE_RUN, f"--workdir={tmp_path / 'run'}"]
    out, _ = finish(start(run, devices=2, worker=["term", "4"]))
    first = saved_step(out)
    two = [
        start(run, devices=1, worker=["term", "8"], env={**env, "MVCL_TEST_SIGNAL_PROCESS": "1"})
        for env in processes(2)
    ]
    (out0, _), (out1, _) = [finish(p) for p in two]  # both exit 0
    second = saved_step(out0)
    assert 8 <= second <= 10
    assert f"A signal to another process: saved the checkpoint at step {second}" in out0
    assert "on 2 device(s) in 2 process(es)" in out0
    assert checkpoint_steps(tmp_path / "run") == [first, second]
    out, _ = finish(start(run, devices=2))
    assert f"Resumed from the checkpoint at step {second}" in out
    finish(reference)
    shapes = [(h["step"], h["devices"], h["processes"]) for h in history(tmp_path / "run")]
    assert shapes == [(0, 2, 1), (first, 2, 2), (second, 2, 1)]
    assert_same_run(tmp_path / "run", tmp_path / "reference")


# --- the ring backend in the trainer ------------------------------------------------------------


@pytest.mark.slow
def test_ring_backend_trains_as_gather_on_3_and_8_devices(tmp_path):
    run = [
        *TINY_RUN,
        "--config.batch_size=24",
        "--config.dataset.fake_num_examples=48",
        "--config.num_steps=6",
    ]
    procs = {
        (devices, backend): start(
            [*run, f"--config.loss.backend={backend}", f"--workdir={tmp_path}/{backend}{devices}"],
            devices=devices,
        )
        for devices in (3, 8)
        for backend in ("gather", "ring")
    }
    for (devices, _), proc in procs.items():
        out, _ = finish(proc)
        assert f"on {devices} device(s)" in out
    for devices in (3, 8):
        gather = train_losses(tmp_path / f"gather{devices}")
        assert len(gather) == 6 and np.all(np.isfinite(gather))
        np.testing.assert_allclose(train_losses(tmp_path / f"ring{devices}"), gather, rtol=1e-5)


def test_signals_module_restores_the_previous_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with train.signals.handling():
        assert signal.getsignal(signal.SIGTERM) is not before
        with train.signals.handling():  # nested: one state
            os.kill(os.getpid(), signal.SIGTERM)
        assert train.signals.received() == "SIGTERM"
        with pytest.raises(train.signals.Interrupted):
            with train.signals.immediate():
                pass
    assert signal.getsignal(signal.SIGTERM) is before
