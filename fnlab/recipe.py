"""What defines a training run, without torch: :class:`TrainConfig` and the course recipe.

Kept apart from :mod:`fnlab.train` so that the command line can build its parser (its
defaults come from :func:`recipe_config`) without importing torch: ``fnlab --help`` stays
fast. :mod:`fnlab.train` re-exports every name here.

>>> recipe_config(epochs=3).epochs
3
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

__all__ = ["MONITORS", "OPTIMIZERS", "RECIPE_28PX", "SCHEDULES", "TrainConfig", "recipe_config"]

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("onecycle", "cosine", None)
MONITORS = ("val_auc", "val_loss", None)


# --------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Everything that defines a training run (a Run's cache key is a hash of it).

    The defaults are the course's base recipe for 28 px PneumoniaMNIST-style data, which
    the notebooks' profiles build on; ``fnlab train`` starts from :func:`recipe_config`
    (these defaults with :data:`RECIPE_28PX`, the recipe benchmark's winner).

    >>> TrainConfig(model="resnet18", epochs=3).epochs
    3
    >>> TrainConfig.from_dict({"model": "smallcnn", "lr": 1e-3}).lr
    0.001
    """

    dataset: str = "synthetic"
    data_path: str | None = None
    profile: str = "smoke"
    image_size: int | None = None
    model: str = "smallcnn"
    model_kwargs: dict = field(default_factory=dict)
    #: resize inside the model (e.g. 28 px images seen at 56 px); None = no resize
    resize_to: int | None = None
    pretrained: bool = False
    loss: str = "weighted"
    loss_kwargs: dict = field(default_factory=dict)
    epochs: int = 15
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str | None = "onecycle"
    #: early stopping: stop after this many epochs without improvement (None = never)
    patience: int | None = None
    #: which validation figure picks the best epoch (None = keep the last epoch)
    monitor: str | None = "val_loss"
    augment: str | None = "xray"
    balanced_sampler: bool = False
    tta: bool = False
    #: exponential moving average of the weights (decay per step, e.g. 0.99); the
    #: averaged weights are validated and kept (None = off)
    ema: float | None = None
    #: mixup: images and their losses mixed in pairs with a Beta(alpha, alpha)
    #: weight (0 = off; 0.2 is a common choice)
    mixup: float = 0.0
    #: label smoothing for binary tasks: each image's loss mixes ``1 - eps/2`` of its
    #: label's loss with ``eps/2`` of the other label's (0 = off)
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    max_train_images: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of: "
                             f"{', '.join(OPTIMIZERS)}")
        if self.schedule in ("", "none", "None"):
            self.schedule = None
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of: onecycle, "
                             "cosine, none")
        if self.monitor in ("", "none", "None", "last"):
            self.monitor = None
        if self.monitor not in MONITORS:
            raise ValueError(f"unknown monitor {self.monitor!r}; choose one of: val_auc, "
                             "val_loss, last")
        if self.augment in ("", "none", "None"):
            self.augment = None
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.patience is not None and int(self.patience) < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if self.ema is not None and not 0.0 < float(self.ema) < 1.0:
            raise ValueError(f"ema must be a decay in (0, 1) or None, got {self.ema}")
        if not float(self.mixup) >= 0.0:
            raise ValueError(f"mixup must be an alpha >= 0 (0 = off), got {self.mixup}")
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def to_dict(self) -> dict:
        """A JSON-safe dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid: {sorted(names)}")
        return cls(**data)

    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})


#: ``fnlab train``'s default recipe: the changes to :class:`TrainConfig`'s defaults that
#: ``benchmarks/bench_recipe.py`` chose on validation on the official PneumoniaMNIST
#: split (the ``intensity_augment`` row: the ``xray_strong`` augmentation, brightness and
#: contrast jitter with somewhat stronger rotations, shifts and scaling than ``xray``;
#: see the README's recipe section for its figures). The
#: notebooks keep :class:`TrainConfig`'s defaults under their profiles' budgets, so
#: their cached Runs and claims do not move with the recipe.
RECIPE_28PX: dict = {"augment": "xray_strong"}


def recipe_config(**fields) -> TrainConfig:
    """A :class:`TrainConfig` with ``fnlab train``'s default recipe, ``fields`` on top.

    >>> recipe_config().augment, recipe_config(augment="xray").augment
    ('xray_strong', 'xray')
    >>> recipe_config(epochs=3).epochs
    3
    """
    return TrainConfig(**{**RECIPE_28PX, **fields})
