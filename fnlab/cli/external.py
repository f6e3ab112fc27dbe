"""``fnlab evaluate RUN --data PATH``: parse, call :mod:`fnlab.external`, print.

The logic lives in :mod:`fnlab.external`; this module turns the flags into calls, the
report into lines (terminal, ``--out FILE.md``) or JSON (``--out FILE.json``), and
writes the reliability figure beside ``--out``. It never writes into the Run's folder.
"""

from __future__ import annotations

from pathlib import Path

from fnlab.cli import UsageError, data_error


def _fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _ci(pair, digits: int = 3) -> str:
    if not pair or pair[0] is None:
        return ""
    return f" [{_fmt(pair[0], digits)}, {_fmt(pair[1], digits)}]"


def _check_flags(args) -> None:
    clash = [f for f, given in (
        ("--resign", args.resign), ("--specificity", args.specificity is not None),
        ("--cost-ratio", args.cost_ratio is not None), ("--youden", args.youden),
        ("--threshold", args.threshold is not None), ("--no-ci", args.no_ci)) if given]
    if clash:
        raise UsageError(f"{', '.join(clash)} cannot go with --data: an external site is judged "
                         "at the Run's home threshold (--target-recall sets the local target)")
    if args.target_recall is not None and not 0 < args.target_recall <= 1:
        raise UsageError(f"--target-recall must be in (0, 1], got {args.target_recall}")
    if args.out is not None and Path(args.out).suffix.lower() not in (".json", ".md"):
        raise UsageError(f"--out must end in .json or .md, got {args.out}")
    if args.calibrate is not None:
        try:
            v = float(args.calibrate)
        except ValueError:
            raise UsageError(f"--calibrate must be a count or a fraction in (0, 1), got "
                             f"{args.calibrate!r}") from None
        if not v > 0:
            raise UsageError(f"--calibrate must be > 0, got {args.calibrate}")


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def report_lines(report: dict) -> list[str]:
    """Terminal lines of an external report (also the body of ``--out FILE.md``)."""
    home, away, drop = report["home"], report["away"], report["drop"]
    lines = [f"external validation of {report['run']} on {report['data']}",
             f"  {report['n']} images ({away['pneumonias']} pneumonia, "
             f"{report['n'] - away['pneumonias']} normal)"
             + (f", {report['n_patients']} patients" if report.get("n_patients") else "")
             + (f"; skipped {report['skipped']} unreadable file(s)" if report.get("skipped")
                else "")]
    lines += [f"  note: {n}" for n in report.get("notes", [])]
    lines.append(f"  at the home threshold {report['threshold']:.4f} "
                 f"[{report['threshold_rule']}]:")
    lines.append(f"  {'':14}{'home test':>28}{'external':>28}")
    for key, name in (("auc", "AUC"), ("sensitivity", "sensitivity"),
                      ("specificity", "specificity")):
        lines.append(f"  {name:14}{_fmt(home[key]) + _ci(home[key + '_ci']):>28}"
                     f"{_fmt(away[key]) + _ci(away[key + '_ci']):>28}")
    missed_home = f"{home['missed']} of {home['pneumonias']}"
    missed_away = f"{away['missed']} of {away['pneumonias']}"
    lines.append(f"  {'missed':14}{missed_home:>28}{missed_away:>28}")
    lines.append(f"  {'ECE':14}{_fmt(home['ece']):>28}{_fmt(away['ece']):>28}")
    lines.append(f"  AUC drop (home - external): {_fmt(drop['drop'])}{_ci(drop['drop_ci'])}")
    local = report.get("local")
    if local:
        lt, hb, cf, pl = (local["local_threshold"], local["home_threshold"],
                          local["conformal"], local["platt"])
        lines.append(f"  local recalibration: {local['n_choose']} local images chose, "
                     f"{local['n_judge']} held back judged"
                     + (" (patient-grouped)" if local["patient_grouped"] else
                        " (no patient ids: split by image)"))
        for name, r in (("home threshold", hb),
                        (f"local, recall>={local['target_recall']:g}", lt)):
            lines.append(f"    {name:22} t={r['threshold']:.4f}: sensitivity "
                         f"{_fmt(r['sensitivity'])}{_ci(r['sensitivity_ci'])}, specificity "
                         f"{_fmt(r['specificity'])}{_ci(r['specificity_ci'])}, missed "
                         f"{r['missed']} of {r['pneumonias']}")
        if cf.get("feasible"):
            lines.append(f"    {'conformal FNR<=' + format(cf['alpha'], 'g'):22} "
                         f"t={cf['threshold']:.4f}: sensitivity {_fmt(cf['sensitivity'])}"
                         f"{_ci(cf['sensitivity_ci'])}, specificity {_fmt(cf['specificity'])}"
                         f"{_ci(cf['specificity_ci'])}")
        else:
            lines.append(f"    conformal: {cf['why']}")
        if "error" in pl:
            lines.append(f"    Platt recalibration: {pl['error']}")
        else:
            lines.append(f"    Platt recalibration: ECE on the held-back images "
                         f"{_fmt(pl['ece_before'])} -> {_fmt(pl['ece_after'])}")
        curve = report.get("curve") or []
        if curve:
            lines.append("    how many local images: held-back sensitivity / specificity "
                         f"(mean ± sd over {curve[0]['repeats']} splits)")
            for row in curve:
                lines.append(f"      N={row['n']:<4} sensitivity {row['sensitivity_mean']:.3f} "
                             f"± {row['sensitivity_sd']:.3f}, specificity "
                             f"{row['specificity_mean']:.3f} ± {row['specificity_sd']:.3f}")
    return lines


def run_external(args) -> int:
    """The ``--data`` branch of ``fnlab evaluate``."""
    import warnings

    from fnlab.external import (
        CURVE_SIZES,
        ExternalDataError,
        evaluate_external,
        load_external,
        local_recalibration,
        parse_calibrate,
        recalibration_curve,
        run_target_recall,
        to_run_input,
    )
    from fnlab.runs import Run

    _check_flags(args)
    out = Path(args.out) if args.out else None
    try:
        run = Run.load(args.run_dir)
        if out is not None and _inside(out, run.path):
            raise ExternalDataError(f"--out {out} is inside the Run folder {run.path}, which "
                                    "stays as it was signed; write the report elsewhere")
        ext = load_external(args.data, size=int(run.checkpoint["image_size"]),
                            strict=args.strict, splits="all" if args.all_splits else "test")
        notes = list(ext.notes)
        images = to_run_input(ext.images, run, notes)
        n_local = None
        if args.calibrate is not None:
            try:
                n_local = parse_calibrate(args.calibrate, len(images))
            except ExternalDataError as exc:
                raise UsageError(str(exc)) from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            preds = run.predict(images)
            report = evaluate_external(run, images, predictions=preds)
            report.update(data=str(ext.path), kind=ext.kind, skipped=len(ext.skipped),
                          skipped_files=dict(list(ext.skipped.items())[:50]), notes=notes)
            if n_local is not None:
                target = args.target_recall or run_target_recall(run)
                groups = images.patient_ids
                report["local"] = local_recalibration(preds, n_local, target, run.threshold,
                                                      groups, args.seed)
                report["curve"] = recalibration_curve(preds, CURVE_SIZES, target, groups,
                                                      repeats=20, seed=args.seed)
    except UsageError:
        raise
    except (ValueError, OSError) as exc:  # ExternalDataError, RunError, NpzFormatError
        return data_error("evaluate", exc)
    lines = report_lines(report)
    for line in lines:
        print(line)
    if out is not None:
        from fnlab.fileio import atomic_write_text, write_json
        from fnlab.metrics import to_jsonable

        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".json":
            write_json(out, to_jsonable(report), allow_nan=False)
        else:
            atomic_write_text(out, "# External validation\n\n```\n" + "\n".join(lines) + "\n```\n")
        figure = out.with_suffix(".reliability.png")
        _reliability_figure(run.test, preds, figure)
        print(f"wrote {out} and {figure}")
    return 0


def _reliability_figure(home, away, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fnlab.plots import reliability_diagram

    ax = reliability_diagram([home, away], ["home test", "external"])
    ax.set_title("calibration at home and away", fontsize=10)
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=120)
    plt.close(ax.figure)
