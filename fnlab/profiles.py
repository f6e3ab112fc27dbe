"""Course profiles: ``lessons`` (the default), ``smoke`` (code paths) and ``full`` (class).

Every notebook reads its sizes and budgets from here, so that a student, CI and a
class run the same code with different numbers. Profiles set budgets, never the
lesson:

- ``lessons`` (:data:`DEFAULT_PROFILE`, what ``make course``, ``fnlab course run``,
  the book and CI use): sized so that every lesson's claim holds on a laptop CPU,
  the whole course in about a quarter of an hour on two cores.
- ``smoke``: a quick run of every code path (seconds per notebook); its figures
  teach nothing and its claims need not hold.
- ``full``: the class / GPU budget.

Example
-------
>>> p = get_profile(DEFAULT_PROFILE)
>>> p.name, p.epochs > 0
('lessons', True)
>>> get_profile("nope")
Traceback (most recent call last):
...
ValueError: unknown profile 'nope'; choose one of: lessons, smoke, full
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

#: The laptop profiles (``lessons`` and ``smoke``) train the heavy zoo models in a cheaper
#: form: torchvision backbones keep their ImageNet stem (4x downsampling first, about 16x
#: fewer operations on a 32 px image; with the small-image stem ResNet-18 trains at about
#: 70 images/s on two CPU cores, 8x slower than the compact CNN) and the ViT uses coarse
#: 8 px patches (16 tokens; 4 px patches train 4x slower). Notebook 02 prints the forms
#: that ran. The full profile trains every model as described in :mod:`fnlab.models`.
LAPTOP_MODEL_KWARGS: dict[str, dict] = {
    "resnet18": {"stem": "imagenet"},
    "resnet50": {"stem": "imagenet"},
    "densenet121": {"stem": "imagenet"},
    "mobilenet_v2": {"stem": "imagenet"},
    "efficientnet_b0": {"stem": "imagenet"},
    "vit_tiny": {"patch_size": "coarse"},
}


@dataclass(frozen=True)
class Profile:
    """Sizes and budgets for one way of running the course."""

    name: str
    #: image side for the synthetic set (real data keeps its own size)
    image_size: int
    #: synthetic images per split
    n_train: int
    n_val: int
    n_test: int
    #: training epochs (a notebook's ``epochs`` parameter overrides it)
    epochs: int
    batch_size: int
    #: cap on real-data training images (None = all)
    max_train_images: int | None
    #: per-model builder options this profile applies (see :func:`model_kwargs`)
    model_overrides: dict = field(default_factory=dict)
    #: the notebooks' other budgets by name (see :data:`BUDGETS` and :meth:`budget`)
    budgets: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def model_kwargs(self, model: str) -> dict:
        """Builder options this profile gives ``model`` (a copy; empty for most models).

        >>> get_profile("smoke").model_kwargs("resnet18")
        {'stem': 'imagenet'}
        >>> get_profile("full").model_kwargs("resnet18")
        {}
        """
        return dict(self.model_overrides.get(model, {}))

    def budget(self, name: str):
        """One of the notebooks' budgets (:data:`BUDGETS` names them all).

        >>> get_profile("smoke").budget("pgd_steps"), get_profile("lessons").budget("pgd_steps")
        (5, 10)
        >>> get_profile("smoke").budget("nope")
        Traceback (most recent call last):
        ...
        KeyError: "profile 'smoke' has no budget 'nope'; budgets: ...
        """
        if name not in self.budgets:
            raise KeyError(f"profile {self.name!r} has no budget {name!r}; budgets: "
                           f"{', '.join(sorted(self.budgets))}")
        return self.budgets[name]


#: The profile a notebook, ``make course`` and ``fnlab course run`` use when none is given.
DEFAULT_PROFILE = "lessons"

#: What each of the notebooks' budgets means (every profile sets every one of them).
BUDGETS: dict[str, str] = {
    "small_cnn_width": "channels of the small CNN's first stage in notebook 03's sweeps (and 08's)",
    "explain_scored": "detected pneumonias per split scored against their lesion masks (06)",
    "explain_fast": "fewer Integrated-Gradients steps and non-overlapping occlusion patches (06)",
    "pgd_steps": "projected-gradient-descent steps of an attack (07)",
    "adversarial_epochs": "epochs of the adversarial and the clean fine-tune (07)",
    "cv_folds": "folds of the cross-validation (08)",
    "cv_epochs": "epochs of each cross-validation fold (08; None: the profile's epochs)",
    "conformal_splits": "random calibration/test splits that check the conformal guarantee (08)",
}

_LAPTOP_BUDGETS = {"small_cnn_width": 16, "explain_scored": 60, "explain_fast": True,
                   "pgd_steps": 10, "adversarial_epochs": 2, "cv_folds": 3, "cv_epochs": 3,
                   "conformal_splits": 1000}

PROFILES: dict[str, Profile] = {
    "lessons": Profile("lessons", image_size=32, n_train=2000, n_val=600, n_test=600,
                       epochs=6, batch_size=64, max_train_images=2000,
                       model_overrides=LAPTOP_MODEL_KWARGS, budgets=_LAPTOP_BUDGETS),
    "smoke": Profile("smoke", image_size=32, n_train=800, n_val=300, n_test=300,
                     epochs=3, batch_size=64, max_train_images=1500,
                     model_overrides=LAPTOP_MODEL_KWARGS,
                     budgets={**_LAPTOP_BUDGETS, "explain_scored": 16, "pgd_steps": 5,
                              "adversarial_epochs": 1, "cv_folds": 2, "cv_epochs": 1,
                              "conformal_splits": 200}),
    "full": Profile("full", image_size=64, n_train=4000, n_val=1000, n_test=1000,
                    epochs=15, batch_size=128, max_train_images=None,
                    budgets={**_LAPTOP_BUDGETS, "small_cnn_width": 32, "explain_scored": 200,
                             "explain_fast": False, "cv_folds": 5, "cv_epochs": None}),
}


def get_profile(name: str) -> Profile:
    """Return the named profile or raise a ValueError listing the valid names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}"
        ) from None
