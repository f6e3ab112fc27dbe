"""``fnlab evaluate``: choose a Run's threshold again on val and rewrite metrics.json.

::

    fnlab evaluate RUN_DIR                       # recall >= 0.98 on val (default)
    fnlab evaluate RUN_DIR --specificity 0.9     # or a fixed specificity
    fnlab evaluate RUN_DIR --cost-ratio 10       # or the minimum expected cost
"""

from __future__ import annotations

from fnlab.cli import UsageError


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="re-threshold a Run on val, rewrite metrics.json",
                              description=__doc__.split("::")[0].strip())
    p.add_argument("run_dir", help="a Run folder written by fnlab train")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--target-recall", type=float, default=None,
                   help="largest threshold with val recall >= R (default 0.98)")
    g.add_argument("--specificity", type=float, default=None,
                   help="smallest threshold with val specificity >= S")
    g.add_argument("--cost-ratio", type=float, default=None,
                   help="minimum expected cost, a missed case costing C false alarms")
    g.add_argument("--youden", action="store_true", help="maximise Youden's J on val")
    g.add_argument("--threshold", type=float, default=None, help="a fixed threshold")
    p.add_argument("--no-ci", action="store_true", help="skip the bootstrap intervals")
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


def _evaluate(args) -> int:
    import sys

    from fnlab.cli.train import summary_lines
    from fnlab.runs import Run, RunError

    rule, value = rule_from_args(args)
    try:
        run = Run.load(args.run_dir)
    except RunError as exc:
        print(f"fnlab evaluate: error: {exc}", file=sys.stderr)
        return 1
    metrics = run.evaluate(rule, value, write=True, ci=not args.no_ci)
    for line in summary_lines(metrics):
        print(line)
    print(f"wrote {run.path / 'metrics.json'}")
    return 0
