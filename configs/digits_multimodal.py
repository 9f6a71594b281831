"""Digits as three aligned "modalities", one encoder each: image, gradient field, 1-D profile.

    mvcl-pretrain --config=digits_multimodal            # mv_dhel
    mvcl-pretrain --config=digits_multimodal:loss=mv_infonce
    python experiments/multimodal_digits.py       # both losses, baselines, retrieval, probes

Everything of the `digits` config (data, augmentation, optimiser) but the model: every image gives
V = 3 augmented crops, and crop ``v`` is seen through modality ``v`` (`mvcl.data.modalities`):

  view 0  "image"     the 8x8 crop               -> small CNN  (128 features) -> head -> 128
  view 1  "gradient"  its x/y gradient field     -> small CNN  (128 features) -> head -> 128
  view 2  "profile"   row + column means (16,)   -> MLP 64-64  (64 features)  -> head -> 128

Each encoder has its own projection head into the common D = ``config.model.proj_dim``; the loss
sees (N, 3, D) as with one shared backbone (``config.model.per_view``).

Arguments (besides the common ones of ``configs/common.py``; ``width`` scales every encoder):

  modality=M   "all" (default: the three modalities above, needs views=3), or one of "image",
               "gradient", "profile": the single-modality baseline, V views of that modality
               through one shared encoder and head (the same encoder as in the multimodal model).
"""

from __future__ import annotations

from ml_collections import config_dict

from mvcl.configs import common, digits

MODALITIES = ("image", "gradient", "profile")


def encoder_spec(modality: str, width: float) -> dict:
    """The encoder of one modality: a small CNN for the 2-D ones, an MLP for the profile."""
    if modality == "profile":
        return {"encoder": "mlp", "kwargs": {"hidden": (64, 64), "width": width}}
    return {"encoder": "small_cnn", "kwargs": {"width": width}}


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    args = common.parse_arg(arg, **common.common_args(views=3), modality="all")
    config = digits.get_config()
    config = common.apply_args(config, args)
    if args.modality == "all":
        if args.views != len(MODALITIES):
            raise ValueError(
                f"config argument views={args.views}: modality=all gives one view per modality, "
                f"views={len(MODALITIES)} (or pick one modality for a single-modality run)"
            )
        config.model.per_view = [
            {"name": m, "views": [v], "input": m, **encoder_spec(m, args.width)}
            for v, m in enumerate(MODALITIES)
        ]
    elif args.modality in MODALITIES:
        config.model.per_view = [
            {
                "name": args.modality,
                "views": list(range(args.views)),
                "input": args.modality,
                **encoder_spec(args.modality, args.width),
            }
        ]
    else:
        raise ValueError(
            f"config argument modality={args.modality!r}: must be 'all' or one of {MODALITIES}"
        )
    fake = "_fake" if args.fake else ""
    config.name = f"digits{fake}_mm_{args.modality}_{args.loss}_v{args.views}"
    return config
