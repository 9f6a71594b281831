"""One encoder per view (or per group of views), projected into one space: multimodal contrast.

The losses take any V aligned views of N instances as ``z`` of shape (N, V, D). When the views
are different modalities (an image, its caption, its audio; here: an image, its gradient field,
its 1-D projection profile) each needs its own encoder; `PerViewModel` runs them and stacks their
projections::

    model = PerViewModel(
        encoders=(ImageCNN(), ProfileMLP()),          # any flax modules: x -> (B, F_g)
        heads=(ProjectionHead(out_dim=64), ProjectionHead(out_dim=64)),   # into a common D
        views=((0,), (1,)),                           # view indices of each group
        names=("image", "profile"),
    )
    features, z = model.apply(variables, [images, profiles], train=False)   # z: (N, 2, 64)
    loss = mvcl.losses.get("mv_dhel")(z, temperature=0.5)

* **Groups.** ``views[g]`` lists the views encoder ``g`` sees; the groups partition
  ``range(V)``. A group of several views shares its encoder and head (the shared-backbone setup
  is one group of all V views); its views run through the encoder in one batch, so every
  BatchNorm normalises the group's views together (with ``axis_name``: over the global batch).
* **Inputs.** A sequence of V arrays (N, ...), one per view, whose shapes may differ between
  groups; or one array (N, V, ...) when every view has the same shape (the trainer's image views).
* **Outputs.** ``(features, z)``: ``features`` a tuple of V float32 arrays (N, F_v), each view's
  encoder output, and ``z`` the float32 (N, V, D) projections, view ``v`` at ``z[:, v]``.
* **Common D.** ``heads[g]`` projects group ``g`` into the shared space (`ProjectionHead`, or any
  module ``(h, train) -> (B, D)``); ``None`` uses the encoder's output as it is. Every view must
  end at the same D, else a ``ValueError`` names the groups, their views and their widths.

Each encoder and head is called as ``module(x, train=train)``, or ``module(x)`` when its
``__call__`` takes no ``train`` (e.g. ``nn.Dense``). Parameters live under
``encoders_<g>`` and ``heads_<g>``; `encode` applies one group alone (evaluation, retrieval).

`from_config` builds the model of ``config.model.per_view`` for the trainer, where every view is
an augmented image crop and a parameter-free input transform turns it into the group's modality
before its encoder. The transforms are given to it by name (``inputs``; the trainer passes
`mvcl.data.modalities.MODALITIES`): the model layer does not import the data layer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mvcl.models.heads import ProjectionHead
from mvcl.models.mlp import MLP
from mvcl.models.resnet import ResNet18, ResNet50
from mvcl.models.small_cnn import SmallCNN

ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": ResNet18,
    "resnet50": ResNet50,
    "small_cnn": SmallCNN,
    "mlp": MLP,
}
SPEC_FIELDS = ("name", "views", "input", "encoder", "kwargs", "head", "proj_dim", "proj_hidden_dim")


def _takes_train(module: nn.Module) -> bool:
    parameters = inspect.signature(type(module).__call__).parameters
    return "train" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def _call(module: nn.Module, x: jax.Array, train: bool) -> jax.Array:
    """``module(x, train=train)``, or ``module(x)`` if its ``__call__`` has no ``train``."""
    return module(x, train=train) if _takes_train(module) else module(x)


class Preprocessed(nn.Module):
    """``encoder(transform(x), train=train)``: a fixed, parameter-free input transform first."""

    transform: Callable[[jax.Array], jax.Array]
    encoder: nn.Module

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return self.encoder(self.transform(x), train=train)


def check_views(views: Sequence[Sequence[int]], num_views: int, where: str = "views") -> None:
    """Raises ``ValueError`` unless the groups ``views`` partition ``range(num_views)``."""
    flat = [v for group in views for v in group]
    if any(not group for group in views):
        raise ValueError(f"{where}: every group needs at least one view, got {list(views)}")
    missing = sorted(set(range(num_views)) - set(flat))
    repeated = sorted({v for v in flat if flat.count(v) > 1})
    outside = sorted({v for v in flat if not 0 <= v < num_views})
    if missing or repeated or outside:
        problems = [
            f"{label} {values}"
            for label, values in (
                ("missing", missing),
                ("in two groups", repeated),
                (f"outside 0..{num_views - 1}", outside),
            )
            if values
        ]
        raise ValueError(
            f"{where}: the groups {[list(g) for g in views]} must give each of the {num_views} "
            f"views to exactly one encoder; views {'; '.join(problems)}"
        )


class PerViewModel(nn.Module):
    """Encoder and projection head per group of views; ``(inputs, train) -> (features, z)``.

    Attributes:
      encoders: one flax module per group, ``(x[, train]) -> (B, F_g)``.
      heads: one module per group, ``(h[, train]) -> (B, D)``, or None (no projection).
      views: the view indices of each group (a partition of ``range(V)``).
      names: a name per group, for messages and reports (default ``group<g>``).
    """

    encoders: tuple[nn.Module, ...]
    heads: tuple[nn.Module | None, ...]
    views: tuple[tuple[int, ...], ...]
    names: tuple[str, ...] | None = None

    @property
    def num_views(self) -> int:
        return sum(len(group) for group in self.views)

    @property
    def group_names(self) -> tuple[str, ...]:
        if self.names:
            return tuple(self.names)
        return tuple(f"group{g}" for g in range(len(self.views)))

    def _check_structure(self) -> None:
        counts = {
            "encoders": len(self.encoders),
            "heads": len(self.heads),
            "views": len(self.views),
        }
        if self.names:
            counts["names"] = len(self.names)
        if len(set(counts.values())) != 1:
            raise ValueError(f"PerViewModel needs one entry per group in each of {counts}")
        check_views(self.views, self.num_views, "PerViewModel.views")

    def encode(self, x: jax.Array, group: int, train: bool) -> tuple[jax.Array, jax.Array]:
        """Group ``group``'s encoder (and head) on a batch x: float32 (B, F) and (B, D)."""
        h = _call(self.encoders[group], x, train)
        if h.ndim != 2:
            raise ValueError(
                f"the encoder of group {self.group_names[group]!r} (views "
                f"{list(self.views[group])}) must return (batch, features), got shape {h.shape}"
            )
        head = self.heads[group]
        z = h if head is None else _call(head, h, train)
        return h.astype(jnp.float32), z.astype(jnp.float32)

    def __call__(
        self, inputs: jax.Array | Sequence[jax.Array], train: bool
    ) -> tuple[tuple[jax.Array, ...], jax.Array]:
        """Per-view features (V arrays (N, F_v)) and the stacked projections (N, V, D)."""
        self._check_structure()
        per_view = self._split(inputs)
        n = per_view[0].shape[0]
        features: list[Any] = [None] * self.num_views
        projections: list[Any] = [None] * self.num_views
        for g, group in enumerate(self.views):
            shapes = {v: per_view[v].shape for v in group}
            if len(set(shapes.values())) > 1:
                raise ValueError(
                    f"the views of group {self.group_names[g]!r} share an encoder and must have "
                    f"one shape, got {shapes}"
                )
            h, z = self.encode(jnp.concatenate([per_view[v] for v in group]), g, train)
            for k, v in enumerate(group):
                features[v], projections[v] = h[k * n : (k + 1) * n], z[k * n : (k + 1) * n]
        self._check_common_dim(projections)
        return tuple(features), jnp.stack(projections, axis=1)

    def _split(self, inputs: jax.Array | Sequence[jax.Array]) -> list[jax.Array]:
        num_views = self.num_views
        if isinstance(inputs, (jax.Array, jnp.ndarray)) or hasattr(inputs, "shape"):
            if inputs.ndim < 2 or inputs.shape[1] != num_views:
                raise ValueError(
                    f"PerViewModel takes (N, V={num_views}, ...) views or a list of {num_views} "
                    f"arrays (N, ...), got an array of shape {inputs.shape}"
                )
            return [inputs[:, v] for v in range(num_views)]
        inputs = list(inputs)
        if len(inputs) != num_views:
            raise ValueError(
                f"PerViewModel has {num_views} views ({self._describe()}), got {len(inputs)} inputs"
            )
        sizes = {v: x.shape[0] for v, x in enumerate(inputs)}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"every view needs the same number of instances N, got {sizes}")
        return inputs

    def _check_common_dim(self, projections: Sequence[jax.Array]) -> None:
        dims = [projections[group[0]].shape[-1] for group in self.views]
        if len(set(dims)) == 1:
            return
        described = ", ".join(
            f"{name!r} (views {list(group)}) gives {dim} "
            + ("from its encoder, with no projection head" if head is None else "from its head")
            for name, group, dim, head in zip(self.group_names, self.views, dims, self.heads)
        )
        raise ValueError(
            "per-view embeddings must share one dimension D to be stacked as (N, V, D), but "
            f"{described}. Give every group a projection head to the same D (in a config: "
            "head=True and one proj_dim in every config.model.per_view entry), or use encoders "
            "of equal output width."
        )

    def _describe(self) -> str:
        return ", ".join(f"{n}: {list(g)}" for n, g in zip(self.group_names, self.views))


# --- from a config ------------------------------------------------------------------------------


def _spec_error(i: int, field: str, message: str) -> ValueError:
    return ValueError(f"config.model.per_view[{i}].{field}: {message}")


def from_config(
    config: Any,
    axis_name: str | None = None,
    inputs: Mapping[str, Callable[[jax.Array], jax.Array]] | None = None,
) -> PerViewModel:
    """The `PerViewModel` of ``config.model.per_view``, a list of one mapping per group:

    * ``views``: the view indices of the group (required); the groups partition
      ``range(config.num_views)``.
    * ``name``: the group's name (default ``group<i>``; unique).
    * ``input``: the name in ``inputs`` of the transform its views go through before the encoder
      (default "image": the views as they are). ``inputs`` maps names to parameter-free
      functions of a (B, H, W, C) batch of views (the trainer passes
      `mvcl.data.modalities.MODALITIES`: "image", "gradient", "profile"); None knows "image"
      alone.
    * ``encoder``: one of `ENCODERS` (default "small_cnn"); ``kwargs``: its arguments.
    * ``head``: a `ProjectionHead` to ``proj_dim`` (default True; False uses the encoder output);
      ``proj_dim`` / ``proj_hidden_dim`` default to ``config.model``'s.

    ``config.model.dtype`` is every module's compute dtype. Raises ``ValueError`` naming the
    field of the first bad entry. Multi-crop is refused: its small crops have no encoder.
    """
    specs = config.model.per_view
    if isinstance(specs, Mapping) or not isinstance(specs, Sequence) or not specs:
        raise ValueError(
            "config.model.per_view: must be a non-empty list of per-group mappings (or None for "
            f"one shared backbone), got {specs!r}"
        )
    if config.augment.multicrop.num_small:
        raise ValueError(
            "config.model.per_view: multi-crop small crops have no per-view encoder; set "
            f"config.augment.multicrop.num_small = 0 (got {config.augment.multicrop.num_small})"
        )
    dtype = jnp.dtype(config.model.dtype)
    inputs = {"image": None, **(inputs or {})}
    encoders, heads, views, names = [], [], [], []
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping):
            raise ValueError(f"config.model.per_view[{i}]: must be a mapping, got {spec!r}")
        unknown = sorted(set(spec) - set(SPEC_FIELDS))
        if unknown:
            raise _spec_error(i, unknown[0], f"unknown field; known: {', '.join(SPEC_FIELDS)}")
        if "views" not in spec:
            raise _spec_error(i, "views", "required: the view indices this encoder sees")
        group = spec["views"]
        if not isinstance(group, Sequence) or not all(isinstance(v, int) for v in group):
            raise _spec_error(i, "views", f"must be a list of view indices, got {group!r}")
        encoder_name = spec.get("encoder", "small_cnn")
        if encoder_name not in ENCODERS:
            raise _spec_error(
                i, "encoder", f"unknown encoder {encoder_name!r}; known: {', '.join(ENCODERS)}"
            )
        input_name = spec.get("input", "image")
        if input_name not in inputs:
            raise _spec_error(
                i, "input", f"unknown modality {input_name!r}; known: {', '.join(inputs)}"
            )
        # JSON (a saved config) gives lists; modules are hashed, so take tuples.
        kwargs = {
            k: tuple(v) if isinstance(v, list) else v for k, v in (spec.get("kwargs") or {}).items()
        }
        encoder = ENCODERS[encoder_name](dtype=dtype, axis_name=axis_name, **kwargs)
        transform = inputs[input_name]
        # "image" is the view itself: its encoder sees it directly (as its parameters are named).
        encoders.append(encoder if input_name == "image" else Preprocessed(transform, encoder))
        if spec.get("head", True):
            hidden = spec.get("proj_hidden_dim", config.model.proj_hidden_dim)
            out_dim = spec.get("proj_dim", config.model.proj_dim)
            heads.append(
                ProjectionHead(hidden_dim=hidden, out_dim=out_dim, dtype=dtype, axis_name=axis_name)
            )
        else:
            heads.append(None)
        views.append(tuple(group))
        names.append(str(spec.get("name", f"group{i}")))
    if len(set(names)) != len(names):
        raise ValueError(f"config.model.per_view: group names must be unique, got {names}")
    check_views(views, config.num_views, "config.model.per_view[*].views")
    return PerViewModel(
        encoders=tuple(encoders), heads=tuple(heads), views=tuple(views), names=tuple(names)
    )


def group_inputs(config: Any) -> tuple[str, ...]:
    """The ``input`` modality name of every group of ``config.model.per_view``."""
    return tuple(spec.get("input", "image") for spec in config.model.per_view)
