"""What every command-line program (the ``mvcl-*`` commands, ``experiments/*.py``) shares:
start-up, errors, signals.

    if __name__ == "__main__":
        cli.run(main)          # instead of absl.app.run(main)

`run` adds two flags, ``--verbose`` (show the traceback of an error) and
``--allow_config_change=field,...`` (`mvcl.train.run_identity`), and turns the ways a command
ends into one line and an exit status:

====================================================  =========================================
what happened                                         stderr, exit status
====================================================  =========================================
success, ``--help``                                   nothing, 0
a user error: bad flag or config field (with the      ``<program>: error: <message>``, 2
closest valid names for a misspelled
``--config.<field>``), missing config file, data set
not prepared, unusable workdir, a config that may
not continue the run, any ``ValueError`` or
``OSError``
the run stopped itself to keep what it had: it       ``<program>: error: <message>``, 3
diverged (``config.train.max_bad_steps`` non-finite
steps in a row) or a checkpoint save failed
SIGTERM: the run saved a checkpoint and stopped       the program's own message, 0
SIGINT (Ctrl-C) once: the same                        the program's own message, 130
a second signal: exit at once, without saving         ``<program>: ... exiting without saving``,
                                                      128 + signal number
====================================================  =========================================

With ``--verbose`` errors are raised as usual (traceback, status 1). Errors that are not
`mvcl.train.errors.UserError` (a ``ValueError`` or ``OSError`` from elsewhere, which may be a
bug) say that ``--verbose`` shows the traceback.

**glibc's malloc** is told to keep the memory it frees (`keep_freed_memory`), first thing in
`run`. XLA's CPU backend allocates its temporaries afresh on every call. With glibc's defaults,
large blocks are mapped from the kernel and unmapped on free, and the heap is trimmed, so every
training step touches fresh pages by the gigabyte (``time_v.txt`` of the Fashion-MNIST default
run). `keep_freed_memory` sets, through ``mallopt``: one arena, no mmap below 2 GiB, no
trimming. The process then reuses the memory of the previous step; its resident size stays at
its peak instead of rising and falling. What it changed, measured:
``experiments/results/fashion_mnist_default/README.md``. The settings must come before the XLA
backend starts its threads (later, they made no difference), so `run` applies them before
parsing flags. ``MVCL_SYSTEM_MALLOC=1`` keeps glibc's defaults; on other C libraries nothing
happens. Accelerator memory is XLA's own allocator's and is not affected.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
from absl import app, flags, logging
from ml_collections import config_dict

from mvcl import parallel
from mvcl.train import noise, run_identity, signals
from mvcl.train.errors import RunStoppedError, UserError

__all__ = [
    "UserError",
    "allowed_config_changes",
    "keep_freed_memory",
    "run",
    "show_in_help",
    "start",
]

FLAGS = flags.FLAGS
VERBOSE = "verbose"
ALLOW_CONFIG_CHANGE = "allow_config_change"
HELP_FLAGS = ("help", "helpshort", "helpfull", "helpxml", "?")
USER_ERRORS = (UserError, app.UsageError, ValueError, OSError)
USAGE_STATUS = 2
STOPPED_STATUS = 3

# glibc's malloc (`keep_freed_memory`): mallopt's parameters (glibc's malloc.h), the size
# below which blocks come from the heap and the heap is not trimmed (2 GiB), and the opt-out.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
KEEP = 2**31 - 1
OPT_OUT = "MVCL_SYSTEM_MALLOC"


def keep_freed_memory() -> bool:
    """Tells glibc's malloc to keep freed memory (module docstring); True if glibc took all of
    the settings, False where ``MVCL_SYSTEM_MALLOC`` opts out or the C library is not glibc."""
    if os.environ.get(OPT_OUT, "") not in ("", "0") or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    settings = ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, KEEP), (M_TRIM_THRESHOLD, KEEP))
    return all([mallopt(param, value) == 1 for param, value in settings])


def start(argv: Sequence[str]) -> None:
    """Rejects stray arguments, quiets orbax's INFO logs and starts ``jax.distributed`` when the
    program is one of several processes.

    Call first in an ``absl.app`` main, before anything touches a device: `mvcl.parallel.initialize`
    joins the processes that ``MVCL_COORDINATOR``, ``MVCL_NUM_PROCESSES`` and ``MVCL_PROCESS_ID``
    name or, without them, that JAX's cluster detection finds (``mpirun``, ``srun``, a Cloud TPU
    pod slice; ``MVCL_CLUSTER_DETECTION`` picks the method, ``none`` turns it off), and process 0
    prints one line: ``mvcl: P processes, D devices (L per process), cluster found by ...``. A
    single process starts nothing and prints nothing. ``--verbosity`` given on the command line
    wins.
    """
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS["verbosity"].present:  # orbax logs every save at INFO
        logging.set_verbosity(logging.WARNING)
    noise.install()
    try:
        found_by = parallel.initialize()
    except ValueError as e:  # the MVCL_* variables or the detection method: the user's to fix
        raise UserError(str(e)) from e
    if found_by is not None and jax.process_index() == 0:
        print(parallel.startup_line(found_by), flush=True)


def allowed_config_changes() -> list[str]:
    """The ``--allow_config_change`` fields of the program running (none outside `run`)."""
    if ALLOW_CONFIG_CHANGE in FLAGS and FLAGS.is_parsed():
        return list(FLAGS[ALLOW_CONFIG_CHANGE].value or [])
    return []


def show_in_help(*holders: flags.FlagHolder) -> None:
    """Lists the flags of ``holders`` under the program's name in ``--help``.

    absl's ``--help`` shows the key flags of the main module (``sys.argv[0]``) only; a console
    script's flags are defined in its module (``mvcl.pretrain``, ...), not in the main module, so
    a command calls this (before `run`) with its own flags."""
    main_module = sys.argv[0] if sys.argv else ""
    for holder in holders:
        FLAGS.register_key_flag_for_module(main_module, FLAGS[holder.name])


def run(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> None:
    """``absl.app.run(main)`` with the flags, messages and exit statuses of the module docstring.

    First, before any device is touched, glibc's malloc is told to keep freed memory
    (`keep_freed_memory`; ``MVCL_SYSTEM_MALLOC=1`` opts out)."""
    keep_freed_memory()
    _define_flags()
    argv = list(sys.argv if argv is None else argv)
    app.run(_guarded(main), argv=argv, flags_parser=_parse_flags)


def _define_flags() -> None:
    if VERBOSE not in FLAGS:
        flags.DEFINE_bool(VERBOSE, False, "Show the traceback of errors instead of one line.")
    if ALLOW_CONFIG_CHANGE not in FLAGS:
        flags.DEFINE_list(
            ALLOW_CONFIG_CHANGE,
            [],
            "Config fields (dotted, comma-separated) a rerun in an existing workdir may change "
            "although they change the run's course, e.g. num_epochs,optim.lr (see "
            "mvcl.train.run_identity).",
        )
    main_module = sys.argv[0] if sys.argv else ""
    for name in (VERBOSE, ALLOW_CONFIG_CHANGE):  # listed by --help with the program's own flags
        FLAGS.register_key_flag_for_module(main_module, FLAGS[name])


def _program() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "mvcl"


def _fail(message: str, *, hint: bool = False, status: int = USAGE_STATUS) -> None:
    suffix = " (--verbose shows the traceback)" if hint else ""
    print(f"{_program()}: error: {message}{suffix}", file=sys.stderr)
    sys.exit(status)


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (for a wrapped traceback, its first and last line)."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if "Traceback (most recent call last):" in text:
        head = lines[0].replace("Error whilst parsing config file:", "").strip()
        return f"{head} {lines[-1]}".strip()
    if "Failed loading config file" in lines[0]:
        return f"cannot load the config file: {lines[-1]}"
    return " ".join(lines)


def _asks_help(argv: Sequence[str]) -> bool:
    return any(a.lstrip("-").split("=", 1)[0] in HELP_FLAGS for a in argv[1:] if a.startswith("-"))


def _parse_flags(argv: list[str]) -> list[str]:
    """``FLAGS(argv)``, with one line for every error and status 0 for ``--help``."""
    verbose = any(a.lstrip("-") in (VERBOSE, f"{VERBOSE}=true") for a in argv[1:])
    try:
        remaining = FLAGS(argv)
    except SystemExit as e:  # absl's --help exits with status 1
        if _asks_help(argv) and e.code == 1:
            raise SystemExit(0) from None
        raise
    except Exception as e:  # (every parse error is the user's)
        if verbose:
            raise
        _fail(_unknown_config_field(argv) or one_line(e))
    for name in list(FLAGS):
        value = FLAGS[name].value
        if type(value).__name__ == "_ErrorConfig":  # ml_collections defers a config's load error
            error = object.__getattribute__(value, "_error")
            if verbose:
                raise error
            _fail(f"--{name}: {one_line(error)}")
    return remaining


def _config_fields(config: config_dict.ConfigDict) -> list[str]:
    return sorted(run_identity.flatten(run_identity.plain(config)))


def suggest_fields(field: str, fields: Iterable[str], prefix: str = "") -> str:
    """``"did you mean <prefix>a or <prefix>b?"`` for the closest of ``fields`` to ``field``,
    else the fields of the nearest existing parent section of ``field``."""
    fields = list(fields)

    def names(found: Iterable[str]) -> list[str]:
        return [prefix + f for f in found]

    close = run_identity.close_fields(field, fields)
    if close:
        shown = names(close)
        return (
            "did you mean "
            + (shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}")
            + "?"
        )
    parent = field
    while parent:
        parent = parent.rpartition(".")[0]
        siblings = [f for f in fields if f.startswith(parent + ".")] if parent else []
        if siblings:
            return f"the fields of {prefix}{parent} are {', '.join(names(siblings))}"
    top = sorted({f.split(".", 1)[0] for f in fields})
    return f"the top-level fields are {', '.join(names(top))}"


def _unknown_config_field(argv: Sequence[str]) -> str | None:
    """For ``--config.<path>=...`` naming no field of the loaded config: a line that names the
    closest valid fields; None if every such argument names a field."""
    for arg in argv[1:]:
        if not arg.startswith("-"):
            continue
        name = arg.lstrip("-").split("=", 1)[0]
        head, dot, path = name.partition(".")
        if not dot or head not in FLAGS:
            continue
        config = _loaded_config(head, argv)
        if config is None:
            continue
        fields = _config_fields(config)
        if path in fields:
            continue
        return f"--{name}: no such config field; {suggest_fields(path, fields, f'--{head}.')}"
    return None


def _loaded_config(name: str, argv: Sequence[str]) -> config_dict.ConfigDict | None:
    """The ConfigDict of flag ``--name``: its value if parsed, else its argument parsed again
    (a failed override can stop absl before it sets the config flag)."""
    value = FLAGS[name].value
    if isinstance(value, config_dict.ConfigDict):
        return value
    raw = [a.split("=", 1)[1] for a in argv[1:] if a.lstrip("-").startswith(f"{name}=")]
    if not raw:
        return None
    try:
        value = FLAGS[name].parser.parse(raw[-1])
    except Exception:  # (the caller then reports the original error)
        return None
    return value if isinstance(value, config_dict.ConfigDict) else None


def _signal_status(name: str | None) -> int:
    """0 after SIGTERM (handled preemption), 130 after SIGINT, as the module docstring says."""
    if name == "SIGINT":
        return 128 + signal.SIGINT
    return 0


def _guarded(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    def guarded(argv: list[str]) -> Any:
        verbose = bool(FLAGS[VERBOSE].value)
        if not verbose:
            noise.quiet_save_failures()
        with signals.handling():
            try:
                status = main(argv)
            except signals.Interrupted as e:
                print(f"{_program()}: {e.signame}: stopped (nothing to save).", file=sys.stderr)
                return _signal_status(e.signame)
            except KeyboardInterrupt:
                if verbose:
                    raise
                received = signals.all_received()
                last = received[-1] if received else "SIGINT"
                print(
                    f"{_program()}: {last} again: exiting without saving (the checkpoints on "
                    "disk are kept).",
                    file=sys.stderr,
                )
                return 128 + signal.Signals[last].value
            except USER_ERRORS as e:
                if verbose:
                    raise
                _fail(
                    one_line(e),
                    hint=not isinstance(e, (UserError, app.UsageError)),
                    status=STOPPED_STATUS if isinstance(e, RunStoppedError) else USAGE_STATUS,
                )
            received = signals.received()
        return _signal_status(received) if received is not None else status

    return guarded
