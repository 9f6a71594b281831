"""Run identity: what a rerun in an existing workdir may change, and the record of what it did.

A workdir holds one run: ``config.json``, the config its checkpoints were written with, is never
rewritten; every session (the first, and each resume) appends one line to
``config_history.jsonl``: time, restored step, devices and processes, and the config fields it
changed. The run's current config (`effective_config`) is ``config.json`` with those changes
applied in order.

Before a session writes anything, `check_resume` compares the new config with the run's current
one, field by field (dotted names; the multi-crop settings count only while multi-crop is on).
Each field is in one of three classes (`field_class`):

* **free** (`FREE_FIELDS`), accepted and recorded: how the run is watched, saved, evaluated or
  spread over machines, not what it computes. What is shown, kept and watched (``name``,
  ``progress_bar``, ``log_every_steps``, ``checkpoint_every_steps``, ``keep_checkpoints``,
  ``train.max_bad_steps``, ``train.steps_ahead``); the evaluation (``eval.*``,
  ``dataset.test_split``: it comes after training and reads only the final encoder); where the
  same data set is read (or first written) from (``dataset.data_dir``, ``dataset.source_dir``);
  how the same global-batch step is spread over devices (``num_devices``, ``loss.backend``: the
  losses agree to float32 rounding; tests check 1, 2, 3 and 8 devices, 1 and 2 processes, both
  backends); input-pipeline parallelism (any field named ``num_workers``, ``worker_count`` or
  ``prefetch*``: the batch of step s is a function of (seed, s) whatever reads it).
* **consent** (`CONSENT_FIELDS`): the checkpoints stay valid, but the run's course changes from
  the restored step on. Refused unless named in ``allow`` (the command line's
  ``--allow_config_change=field,...``), then recorded:

  - the schedule's length, ``num_epochs`` and ``num_steps``. The learning-rate schedule (warmup,
    then cosine to zero at the last step) is a function of the total step count, so a new length
    moves the rate at every remaining step: extending a finished 500-step digits run
    (``configs/digits.py``, peak 0.5) to 550 steps raises the rate at step 500 from 0 to 0.0112;
    `schedule_note` states the rate at the restored step before and after. A change of these
    fields that keeps the total step count is free; a total below the restored step is always
    an error (`check_target`);
  - the optimiser's hyper-parameters (``optim.lr``, ``momentum``, ``nesterov``, ``weight_decay``,
    ``warmup_fraction``, ``trust_coefficient``), ``loss.temperature``, the augmentation's
    strengths (``augment.*`` but ``crop_size`` and ``multicrop.num_small``);
  - how precisely or in what pieces the same step is computed, ``model.dtype``,
    ``loss.precision`` (matmul precision) and ``train.micro_batch`` (gradient caching, whose
    BatchNorm statistics are per chunk): the way to fit a run on a smaller machine, with consent
    because the numbers change by more than rounding;
  - a field present in one config only (written by an older or newer mvcl) with a value:
    allowing it says the value keeps the run's behaviour. Unset (null) there, it is free: an
    unset field is the behaviour from before it existed.

* **identity**: everything else, the fields that say what the run is: model (``model.*`` but
  ``dtype``), loss (``loss.name``, ``loss.kwargs``), views (``num_views``, multi-crop), batch
  size, data set, seed, optimiser (``optim.name``), crop size. Refused with the advice to use a
  new ``--workdir``; ``allow`` cannot override it (the checkpoints of another model or optimiser
  would not restore anyway; another loss, view count, batch or data set would restore and
  silently continue another experiment under the first one's name).

The refusal (`RunIdentityError`) lists each changed field with its old and new value.
`check_evaluation` refuses, the same way, to evaluate a run with a config that differs from the
run's in more than free fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from etils import epath
from ml_collections import config_dict

from mvcl.train import storage
from mvcl.train.errors import NoRunError, RunIdentityError, WorkdirError

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"
SCHEDULE_FIELDS = ("num_epochs", "num_steps")

FREE_FIELDS = (
    "name",
    "progress_bar",
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "train.max_bad_steps",
    "train.steps_ahead",
    "eval.*",
    "dataset.test_split",
    "dataset.data_dir",
    "dataset.source_dir",
    "num_devices",
    "loss.backend",
    "*num_workers",
    "*worker_count",
    "*prefetch*",
)
CONSENT_FIELDS = (
    *SCHEDULE_FIELDS,
    "optim.lr",
    "optim.momentum",
    "optim.nesterov",
    "optim.weight_decay",
    "optim.warmup_fraction",
    "optim.trust_coefficient",
    "loss.temperature",
    "loss.precision",
    "augment.*",
    "model.dtype",
    "train.micro_batch",
)
# Identity fields inside the patterns above.
IDENTITY_EXCEPTIONS = ("augment.crop_size", "augment.multicrop.num_small")

FREE, CONSENT, IDENTITY = "free", "consent", "identity"


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()


def _matches(field: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(field, p) for p in patterns)


def field_class(field: str) -> str:
    """``"free"``, ``"consent"`` or ``"identity"`` for a dotted field name (module docstring)."""
    if field in IDENTITY_EXCEPTIONS:
        return IDENTITY
    if _matches(field, FREE_FIELDS):
        return FREE
    if _matches(field, CONSENT_FIELDS):
        return CONSENT
    return IDENTITY


def plain(config: config_dict.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
    """The config as JSON values (tuples become lists, references are resolved)."""
    if isinstance(config, config_dict.ConfigDict):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(config))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}} -> {"optim.lr": 1}``; empty mappings are kept as leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _relevant(flat: dict[str, Any]) -> dict[str, Any]:
    """Drops the multi-crop settings while multi-crop is off (they are then unused)."""
    if flat.get("augment.multicrop.num_small", 0):
        return flat
    return {
        k: v
        for k, v in flat.items()
        if not k.startswith("augment.multicrop.") or k == "augment.multicrop.num_small"
    }


@dataclasses.dataclass(frozen=True)
class Change:
    """One field that differs between the run's config and the new one."""

    field: str
    old: Any
    new: Any

    @property
    def kind(self) -> str:
        if self.old is ABSENT or self.new is ABSENT:
            other = self.new if self.old is ABSENT else self.old
            if other in (None, {}) or field_class(self.field) == FREE:
                return FREE  # a field added (or dropped) unset: the behaviour without it
            return CONSENT
        return field_class(self.field)

    def __str__(self) -> str:
        def show(value: Any) -> str:
            if self.field == "num_steps" and isinstance(value, int) and value <= 0:
                return "unset"  # (-1: num_epochs sets the length)
            return "<absent>" if value is ABSENT else json.dumps(value)

        return f"{self.field} {show(self.old)} -> {show(self.new)}"

    def record(self, how: str) -> dict[str, Any]:
        def value(v: Any) -> Any:
            return None if v is ABSENT else v

        return {
            "old": value(self.old),
            "new": value(self.new),
            "absent": [side for side, v in (("old", self.old), ("new", self.new)) if v is ABSENT],
            "accepted": how,
        }


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """The fields that differ between two plain configs, sorted by name."""
    a, b = _relevant(flatten(old)), _relevant(flatten(new))
    return [
        Change(k, a.get(k, ABSENT), b.get(k, ABSENT))
        for k in sorted(a.keys() | b.keys())
        if a.get(k, ABSENT) != b.get(k, ABSENT)
    ]


# --- the workdir --------------------------------------------------------------------------------


def check_workdir(workdir: str | os.PathLike) -> epath.Path:
    """The absolute workdir (or bucket path, ``gs://``), if it can hold this run; nothing is
    written.

    Raises:
      WorkdirError: its scheme is not supported (`mvcl.train.storage`), it is a file (or inside
        one), it cannot be written, or it holds files but no run (``config.json``): another
        program's, which a run must not mix with.
    """
    path = storage.resolve(workdir)
    if path.exists() and not path.is_dir():
        raise WorkdirError(
            f"--workdir {path} is a file; a run needs a directory (a new path, or the directory "
            "of an earlier run to resume it)"
        )
    if not storage.is_remote(path):  # (a bucket has no parent files or permission bits)
        existing = path
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise WorkdirError(
                f"--workdir {path}: {existing} is a file, so no directory can go there"
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise WorkdirError(
                f"--workdir {path}: no permission to write in {existing}; choose a directory "
                "you can write to"
            )
    if path.is_dir() and not (path / CONFIG_FILE).is_file():
        others = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
        others = [name for name in others if not name.startswith(".")]
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise WorkdirError(
                f"--workdir {path} holds files but no mvcl run (no {CONFIG_FILE}): {shown}. A "
                "run writes config.json, metrics and checkpoints/ into its workdir; give it an "
                "empty or new directory"
            )
    return path


def read_config_file(workdir: str | os.PathLike) -> dict[str, Any]:
    """The plain config a run was started with (``config.json``).

    Raises:
      NoRunError: there is no run in ``workdir``.
      WorkdirError: ``config.json`` is not a run's config.
    """
    path = epath.Path(workdir) / CONFIG_FILE
    if not epath.Path(workdir).is_dir():
        raise NoRunError(f"no run in {workdir}: the directory does not exist")
    if not path.is_file():
        raise NoRunError(f"no run in {workdir}: it has no {CONFIG_FILE}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WorkdirError(f"{path} is not a run's config: {e}") from e
    if not isinstance(config, dict) or not {"model", "loss", "optim"} <= config.keys():
        raise WorkdirError(f"{path} is not an mvcl run's config (no model, loss and optim)")
    return config


def read_history(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries of ``config_history.jsonl``, oldest first (none for a run without one)."""
    path = epath.Path(workdir) / HISTORY_FILE
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # blank, or cut short by a crash or a concurrent append
    return entries


def _set(tree: dict[str, Any], field: str, value: Any, absent: bool) -> None:
    *parents, leaf = field.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    if absent:
        tree.pop(leaf, None)
    else:
        tree[leaf] = value


def effective_config(workdir: str | os.PathLike) -> dict[str, Any]:
    """The run's current plain config: ``config.json`` with the history's changes applied."""
    config = read_config_file(workdir)
    for entry in read_history(workdir):
        for field, change in entry.get("changes", {}).items():
            _set(config, field, change["new"], "new" in change.get("absent", ()))
    return config


# --- the check ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Resume:
    """What `check_resume` found.

    Attributes:
      new_run: the workdir holds no run yet.
      changes: the accepted changes, with how each was accepted ("free" or "allowed").
      old_total_steps: the schedule's length of the run so far (None for a new run).
      old_config: the run's current plain config (None for a new run).
    """

    new_run: bool
    changes: list[tuple[Change, str]]
    old_total_steps: int | None = None
    old_config: dict[str, Any] | None = None


def close_fields(name: str, fields: Iterable[str]) -> list[str]:
    """Up to 3 of ``fields`` (dotted) closest to ``name``: same section and a similar last part,
    or the same last part in another section."""
    fields = list(fields)
    parent, _, leaf = name.rpartition(".")
    siblings = {f.rpartition(".")[2]: f for f in fields if f.rpartition(".")[0] == parent}
    close = [siblings[s] for s in difflib.get_close_matches(leaf, list(siblings), n=3, cutoff=0.6)]
    close += [f for f in fields if f.rpartition(".")[2] == leaf and f not in close]
    return close[:3]


def check_resume(
    config: config_dict.ConfigDict,
    workdir: str | os.PathLike,
    *,
    steps_per_epoch: int,
    allow: Iterable[str] = (),
) -> Resume:
    """Compares ``config`` with the run in ``workdir`` (module docstring); writes nothing.

    Args:
      config: the config of the new session.
      workdir: the run's directory (checked with `check_workdir` first).
      steps_per_epoch: of the training data at ``config.batch_size`` (for the schedule length).
      allow: fields the user allows to change (``--allow_config_change``).

    Raises:
      RunIdentityError: a change is not allowed, or ``allow`` names no field.
    """
    workdir = epath.Path(workdir)
    new = plain(config)
    if not (workdir / CONFIG_FILE).is_file():  # (`check_workdir` refused other files)
        _allowed(allow, new)
        return Resume(new_run=True, changes=[])

    old = effective_config(workdir)
    allow = _allowed(allow, old, new)
    changes = diff(old, new)

    def total(plain_config: Mapping[str, Any]) -> int:
        steps = plain_config.get("num_steps", -1)
        return steps if steps > 0 else plain_config.get("num_epochs", 0) * steps_per_epoch

    old_total, new_total = total(old), total(new)
    accepted, refused, identity = [], [], []
    for change in changes:
        kind = change.kind
        if change.field in SCHEDULE_FIELDS and old_total == new_total:
            kind = FREE  # the schedule's length does not change
        if kind == FREE:
            accepted.append((change, "free"))
        elif kind == IDENTITY:
            identity.append(change)
        elif change.field in allow:
            accepted.append((change, "allowed"))
        else:
            refused.append(change)
    if identity or refused:
        raise RunIdentityError(_refusal(workdir, identity, refused, (old_total, new_total)))
    return Resume(new_run=False, changes=accepted, old_total_steps=old_total, old_config=old)


def _allowed(allow: Iterable[str], *configs: Mapping[str, Any]) -> list[str]:
    """The ``--allow_config_change`` names, stripped; each must be a field of one of the plain
    ``configs`` (a RunIdentityError names the closest fields otherwise)."""
    allow = [a.strip() for a in allow if a.strip()]
    fields = {field for config in configs for field in flatten(config)}
    for name in allow:
        if name not in fields:
            close = close_fields(name, fields)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise RunIdentityError(
                f"--allow_config_change: {name!r} is not a config field (dotted, e.g. "
                f"optim.lr){hint}"
            )
    return allow


def _refusal(
    workdir: epath.Path, identity: list[Change], refused: list[Change], totals: tuple[int, int]
) -> str:
    parts = []
    if identity:
        parts.append(
            f"these fields define the run and cannot change within it: "
            f"{', '.join(map(str, identity))} (start a new run with another --workdir, or rerun "
            "with the run's own values)"
        )
    if refused:
        names = ",".join(c.field for c in refused)
        schedule = ""
        if any(c.field in SCHEDULE_FIELDS for c in refused):
            schedule = (
                f" (the run trains for {totals[0]} steps, this config for {totals[1]}: a new "
                "schedule length moves the learning rate)"
            )
        parts.append(
            "these fields change the run's course from its last checkpoint on"
            f"{schedule}: "
            f"{', '.join(map(str, refused))} (to continue with them, rerun with "
            f"--allow_config_change={names})"
        )
    return f"the run in {workdir} was written with another config; " + "; ".join(parts)


def check_evaluation(
    run_config: config_dict.ConfigDict | Mapping[str, Any],
    config: config_dict.ConfigDict,
    workdir: str | os.PathLike,
    *,
    allow: Iterable[str] = (),
) -> None:
    """Refuses to evaluate the run in ``workdir`` with a ``config`` that differs from the run's in
    more than free fields (unless allowed): its results would be logged under other settings.

    Raises:
      RunIdentityError: such a difference, or ``allow`` names no field.
    """
    old, new = plain(run_config), plain(config)
    allow = _allowed(allow, old, new)
    refused = [c for c in diff(old, new) if c.kind != FREE and c.field not in allow]
    if refused:
        names = ",".join(c.field for c in refused)
        raise RunIdentityError(
            f"the run in {workdir} was written with another config: "
            f"{', '.join(map(str, refused))}; its evaluation would be logged under these "
            "settings. Omit --config to evaluate with the run's own config, or rerun with "
            f"--allow_config_change={names}"
        )


def check_target(workdir: str | os.PathLike, restored_step: int, total_steps: int) -> None:
    """A run cannot train backwards: the schedule must end at or after the restored step."""
    if total_steps < restored_step:
        raise RunIdentityError(
            f"the run in {workdir} is at step {restored_step}, past the {total_steps} steps this "
            "config trains for (num_steps / num_epochs); a run cannot go back. Evaluate it with "
            f"mvcl-evaluate --workdir={workdir}, or start a new run with another --workdir"
        )


def schedule_note(
    old_config: Mapping[str, Any],
    new_config: config_dict.ConfigDict,
    old_total: int,
    new_total: int,
    step: int,
) -> str | None:
    """One sentence on what a new schedule length does at ``step`` (None if it is unchanged)."""
    if old_total == new_total:
        return None
    from mvcl.train.state import learning_rate_schedule  # (flax, optax: not for every command)

    old_lr = learning_rate_schedule(config_dict.ConfigDict(old_config), old_total)(step)
    new_lr = learning_rate_schedule(new_config, new_total)(step)
    return (
        f"the schedule's length changes from {old_total} to {new_total} steps: the learning-rate "
        f"schedule (warmup, cosine to 0 at the last step) is recomputed, so at the restored step "
        f"{step} the rate is {float(new_lr):.4g} instead of {float(old_lr):.4g}"
    )


# --- the record ---------------------------------------------------------------------------------


def start_run(workdir: str | os.PathLike, config: config_dict.ConfigDict) -> None:
    """Writes ``config.json`` of a new run (it is never rewritten afterwards)."""
    path = epath.Path(workdir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.write_text(path, config.to_json_best_effort(indent=2))


def record_session(
    workdir: str | os.PathLike,
    *,
    new_run: bool,
    step: int,
    changes: Sequence[tuple[Change, str]],
    devices: int,
    processes: int,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Appends the session's line to ``config_history.jsonl`` and returns it."""
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "event": "start" if new_run else "resume",
        "step": step,
        "devices": devices,
        "processes": processes,
        "changes": {change.field: change.record(how) for change, how in changes},
    }
    if notes:
        entry["notes"] = list(notes)
    storage.append_text(epath.Path(workdir) / HISTORY_FILE, json.dumps(entry) + "\n")
    return entry
