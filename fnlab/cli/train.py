"""``fnlab train``: train a model, choose its threshold on val, write a Run folder.

::

    fnlab train --dataset pneumoniamnist --data-path ../shared/data/pneumoniamnist_28_union.npz \\
        --model smallcnn --out runs/smallcnn

The defaults are the fnlab 28 px recipe (:func:`fnlab.train.recipe_config`, the winner of
``benchmarks/bench_recipe.py``; see the README's results section); every option of
:class:`fnlab.train.TrainConfig` that matters has a flag. The Run
folder gets ``checkpoint.pt``, ``config.json``, ``history.csv``, val and test
Predictions and ``metrics.json``.
"""

from __future__ import annotations

import json
import sys

from fnlab.cli import UsageError, error_line
from fnlab.cli.validate import (
    check_train_args,
    half_open_unit_interval,
    image_side,
    int_at_least,
    learning_rate,
    mixup_alpha,
    nonneg_float,
    open_unit_interval,
    positive_float,
    positive_int,
    seed_int,
)


def register(subparsers) -> None:
    from fnlab.recipe import recipe_config

    d = recipe_config()
    p = subparsers.add_parser("train", help="train a model and write a Run folder",
                              description=__doc__.split("::")[0].strip())
    p.add_argument("--dataset", default="auto",
                   help="registry name (synthetic, pneumoniamnist, kermany, ...; default auto)")
    p.add_argument("--data-path", default=None, help="file or folder of a real dataset")
    p.add_argument("--offline", action="store_true",
                   help="never download: --dataset auto uses the cached official PneumoniaMNIST "
                        "or the synthetic X-rays (like FNLAB_OFFLINE=1)")
    p.add_argument("--model", default=d.model, help=f"zoo model (default {d.model})")
    p.add_argument("--loss", default=d.loss, help=f"loss (default {d.loss})")
    p.add_argument("--fn-cost", type=positive_float, default=None,
                   help="cost of a false negative for --loss fn_cost")
    p.add_argument("--epochs", type=positive_int, default=d.epochs, help=f"default {d.epochs}")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--lr", type=learning_rate, default=d.lr, help=f"peak learning rate (default {d.lr})")
    p.add_argument("--weight-decay", type=nonneg_float, default=d.weight_decay)
    p.add_argument("--optimizer", default=d.optimizer, help="adamw, adam or sgd")
    p.add_argument("--schedule", default=d.schedule, help="onecycle, cosine or none")
    p.add_argument("--monitor", default=d.monitor or "last",
                   help="val_auc, val_loss or last: which epoch's weights to keep")
    p.add_argument("--patience", type=positive_int, default=None, help="early stopping patience")
    p.add_argument("--augment", default=d.augment or "none",
                   help="xray, xray_strong (batched), light, standard, strong, over, site, none "
                        f"(default {d.augment or 'none'})")
    p.add_argument("--balanced-sampler", dest="balanced_sampler", action="store_true",
                   default=d.balanced_sampler,
                   help="sample classes equally" + (" (the default)" if d.balanced_sampler else ""))
    p.add_argument("--no-balanced-sampler", dest="balanced_sampler", action="store_false",
                   help="sample the training images as they come")
    p.add_argument("--tta", dest="tta", action="store_true", default=d.tta,
                   help="test-time augmentation (1-pixel shifts)")
    p.add_argument("--no-tta", dest="tta", action="store_false")
    p.add_argument("--ema", type=open_unit_interval, default=d.ema,
                   help="keep an exponential moving average of the weights with this decay "
                        "per step (e.g. 0.99); default off")
    p.add_argument("--mixup", type=mixup_alpha, default=d.mixup,
                   help="mixup alpha (0 = off, the default; 0.2 is common)")
    p.add_argument("--label-smoothing", type=half_open_unit_interval, default=d.label_smoothing,
                   help="binary label smoothing (default 0 = off)")
    p.add_argument("--image-size", type=image_side, default=None, help="image side to load at")
    p.add_argument("--resize-to", type=image_side, default=d.resize_to,
                   help="side the model resizes its input to")
    p.add_argument("--width", type=positive_int, default=None, help="channels of smallcnn/attention_cnn")
    p.add_argument("--pretrained", action="store_true", help="ImageNet weights (local cache)")
    p.add_argument("--profile", default="full", help="smoke or full (default full)")
    p.add_argument("--max-train-images", default=None,
                   type=int_at_least(2, "an integer >= 2 (one image per class at least)"))
    p.add_argument("--seed", type=seed_int, default=d.seed, help="0 to 2**32 - 1")
    p.add_argument("--target-recall", type=float, default=0.98,
                   help="choose the threshold on val for this recall (default 0.98)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True,
                   help="Run folder to write (a new or empty folder; see --force)")
    p.add_argument("--force", action="store_true",
                   help="replace the Run already in --out (only once the new one is complete; "
                        "a folder with other files is never replaced)")
    p.set_defaults(func=_train)


def config_from_args(args):
    """The :class:`~fnlab.train.TrainConfig` for parsed ``fnlab train`` arguments.

    Bad names raise :class:`fnlab.cli.UsageError` listing the valid choices.
    """
    from fnlab.losses import available_losses
    from fnlab.models import available_models
    from fnlab.profiles import PROFILES
    from fnlab.train import TrainConfig

    if args.model not in available_models():
        raise UsageError(f"unknown model {args.model!r}; choose one of: "
                         f"{', '.join(available_models())}")
    if args.loss not in available_losses():
        raise UsageError(f"unknown loss {args.loss!r}; choose one of: "
                         f"{', '.join(available_losses())}")
    if args.profile not in PROFILES:
        raise UsageError(f"unknown profile {args.profile!r}; choose one of: {', '.join(PROFILES)}")
    try:
        from fnlab.data.registry import resolve_dataset

        resolve_dataset(args.dataset, download=False)  # the name only: no network yet
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not 0 < args.target_recall <= 1:
        raise UsageError(f"--target-recall must be in (0, 1], got {args.target_recall}")
    check_train_args(args)  # dataset/--data-path, sizes, model options, device: before any data
    # "auto" -> the dataset really used (check_train_args resolved it, downloading the real
    # file when it could; a failure is not retried), so the Run's config names it
    dataset, _reason = resolve_dataset(
        args.dataset, offline=True if getattr(args, "offline", False) else None,
        download=args.data_path is None)
    loss_kwargs = {}
    if args.fn_cost is not None:
        if args.loss != "fn_cost":
            raise UsageError("--fn-cost goes with --loss fn_cost")
        loss_kwargs["fn_cost"] = args.fn_cost
    model_kwargs = {} if args.width is None else {"width": args.width}
    try:
        return TrainConfig(
            dataset=dataset, data_path=args.data_path, profile=args.profile,
            image_size=args.image_size, model=args.model, model_kwargs=model_kwargs,
            resize_to=args.resize_to, pretrained=args.pretrained, loss=args.loss,
            loss_kwargs=loss_kwargs, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            weight_decay=args.weight_decay, optimizer=args.optimizer, schedule=args.schedule,
            patience=args.patience, monitor=args.monitor, augment=args.augment,
            balanced_sampler=args.balanced_sampler, tta=args.tta, ema=args.ema,
            mixup=args.mixup, label_smoothing=args.label_smoothing, seed=args.seed,
            device=args.device, max_train_images=args.max_train_images,
            progress=not args.quiet)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summary_lines(metrics: dict) -> list[str]:
    """Human-readable lines for a metrics.json dict (val and test at the chosen threshold)."""
    lines = [f"model {metrics.get('model')} on {metrics.get('dataset')} (seed "
             f"{metrics.get('seed')}): threshold {_fmt(metrics.get('threshold'))} "
             f"[{metrics.get('threshold_rule')}]"]
    if metrics.get("train_seconds") is not None:
        lines.append(f"trained in {metrics['train_seconds']:.1f} s "
                     f"({_fmt(metrics.get('images_per_second'), 0)} images/s)")
    for split in ("val", "test"):
        m = metrics[split]
        ci = m.get("auc_ci") or [None, None]
        ci_txt = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if None not in ci else ""
        lines.append(
            f"{split:>4}: n={m['n']} auc={_fmt(m['auc'])}{ci_txt} "
            f"sensitivity={_fmt(m['sensitivity'])} specificity={_fmt(m['specificity'])} "
            f"ppv={_fmt(m['ppv'])} npv={_fmt(m['npv'])} fn={m['fn']} fp={m['fp']}")
    return lines


def check_out_arg(out: str) -> None:
    """Refuse an ``--out`` that is the Run cache (fnlab's own, keyed by config hash)
    or a folder inside it; :func:`fnlab.runs.check_out_dir` does the rest."""
    from pathlib import Path

    from fnlab.config import runs_dir

    target = Path(out).expanduser().resolve()
    cache = runs_dir().resolve()
    if target == cache or cache in target.parents:
        raise UsageError(f"--out {out}: inside the Run cache {cache}, which fnlab manages "
                         "itself (by config hash); choose a folder outside it, e.g. runs/NAME")


def _train(args) -> int:
    from fnlab.runs import RunError, check_out_dir, train_run

    if not str(args.out).strip():
        raise UsageError("--out '' is empty; name the Run folder to write, e.g. runs/smallcnn")
    check_out_arg(args.out)
    try:  # before any data is loaded or trained on
        check_out_dir(args.out, overwrite=args.force)
    except RunError as exc:
        raise UsageError(f"--out {exc}") from None
    config = config_from_args(args)
    try:
        run = train_run(config, out_dir=args.out, threshold_rule="recall",
                        threshold_value=args.target_recall, overwrite=args.force)
    except (FileNotFoundError, RunError) as exc:
        print(f"fnlab train: error: {error_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # the Run folder could not be written
        print(f"fnlab train: error: cannot write {args.out}: {error_line(exc)}", file=sys.stderr)
        return 1
    except ValueError as exc:
        if str(exc).startswith("unknown "):
            raise UsageError(str(exc)) from None
        raise
    for line in summary_lines(run.metrics):
        print(line)
    print(f"wrote {run.path}")
    if args.quiet:
        return 0
    print(json.dumps({k: run.metrics[k] for k in ("train_seconds", "images_per_second")}))
    return 0
