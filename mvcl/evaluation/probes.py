"""Linear probes: multinomial logistic regression on frozen features, scored on the test split.

The probe minimises mean cross-entropy + ``½ λ ||W||²`` (the bias is not penalised) on the
features standardised with the train mean and standard deviation.
`minibatch_probe_accuracy`, the evaluation's probe, fits it by minibatch Adam (optax) with a
cosine-decayed learning rate (``config.eval.probe_epochs``, ``probe_batch_size``, ``probe_lr``,
``probe_weight_decay``), the minibatches sharded over the mesh. `linear_probe_accuracy` fits the
same objective by full-batch L-BFGS: a reference for small feature sets (the two are compared in
``experiments/results/probe_comparison.json``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mvcl import parallel
from mvcl.evaluation._sharding import AXIS, _global_array, _host, _round_up

_PROBE_SEED = 0  # minibatch order of the linear probe


def _standardizer(train_x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (+ 1e-6) of the rows of ``train_x``, float64, chunk by chunk."""
    total = np.zeros(train_x.shape[1])
    squares = np.zeros(train_x.shape[1])
    for start in range(0, len(train_x), chunk):
        x = train_x[start : start + chunk].astype(np.float64)
        total += x.sum(0)
        squares += (x * x).sum(0)
    mean = total / len(train_x)
    var = np.maximum(squares / len(train_x) - mean * mean, 0.0)
    return mean, np.sqrt(var) + 1e-6


def _objective(params, x, y, weight_decay):
    logits = x @ params["w"] + params["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + 0.5 * weight_decay * jnp.sum(params["w"] ** 2)


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit_logistic(x, y, *, num_classes: int, weight_decay: float, steps: int):
    """Weights (F, C) and bias (C,) minimising mean cross-entropy + ½ λ ||W||² by L-BFGS."""
    params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
    objective = functools.partial(_objective, x=x, y=y, weight_decay=weight_decay)
    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry, _):
        p, state = carry
        value, grad = value_and_grad(p, state=state)
        updates, state = solver.update(grad, state, p, value=value, grad=grad, value_fn=objective)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, solver.init(params)), length=steps)
    return params


def linear_probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    weight_decay: float = 1e-4,
    steps: int = 300,
) -> float:
    """Test accuracy of the L2-regularised logistic regression fitted by full-batch L-BFGS.

    The whole standardised train set is on one device: for small feature sets (the reference
    of `minibatch_probe_accuracy`).

    Args:
      train_x: (M, F) train features; both sets are standardised with the train mean and std.
      train_y: (M,) integer labels in [0, num_classes).
      test_x: (M', F) test features.
      test_y: (M',) their labels.
      num_classes: number of classes C.
      weight_decay: λ of the penalty ``½ λ ||W||²`` (the bias is not penalised).
      steps: L-BFGS iterations (each with a zoom line search).
    """
    mean, std = _standardizer(train_x)
    params = _fit_logistic(
        jnp.asarray((train_x - mean) / std, jnp.float32),
        jnp.asarray(train_y),
        num_classes=num_classes,
        weight_decay=weight_decay,
        steps=steps,
    )
    logits = jnp.asarray((test_x - mean) / std, jnp.float32) @ params["w"] + params["b"]
    return float(np.mean(np.asarray(jnp.argmax(logits, -1)) == test_y))


def minibatch_probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    weight_decay: float = 1e-4,
    epochs: int = 100,
    batch_size: int = 256,
    learning_rate: float = 0.01,
    mesh: jax.sharding.Mesh | None = None,
    seed: int = _PROBE_SEED,
) -> float:
    """Test accuracy of the L2-regularised logistic regression fitted by minibatch Adam.

    The objective is that of `linear_probe_accuracy` (mean cross-entropy + ``½ λ ||W||²`` on
    features standardised with the train mean and std); Adam's learning rate decays from
    ``learning_rate`` to 0 by a cosine over ``epochs`` epochs of ``len(train_x) // batch_size``
    steps (epoch e visits the rows in the order ``default_rng([seed, e]).permutation``; the
    remainder is dropped). Features stay on the host (any float dtype); each minibatch is
    standardised on the device, sharded over ``mesh`` (default: every device).

    Args:
      train_x: (M, F) train features.
      train_y: (M,) their labels in [0, num_classes).
      test_x: (M', F) test features.
      test_y: (M',) their labels.
      num_classes: number of classes C.
      weight_decay: λ of ``½ λ ||W||²`` (the bias is not penalised).
      epochs: passes over the train features.
      batch_size: rows per minibatch (rounded down to a multiple of the mesh size and capped at
        ``len(train_x)``).
      learning_rate: Adam's peak learning rate.
      mesh: a 1-D mesh over ``parallel.DEFAULT_AXIS``.
      seed: the minibatch order.
    """
    if epochs < 1 or batch_size < 1 or not learning_rate > 0:
        raise ValueError(
            "config.eval.probe_epochs and probe_batch_size must be >= 1 and probe_lr > 0, got "
            f"{epochs}, {batch_size} and {learning_rate}"
        )
    mesh = parallel.make_mesh() if mesh is None else mesh
    m = len(train_x)
    batch_size = min(batch_size, m) // mesh.size * mesh.size
    if batch_size < 1:
        raise ValueError(f"{m} train examples cannot fill a minibatch over {mesh.size} devices")
    steps_per_epoch = m // batch_size
    mean, std = _standardizer(train_x)
    replicated = NamedSharding(mesh, P())
    mean, inv_std = jax.device_put((np.float32(mean), np.float32(1.0 / std)), replicated)
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch))
    params = {
        "w": jnp.zeros((train_x.shape[1], num_classes)),
        "b": jnp.zeros((num_classes,)),
    }
    params = jax.device_put(params, replicated)
    opt_state = jax.jit(tx.init, out_shardings=replicated)(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1), out_shardings=replicated)
    def step(params, opt_state, x, y):
        x = (x.astype(jnp.float32) - mean) * inv_std
        grads = jax.grad(_objective)(params, x, y, weight_decay)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @functools.partial(jax.jit, out_shardings=replicated)
    def predict(params, x):
        x = (x.astype(jnp.float32) - mean) * inv_std
        return jnp.argmax(x @ params["w"] + params["b"], axis=-1)

    rows = P(AXIS)
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(m)
        for b in range(steps_per_epoch):
            idx = np.sort(order[b * batch_size : (b + 1) * batch_size])  # sorted: faster gather
            x = _global_array(mesh, np.ascontiguousarray(train_x[idx]), rows)
            y = _global_array(mesh, np.asarray(train_y[idx], np.int32), rows)
            params, opt_state = step(params, opt_state, x, y)

    correct = 0
    chunk = _round_up(max(batch_size, 1024), mesh.size)
    for start in range(0, len(test_x), chunk):
        x = test_x[start : start + chunk]
        count = len(x)
        x = np.concatenate([x, np.zeros((chunk - count, x.shape[1]), x.dtype)])
        predicted = _host(predict(params, _global_array(mesh, x, rows)))[:count]
        correct += int(np.sum(predicted == test_y[start : start + count]))
    return correct / len(test_x)
