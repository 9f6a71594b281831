r"""A scaling sweep: losses x views x batch sizes (x seeds), one pretraining run + evaluation each.

    mvcl-sweep --config=sweeps/digits_claims \
        --workdir=workdirs/sweeps/digits_claims --outdir=experiments/results/digits_claims
    mvcl-sweep --config=sweeps/cifar10:seeds=3 \
        --config.overrides.num_epochs=100

Cells run one after another with the same budget (``config.overrides``), each in
``<workdir>/cells/<cell>/``. A cell is done when its ``result.json`` exists: rerunning the same
command skips done cells and resumes an interrupted one from its checkpoints. With ``--outdir``
every done cell's ``result.json`` is also kept in ``<outdir>/cells/<cell>/``, and a cell found
there is done too: commit those files, and the sweep continues on another machine (a fresh
workdir) where it stopped, less the cell that was running. SIGTERM stops the
sweep after the running cell saved a checkpoint. When every cell is done the CSV, markdown table,
plots, loss costs and embeddings are written to ``--outdir`` (default: the workdir); see
`mvcl.studies.outputs`. ``--report`` writes them from the cells done so far without running any
(for a sweep that runs across sessions; the title says how many cells are done), ``--list``
prints the cells and exits.

Several processes: launch them with ``mpirun``, ``srun`` or on every worker of a TPU pod slice
(JAX detects the cluster), or set ``MVCL_COORDINATOR=host:port``, ``MVCL_NUM_PROCESSES`` and
``MVCL_PROCESS_ID`` in each (see ``mvcl.parallel.initialize``); the workdir must be shared.
"""

import os

from absl import flags

from mvcl import configs, studies
from mvcl.train import cli

_CONFIG = configs.define_flag(
    "config", None, "Sweep config[:args], e.g. sweeps/digits_claims, or a .py file."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory; default workdirs/sweeps/<name>.")
_OUTDIR = flags.DEFINE_string("outdir", None, "Where the tables and plots go; default: workdir.")
_LIST = flags.DEFINE_bool("list", False, "Print the cells and their status, then exit.")
_REPORT = flags.DEFINE_bool(
    "report", False, "Write the tables and plots of the cells done so far, run nothing, exit."
)
flags.mark_flags_as_required(["config"])


def main(argv):
    cli.start(argv)
    sweep = _CONFIG.value
    workdir = _WORKDIR.value or os.path.join("workdirs", "sweeps", sweep.name)
    if _LIST.value:
        for cell in studies.cells(sweep):
            done = any(
                studies.runner.read_result(studies.runner.cell_dir(d, cell)) is not None
                for d in filter(None, (workdir, _OUTDIR.value))
            )
            print(f"{cell.name:<32} {'done' if done else 'to run'}")
        return
    if _REPORT.value:
        results = studies.runner.done_results(sweep, workdir, archive=_OUTDIR.value)
        if not results:
            raise cli.UserError(
                f"no cell of {sweep.name} is done yet in {workdir}"
                + (f" or {_OUTDIR.value}" if _OUTDIR.value else "")
                + ": run the sweep first (without --report)"
            )
        total = len(studies.cells(sweep))
        outdir = _OUTDIR.value or workdir
        written = studies.write_outputs(sweep, results, workdir, outdir, cells=total)
        print(f"Report of {len(results)} of {total} cells written:")
        print("\n".join(map(str, written)))
        return
    run = studies.run_sweep(sweep, workdir, archive=_OUTDIR.value)
    if not run.complete:
        total = len(studies.cells(sweep))
        print(f"Stopped with {len(run.results)} of {total} cells done; rerun to resume.")
        return
    import jax

    if jax.process_index() == 0:
        written = studies.write_outputs(sweep, run.results, workdir, _OUTDIR.value or workdir)
        print("\n".join(["Written:", *map(str, written)]))


def run() -> None:
    """The console script ``mvcl-sweep`` (also ``python -m mvcl.sweep``)."""
    cli.show_in_help(_CONFIG, _WORKDIR, _OUTDIR, _LIST, _REPORT)
    cli.run(main)


if __name__ == "__main__":
    run()
