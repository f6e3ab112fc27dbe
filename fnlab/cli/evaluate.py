"""``fnlab evaluate``: choose a Run's threshold again on val, or judge it on an external site.

::

    fnlab evaluate RUN_DIR                       # recall >= 0.98 on val (default)
    fnlab evaluate RUN_DIR --specificity 0.9     # or a fixed specificity
    fnlab evaluate RUN_DIR --cost-ratio 10       # or the minimum expected cost
    fnlab evaluate RUN_DIR --resign              # trust the folder's files as they are now
    fnlab evaluate RUN_DIR --data SITE           # external validation (nothing written)
    fnlab evaluate RUN_DIR --data SITE --calibrate 100 --out site.json   # + local recalibration

The Run must pass its tamper check (``manifest.json``: the sha256 of every file) and
the architecture check; the new checkpoint holds the weights that were verified, and
the folder is replaced whole. ``--resign`` is the one deliberate way to sign a folder
again (after changing a file on purpose, or for a run written by an older fnlab): it
checks that the files form a consistent Run, writes a new manifest and does nothing else.

``--data PATH`` judges the Run on an external site (a folder with NORMAL/ and PNEUMONIA/,
a Kermany tree, or a MedMNIST/ChestMNIST .npz) at its home threshold, beside its home
test set, and never writes into the Run; ``--calibrate N`` (or a fraction) lets N local
images choose a threshold for the Run's target recall and the rest judge it
(:mod:`fnlab.external`).
"""

from __future__ import annotations

from fnlab.cli import UsageError, data_error
from fnlab.cli.validate import positive_float


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="re-threshold a Run on val, rewrite metrics.json",
                              description=__doc__.split("::")[0].strip())
    p.add_argument("run_dir", help="a Run folder written by fnlab train")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--target-recall", type=float, default=None,
                   help="largest threshold with val recall >= R (default 0.98)")
    g.add_argument("--specificity", type=float, default=None,
                   help="smallest threshold with val specificity >= S")
    g.add_argument("--cost-ratio", type=positive_float, default=None,
                   help="minimum expected cost, a missed case costing C false alarms")
    g.add_argument("--youden", action="store_true", help="maximise Youden's J on val")
    g.add_argument("--threshold", type=float, default=None, help="a fixed threshold")
    p.add_argument("--no-ci", action="store_true", help="skip the bootstrap intervals")
    p.add_argument("--resign", action="store_true",
                   help="trust the Run's files as they are now: check that they form a "
                        "consistent Run and write a new manifest.json (nothing else)")
    x = p.add_argument_group("external validation (never writes into the Run)")
    x.add_argument("--data", default=None, metavar="PATH",
                   help="an external site: folder with NORMAL/ and PNEUMONIA/, a Kermany tree, "
                        "or a MedMNIST-layout .npz (its test split; ChestMNIST too)")
    x.add_argument("--calibrate", default=None, metavar="N",
                   help="local recalibration: N images (or a fraction in (0, 1)) choose the "
                        "threshold, the rest judge it")
    x.add_argument("--strict", action="store_true",
                   help="refuse a folder with unreadable files instead of skipping them")
    x.add_argument("--all-splits", action="store_true",
                   help="use every split of an .npz, not only its test split")
    x.add_argument("--seed", type=int, default=0, help="seed of the local split (default 0)")
    x.add_argument("--out", default=None, metavar="FILE",
                   help="write the report as .json or .md (and FILE.reliability.png)")
    p.set_defaults(func=_evaluate)


def rule_from_args(args) -> tuple[str, float | None]:
    """``(rule, value)`` for :func:`fnlab.thresholds.choose_threshold` from the flags."""
    def unit(name, v):
        if not 0 < v <= 1:
            raise UsageError(f"{name} must be in (0, 1], got {v}")
        return v

    if args.specificity is not None:
        return "specificity", unit("--specificity", args.specificity)
    if args.cost_ratio is not None:
        if not args.cost_ratio > 0:
            raise UsageError(f"--cost-ratio must be > 0, got {args.cost_ratio}")
        return "cost", args.cost_ratio
    if args.youden:
        return "youden", None
    if args.threshold is not None:
        if not 0 <= args.threshold <= 1:
            raise UsageError(f"--threshold must be in [0, 1], got {args.threshold}")
        return "fixed", args.threshold
    return "recall", unit("--target-recall", 0.98 if args.target_recall is None
                          else args.target_recall)


def _resign(args) -> int:
    from fnlab.runs import RunError, sign_run

    chosen = [flag for flag, given in (
        ("--target-recall", args.target_recall is not None),
        ("--specificity", args.specificity is not None),
        ("--cost-ratio", args.cost_ratio is not None), ("--youden", args.youden),
        ("--threshold", args.threshold is not None), ("--no-ci", args.no_ci)) if given]
    if chosen:
        raise UsageError(f"--resign only signs the Run; drop {', '.join(chosen)} and run "
                         "fnlab evaluate again to choose a threshold")
    try:
        signed = sign_run(args.run_dir)
    except (RunError, OSError) as exc:
        return data_error("evaluate", exc)
    if not signed["previous"]:
        changed = " (it had no manifest of the current format)"
    elif signed["changed"]:
        changed = f"; changed since the last signature: {', '.join(signed['changed'])}"
    else:
        changed = "; nothing had changed"
    print(f"signed {len(signed['files'])} files of {args.run_dir} in manifest.json{changed}")
    return 0


def _evaluate(args) -> int:
    from fnlab.cli.train import summary_lines
    from fnlab.runs import Run

    if args.data is not None:
        from fnlab.cli.external import run_external

        return run_external(args)
    external_only = [f for f, given in (
        ("--calibrate", args.calibrate is not None), ("--strict", args.strict),
        ("--all-splits", args.all_splits), ("--out", args.out is not None)) if given]
    if external_only:
        raise UsageError(f"{', '.join(external_only)} go(es) with --data PATH (external "
                         "validation)")
    if args.resign:
        return _resign(args)
    rule, value = rule_from_args(args)
    try:
        run = Run.load(args.run_dir)
        metrics = run.evaluate(rule, value, write=True, ci=not args.no_ci)
    except (ValueError, OSError) as exc:  # RunError is a ValueError
        return data_error("evaluate", exc)
    for line in summary_lines(metrics):
        print(line)
    print(f"wrote {run.path / 'metrics.json'} and {run.path / 'checkpoint.pt'}")
    return 0
