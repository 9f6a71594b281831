"""The documentation runs: the docstring examples (doctests) of the public modules."""

from __future__ import annotations

import doctest
import importlib
import re

import pytest

DOCTEST_MODULES = (
    "mvcl.losses._common",
    "mvcl.losses.multiview",
    "mvcl.losses.baselines",
    "mvcl.losses.two_view",
    "mvcl.losses.registry",
    "mvcl.losses.spec",
    "mvcl.backends",
    "mvcl.backends.dense",
    "mvcl.backends.streaming",
    "mvcl.backends.reductions",
    "mvcl.parallel",
    "mvcl.metrics",
)

# Public functions whose docstrings must carry a runnable example (a `>>>` line).
MUST_HAVE_EXAMPLES = {
    "mvcl.losses": (
        "mv_infonce mv_dhel pwe avg pvc multipos_infonce infonce dcl dhel kcl spec get "
        "check_finite LossSpec"
    ),
    "mvcl.backends": "get self_rows BuiltinBackend keep per_key_view sum_of",
    "mvcl.backends.dense": "dense gather",
    "mvcl.backends.streaming": "streaming streaming_self",
    "mvcl.parallel": "initialize make_mesh batch_sharding shard_loss",
    "mvcl.metrics": (
        "alignment uniformity effective_rank covariance_rank wasserstein_uniformity all_metrics"
    ),
}
LOSSES = "mv_infonce mv_dhel pwe avg pvc multipos_infonce infonce dcl dhel kcl".split()


@pytest.mark.parametrize("module", DOCTEST_MODULES)
def test_doctests(module):
    mod = importlib.import_module(module)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(mod, module) if t.examples]
    assert tests, f"{module} has no doctests"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {module} failed"


@pytest.mark.parametrize("module", sorted(MUST_HAVE_EXAMPLES))
def test_public_names_have_examples(module):
    mod = importlib.import_module(module)
    missing = [
        name
        for name in MUST_HAVE_EXAMPLES[module].split()
        if ">>>" not in (getattr(mod, name).__doc__ or "")
    ]
    assert not missing, f"{module}: no `>>>` example in the docstring of {missing}"


@pytest.mark.parametrize("name", LOSSES)
def test_losses_document_formula_and_references(name):
    doc = getattr(importlib.import_module("mvcl.losses"), name).__doc__
    assert "References:" in doc, name
    assert re.search(r"^\s+L = ", doc, re.M), f"{name}: no formula `L = ...` in the docstring"
