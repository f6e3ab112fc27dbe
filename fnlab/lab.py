"""The lesson face: the one module a course notebook imports.

A notebook starts with one short import cell and one ``parameters`` cell, then builds
one :class:`Lesson` from those parameters. The Lesson owns what every notebook would
otherwise repeat: resolving the dataset (and saying which one is used and why), seeding,
the profile's budgets (no ``if profile == ...`` in a notebook: budgets live in the
profile table, :mod:`fnlab.profiles`), a cached trained Run for any model
(:meth:`Lesson.run`), and recording the lesson's claims and headline figures
(:meth:`Lesson.claim`, :meth:`Lesson.record`).

The teaching library's names that notebooks use are re-exported here too, so a notebook
writes ``lab.binary_metrics(...)`` the way a d2l reader writes ``d2l.train_ch3(...)``.
Each helper was first derived by hand in a notebook cell; its docstring says where.
Course machinery (course runner, sweeps, clusters, classroom, grading, sandbox, book)
is deliberately not part of this face.

Example
-------
>>> from fnlab import lab
>>> lesson = lab.Lesson(dataset="synthetic", profile="smoke", seed=0, quiet=True)
>>> lesson.dataset, lesson.budget("pgd_steps")
('synthetic', 5)
>>> lesson.config("smallcnn").epochs == lesson.settings.epochs
True
>>> c = lesson.claim("demo", "two is more than one", 2, 1, echo=False)
>>> c["holds"]
True
"""

from __future__ import annotations

from fnlab.calibration import (
    adjust_prevalence,
    apply_platt,
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_platt,
    fit_temperature,
    reliability_curve,
)
from fnlab.config import seed_everything
from fnlab.data.augment import get_augment, list_presets
from fnlab.data.imageset import ImageSet
from fnlab.data.registry import load_dataset, resolve_dataset
from fnlab.data.synthetic import SITE_NAMES, SITE_PRESETS, describe_sites, generate
from fnlab.ensemble import (
    disagreement_matrix,
    error_correlation,
    fn_difference_ci,
    logit_mean_ensemble,
    majority_vote,
    max_ensemble,
    mean_ensemble,
    member_agreement,
    missed_positives,
    weighted_ensemble,
)
from fnlab.external import (
    adaptation_gain,
    external_site,
    home_vs_away,
    local_threshold,
    run_target_recall,
)
from fnlab.lessons import TARGET_RECALL, lesson_config, lesson_data
from fnlab.losses import class_weights_from_labels, create_loss
from fnlab.metrics import (
    binary_metrics,
    binary_report,
    bootstrap_ci,
    high_sensitivity_auc,
    missed_per_1000,
    net_benefit,
    ppv_at_prevalence,
)
from fnlab.models import count_parameters, create, describe_models
from fnlab.plots import confusion_heatmap, history_plot, image_gallery, roc_with_points
from fnlab.predictions import Predictions
from fnlab.profiles import DEFAULT_PROFILE, get_profile
from fnlab.recording import claim as _record_claim
from fnlab.recording import format_claim
from fnlab.recording import record as _record_figures
from fnlab.runs import Run, get_or_train
from fnlab.thresholds import (
    choose_threshold,
    conformal_fnr_threshold,
    min_cost_threshold,
    threshold_for_recall,
    threshold_for_specificity,
)
from fnlab.train import TrainConfig, fit, predict

__all__ = [
    "Lesson", "TARGET_RECALL",
    # data
    "ImageSet", "load_dataset", "generate", "describe_sites", "SITE_NAMES", "SITE_PRESETS",
    "get_augment", "list_presets",
    # models, losses, training
    "create", "count_parameters", "describe_models", "create_loss", "class_weights_from_labels",
    "TrainConfig", "fit", "predict", "Run", "Predictions",
    # measuring
    "binary_metrics", "binary_report", "bootstrap_ci", "high_sensitivity_auc", "missed_per_1000",
    "net_benefit", "ppv_at_prevalence",
    "threshold_for_recall", "threshold_for_specificity", "choose_threshold",
    "min_cost_threshold", "conformal_fnr_threshold",
    "mean_ensemble", "logit_mean_ensemble", "max_ensemble", "majority_vote",
    "weighted_ensemble", "member_agreement", "error_correlation", "disagreement_matrix",
    "missed_positives", "fn_difference_ci",
    "fit_platt", "apply_platt", "fit_temperature", "apply_temperature", "adjust_prevalence",
    "expected_calibration_error", "brier_score", "reliability_curve",
    # a second site
    "external_site", "home_vs_away", "local_threshold", "adaptation_gain", "run_target_recall",
    # figures
    "confusion_heatmap", "history_plot", "image_gallery", "roc_with_points",
]


class Lesson:
    """One notebook's setting: data, seed, profile budgets, cached Runs and claims.

    Build it once from the parameters cell::

        lesson = lab.Lesson(dataset, profile, seed, epochs, device)

    It seeds Python, NumPy and torch, resolves ``dataset="auto"`` (real PneumoniaMNIST
    when cached or downloadable, else the synthetic X-rays) and prints one line saying
    which data this run uses and why.

    >>> lesson = Lesson(dataset="synthetic", profile="smoke", quiet=True)
    >>> lesson.is_synthetic, lesson.budget("small_cnn_width")
    (True, 16)
    """

    def __init__(self, dataset: str = "auto", profile: str = DEFAULT_PROFILE, seed: int = 0,
                 epochs: int | None = None, device: str = "auto", *,
                 data_path: str | None = None, quiet: bool = False):
        self.seed = seed_everything(int(seed))
        self.settings = get_profile(profile)
        self.profile = self.settings.name
        self.epochs = int(epochs) if epochs else self.settings.epochs
        self.device = device
        self.data_path = data_path
        self.dataset, self.reason = resolve_dataset(dataset, download=data_path is None)
        self.quiet = quiet
        self._splits = None
        if not quiet:
            print(f"data: {self.dataset} ({self.reason}); profile {self.profile}, seed {self.seed}, "
                  f"{self.epochs} epochs")

    def __repr__(self) -> str:
        return (f"Lesson(dataset={self.dataset!r}, profile={self.profile!r}, seed={self.seed}, "
                f"epochs={self.epochs})")

    # --- the profile table -------------------------------------------------------------------
    def budget(self, name: str):
        """A budget of this lesson's profile (see :data:`fnlab.profiles.PROFILES`).

        >>> Lesson(dataset="synthetic", profile="full", quiet=True).budget("small_cnn_width")
        32
        """
        return self.settings.budget(name)

    @property
    def is_synthetic(self) -> bool:
        """True when this lesson runs on the synthetic X-rays (they carry lesion masks and sites)."""
        return self.dataset.startswith("synthetic")

    # --- data and Runs -----------------------------------------------------------------------
    def config(self, model: str = "smallcnn", *, dataset: str | None = None,
               seed: int | None = None, **overrides) -> TrainConfig:
        """The training configuration of ``model`` under this lesson's profile.

        ``overrides`` set any :class:`~fnlab.train.TrainConfig` field (``loss``,
        ``augment``, ``lr``, ``epochs``, ...). ``dataset`` (default: this lesson's) and ``seed``
        (default: this lesson's) pick another data set or initialisation.
        """
        overrides.setdefault("data_path", self.data_path)
        overrides.setdefault("epochs", self.epochs)  # e.g. more epochs for a small subset
        return lesson_config(model, dataset=dataset or self.dataset, profile=self.profile,
                             seed=self.seed if seed is None else int(seed),
                             device=self.device, **overrides)

    def splits(self, dataset: str | None = None, data_seed: int | None = None) -> dict[str, ImageSet]:
        """The train/val/test ImageSets every lesson Run of this profile trains on (shared)."""
        return lesson_data(self.config(dataset=dataset), data_seed)

    @property
    def train(self) -> ImageSet:
        """This lesson's training split (the same in every notebook at this seed)."""
        return self.splits()["train"]

    @property
    def val(self) -> ImageSet:
        """This lesson's validation split: thresholds and choices are made here."""
        return self.splits()["val"]

    @property
    def test(self) -> ImageSet:
        """This lesson's test split: only ever used to judge."""
        return self.splits()["test"]

    def run(self, model: str = "smallcnn", *, data: dict[str, ImageSet] | None = None,
            data_seed: int | None = None, target_recall: float = TARGET_RECALL,
            dataset: str | None = None, seed: int | None = None, ci: bool = True,
            **overrides) -> Run:
        """A trained :class:`~fnlab.runs.Run` of ``model``: from the Run cache, else trained now.

        The same model with the same settings is the same cache entry in every notebook, so
        notebook 05 reuses the Runs notebook 02 trained. ``data`` trains on other splits
        (a dict with ``train``, ``val`` and ``test``); ``data_seed`` keeps the data of one
        seed while ``seed`` changes the initialisation (a seed ensemble). The threshold is
        chosen on validation for ``target_recall``; ``ci=False`` skips the bootstrap
        intervals in the Run's ``metrics.json``.

        The training loop itself is written out by hand in notebook 02 ("The training loop,
        written out"): :func:`fnlab.train.fit` is that loop with batching, augmentation and
        best-epoch bookkeeping added.
        """
        config = self.config(model, dataset=dataset, seed=seed, **overrides)
        if data is None:
            data = lesson_data(config, data_seed)
        return get_or_train(config, threshold_rule="recall", threshold_value=target_recall,
                            data=data, ci=ci)

    # --- claims and figures ------------------------------------------------------------------
    def claim(self, id: str, statement: str, value, bound, op: str = ">=", *,
              holds: bool | None = None, then: str | None = None, otherwise: str | None = None,
              echo: bool = True) -> dict:
        """Record a lesson claim (its value against its bound) and print one line.

        ``then``/``otherwise``: for an outcome that can really go either way, the one
        sentence to print when the claim holds or not (``{value}`` and ``{bound}`` are
        filled in). The recorded claim is what ``fnlab course run --check-claims`` and the
        lessons benchmark check across seeds.

        >>> lesson = Lesson(dataset="synthetic", profile="smoke", quiet=True)
        >>> _ = lesson.claim("x", "three beats two", 3, 2, then="It does ({value}).")
        claim x: HOLDS: three beats two (measured 3, needs >= 2)
        It does (3).
        """
        entry = _record_claim(id, statement, value, bound, op=op, holds=holds, echo=echo)
        sentence = then if entry["holds"] else otherwise
        if echo and sentence:
            print(sentence.format(value=_fmt(entry["value"]), bound=_fmt(entry["bound"])))
        return Claim(entry)

    def verdict(self, holds: bool, then: str, otherwise: str, **values) -> None:
        """Print one sentence for an outcome that can go either way (no claim recorded).

        >>> Lesson(dataset="synthetic", profile="smoke", quiet=True).verdict(
        ...     2 < 3, "fewer ({a} vs {b})", "not fewer ({a} vs {b})", a=2, b=3)
        fewer (2 vs 3)
        """
        values = {k: _fmt(v) for k, v in values.items()}
        print((then if holds else otherwise).format(**values))

    def record(self, **figures) -> dict:
        """Record this notebook's headline figures for the course report (dataset included).

        Returns them as a dict that a notebook cell does not display: they are for the
        course report (``summary.md``), and the cells above show them where they are taught.
        """
        return Recorded(_record_figures(dataset=self.dataset, **figures))


class _Undisplayed(dict):
    """A dict a notebook cell does not display when it ends with it (IPython's display
    protocol): what it holds was printed already, or belongs to the course report."""

    def _ipython_display_(self) -> None:
        return None


class Claim(_Undisplayed):
    """A recorded claim (a dict: ``id``, ``statement``, ``value``, ``bound``, ``op``,
    ``holds``). Its line was printed when it was recorded, so a notebook cell that ends
    with ``lesson.claim(...)`` does not show the dict again.

    >>> Claim({"id": "x", "holds": True})["holds"]
    True
    """


class Recorded(_Undisplayed):
    """The headline figures :meth:`Lesson.record` wrote for the course report; a cell that
    ends with ``lesson.record(...)`` shows nothing (the figures are shown where taught).

    >>> Recorded({"auc": 0.9})["auc"]
    0.9
    """


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


__all__ += ["format_claim", "seed_everything", "resolve_dataset", "get_or_train"]
