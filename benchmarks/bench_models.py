"""Every zoo model on real PneumoniaMNIST, beside the MedMNIST v2 ResNet-18 protocol.

For each model and seed: train on the train split, choose the threshold on the
validation split (largest threshold with validation recall >= 0.98), and report on
the test split: AUC with a bootstrap 95% CI, sensitivity and specificity at that
threshold, false negatives, accuracy at 0.5 (the published MedMNIST figure) and the
training wall time. Then the best mean-ensemble of the zoo models (members and size
chosen on validation) against the best single model (chosen on validation). The test
split is never used to choose anything.

Budget (stated in the results table): the two compact CNNs (``smallcnn``,
``attention_cnn``, the course's own models) train with the base recipe
(``TrainConfig`` defaults, 15 epochs on the whole train split). Every other model
(``HEAVY``: the torchvision backbones in their small-image form, the ViT and the
MedMNIST ResNet-18) trains 20x to 100x slower per image on a CPU, so on 2 cores it
gets a short budget instead: ``heavy_epochs`` epochs on a stratified subset of
``heavy_train`` training images (default 2 x 800), which keeps the whole benchmark
near 50 minutes. On a GPU give them the recipe: ``--heavy-epochs 15 --heavy-train 0``.
The fnlab ResNet-18 and the MedMNIST ResNet-18 always get the same budget, so that pair
compares the two recipes like for like.

Then the 28 px recipe of ``bench_recipe.py`` on the same file (``--no-recipe`` skips it):
its ablation rows screened on validation, the base recipe and the winner at every seed,
and the fair side-by-side, the MedMNIST v2 protocol given the recipe's wall-clock, beside
the published figures; its runs are shared with ``bench_recipe.py`` through
``runs/bench_recipe/``, so after one of the two has run the other only reads them.

The MedMNIST v2 reference protocol (re-implemented here, from
github.com/MedMNIST/experiments ``MedMNIST2D/train_and_eval_pytorch.py`` and
``models.py``): the CIFAR-style ResNet-18 (3x3 stride-1 stem, no max-pool; 1 input
channel, as MedMNIST's default ``as_rgb=False``; 2 logits with cross-entropy),
inputs ``(x/255 - 0.5) / 0.5``, no augmentation, Adam lr 1e-3 without weight
decay, batch 128, ``MultiStepLR`` gamma 0.1 at 50% and 75% of the epochs (the
published 100-epoch schedule with milestones 50 and 75, shortened to the budget and
rounded to whole epochs), the epoch with the best validation AUC kept.

Usage::

    python benchmarks/bench_models.py                       # the full benchmark (union file)
    python benchmarks/bench_models.py --models smallcnn,attention_cnn,resnet18,medmnist_resnet18
    python benchmarks/bench_models.py --models smallcnn,resnet18 --seeds 3 --epochs 5
    python benchmarks/bench_models.py --smoke               # seconds: 2 models, 1 seed

Per-run predictions are cached in ``runs/bench_models/`` (git-ignored), keyed by the
model, seed, budget, training config and data checksum, so an interrupted run
resumes; ``--retrain`` ignores the cache.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time
import warnings
from pathlib import Path

import _common as C  # noqa: N812  (also puts the project root on sys.path)
import numpy as np

NAME = "models"
TITLE = "Models on real PneumoniaMNIST (28 px)"
REFERENCE = "medmnist_resnet18"
RECALL_TARGET = 0.98
#: per-model training budget: epochs (None = the base recipe's) on the whole train split
HEAVY = ("resnet18", "resnet50", "densenet121", "mobilenet_v2", "efficientnet_b0", "vit_tiny",
         REFERENCE)
#: the budget (see the module docstring): light models / heavy models
DEFAULT_LIGHT_EPOCHS = 15
DEFAULT_HEAVY_EPOCHS = 2
DEFAULT_HEAVY_TRAIN = 800
SMOKE = {"models": ["smallcnn", "attention_cnn", REFERENCE], "seeds": [0], "epochs": 1,
         "train": 128, "val": 96, "test": 96, "n_resamples": 200}
CACHE_DIR = C.ROOT / "runs" / "bench_models"


BenchError = C.BenchError


# --------------------------------------------------------------------------- data
def default_data_path() -> Path | None:
    """``../shared/data/pneumoniamnist_28_union.npz`` (the official split rebuilt) beside
    the checkout, else the variant file there, or None."""
    return (C.shared_file("pneumoniamnist_28_union.npz")
            or C.shared_file("pneumoniamnist_28_variant.npz"))


def load_data(path: Path) -> dict:
    """The three splits of a MedMNIST-layout .npz (checksum recorded, not enforced)."""
    from fnlab.data.medmnist import ChecksumWarning, load_npz

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChecksumWarning)
        try:
            return load_npz(path, verify="warn")
        except ValueError as exc:
            raise BenchError(str(exc)) from None


def stratified_head(imageset, n: int | None, seed: int = 0):
    """A stratified random subset of at most ``n`` images (the whole set when None)."""
    if n is None or len(imageset) <= n:
        return imageset
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(imageset))
    keep, _ = train_test_split(idx, train_size=int(n), stratify=imageset.labels,
                               random_state=seed)
    return imageset.subset(np.sort(keep))


# --------------------------------------------------------------------------- reference
def medmnist_resnet18(in_channels: int = 1, num_classes: int = 2):
    """MedMNIST v2's 28 px ResNet-18: torchvision's ResNet-18 with the CIFAR stem
    (3x3 stride-1 first convolution, no max-pool), the same network as MedMNIST's
    ``models.ResNet18`` (adapted from kuangliu/pytorch-cifar)."""
    import torch.nn as nn
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def reference_milestones(epochs: int) -> list[int]:
    """The 100-epoch schedule's milestones (50, 75) scaled to ``epochs``, whole epochs.

    >>> reference_milestones(100), reference_milestones(4), reference_milestones(1)
    ([50, 75], [2, 3], [1])
    """
    return sorted({max(1, int(f * epochs + 0.5)) for f in (0.5, 0.75)})


def train_reference(train, val, epochs: int, seed: int, device: str = "auto") -> dict:
    """Train MedMNIST's ResNet-18 by its protocol; return the best-val-AUC model and facts."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score

    from fnlab.config import resolve_device, seed_everything

    seed_everything(seed)
    dev = resolve_device(device)
    t0 = time.perf_counter()

    def prep(images):
        x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
        return x.unsqueeze(1).sub_(0.5).div_(0.5)

    x_tr, y_tr = prep(train.images).to(dev), torch.from_numpy(train.labels).to(dev)
    x_va = prep(val.images)
    model = medmnist_resnet18().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=reference_milestones(epochs),
                                                 gamma=0.1)
    gen = torch.Generator().manual_seed(seed)
    best_auc, best_epoch, best_state, seen, train_time = -1.0, 0, None, 0, 0.0
    for epoch in range(1, epochs + 1):
        t_ep = time.perf_counter()
        model.train()
        order = torch.randperm(len(y_tr), generator=gen).to(dev)
        for start in range(0, len(order), 128):
            idx = order[start:start + 128]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
            seen += len(idx)
        train_time += time.perf_counter() - t_ep
        sched.step()
        scores = reference_scores(model, x_va, dev)
        auc = float(roc_auc_score(val.labels, scores))
        if auc > best_auc:
            best_auc, best_epoch = auc, epoch
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return {"model": model, "train_seconds": time.perf_counter() - t0,
            "images_per_second": seen / train_time if train_time else None,
            "best_epoch": best_epoch, "n_train": len(train), "device": str(dev)}


def reference_scores(model, x, dev, batch_size: int = 512) -> np.ndarray:
    """Softmax probability of class 1 (pneumonia), as MedMNIST's evaluator reads it."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(torch.softmax(model(x[start:start + batch_size].to(dev)), 1)[:, 1].cpu())
    return torch.cat(out).double().numpy()


# --------------------------------------------------------------------------- one run
def zoo_config(name: str, seed: int, epochs: int, device: str):
    """The TrainConfig of a zoo model's run: the base recipe (TrainConfig defaults) with ``epochs`` epochs."""
    from fnlab.train import TrainConfig

    return TrainConfig(dataset="pneumoniamnist", profile="full", image_size=28, model=name,
                       epochs=epochs, seed=seed, device=device, progress=False)


def run_key(name: str, seed: int, epochs: int, data_md5: str, config: dict | None,
            n_train: int) -> str:
    """Cache key of one run: model, seed, budget, config, data checksum, fnlab version."""
    import fnlab

    blob = json.dumps({"model": name, "seed": seed, "epochs": epochs, "config": config,
                       "data": data_md5, "n_train": n_train, "fnlab": fnlab.__version__,
                       "protocol": "medmnist-v2" if name == REFERENCE else "fnlab"},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_one(name: str, seed: int, epochs: int, data: dict, device: str) -> dict:
    """Train one model/seed; return val and test Predictions and the training facts."""
    from fnlab import models
    from fnlab.predictions import Predictions
    from fnlab.train import fit, predict

    train, val, test = data["train"], data["val"], data["test"]
    if name == REFERENCE:
        res = train_reference(train, val, epochs, seed, device)
        import torch

        dev = torch.device(res["device"])
        preds = {}
        for split, s in (("val", val), ("test", test)):
            x = torch.from_numpy(np.ascontiguousarray(s.images)).float().div_(255.0)
            x = x.unsqueeze(1).sub_(0.5).div_(0.5)
            preds[split] = Predictions(s.labels, reference_scores(res["model"], x, dev),
                                       split=split, model=name, class_names=s.class_names)
        n_params = models.count_parameters(res["model"])
        facts = {k: res[k] for k in ("train_seconds", "images_per_second", "best_epoch",
                                     "n_train")}
    else:
        cfg = zoo_config(name, seed, epochs, device)
        model = models.create(name, num_classes=train.num_classes,
                              in_channels=train.in_channels, image_size=train.image_size)
        result = fit(model, train, val, cfg)
        preds = {split: predict(result.model, s, tta=cfg.tta, model_name=name)
                 for split, s in (("val", val), ("test", test))}
        n_params = models.count_parameters(result.model)
        facts = {"train_seconds": result.train_seconds,
                 "images_per_second": result.images_per_second,
                 "best_epoch": result.best_epoch, "n_train": result.n_train}
    return {"val": preds["val"], "test": preds["test"], "n_parameters": n_params, **facts}


def evaluate(val, test, seed: int, n_resamples: int) -> dict:
    """Val AUC, the recall>=0.98 threshold chosen on val, and the test report at it."""
    from fnlab.metrics import binary_metrics, binary_report
    from fnlab.thresholds import choose_threshold

    choice = choose_threshold(val, "recall", RECALL_TARGET)
    report = binary_report(test, choice.threshold, choice.label, ci=True,
                           n_resamples=n_resamples, seed=seed)
    return {
        "val_auc": binary_metrics(val, 0.5)["auc"],
        "threshold": choice.threshold,
        "test_auc": report["auc"], "test_auc_ci": report["auc_ci"],
        "sensitivity": report["sensitivity"], "specificity": report["specificity"],
        "fn": report["fn"], "fp": report["fp"], "tp": report["tp"], "tn": report["tn"],
        "test_accuracy_at_0.5": binary_metrics(test, 0.5)["accuracy"],
    }


def save_run(folder: Path, out: dict) -> None:
    """Store a run: each Predictions value as ``<key>.npz``, the other facts in run.json."""
    from fnlab.predictions import Predictions

    folder.mkdir(parents=True, exist_ok=True)
    facts = {}
    for k, v in out.items():
        if isinstance(v, Predictions):
            v.save(folder / f"{k}.npz")
        else:
            facts[k] = v
    (folder / "run.json").write_text(json.dumps(C.jsonable(facts), indent=2))


def load_run(folder: Path) -> dict | None:
    """A run stored by :func:`save_run`, or None when there is none or it is unusable
    (said on stdout: the caller trains again)."""
    from fnlab.predictions import Predictions

    if not (folder / "run.json").is_file():
        return None
    try:
        out = json.loads((folder / "run.json").read_text())
        out.update({p.stem: Predictions.load(p) for p in sorted(folder.glob("*.npz"))})
        return out
    except (OSError, ValueError) as exc:
        print(f"  cache {folder} unusable ({exc}); training again", flush=True)
        return None


def cached_run(cache: Path | None, key: str, compute, reuse: bool = True) -> dict:
    """A run's predictions and facts from ``cache/key`` (when ``reuse``), else
    ``compute()``, stored in ``cache/key`` when a cache is given."""
    folder = cache / key if cache is not None else None
    if folder is not None and reuse:
        cached = load_run(folder)
        if cached is not None and {"val", "test"} <= set(cached):
            return {**cached, "cached": True}
    out = compute()
    if folder is not None:
        save_run(folder, out)
    return {**out, "cached": False}


# --------------------------------------------------------------------------- ensembles
def best_ensemble(runs: dict, ranking: list[str], seeds: list[int], n_resamples: int) -> dict:
    """Mean-ensemble of the top-k zoo models by validation AUC; k chosen on validation.

    For each k >= 2 the ensemble of the k best models (same seed) is scored on
    validation; the k with the highest mean validation AUC over seeds wins. Its
    threshold (recall >= 0.98) is chosen on the ensemble's validation scores.
    """
    from fnlab.ensemble import mean_ensemble
    from fnlab.metrics import binary_metrics

    candidates = []
    for k in range(2, len(ranking) + 1):
        members = ranking[:k]
        val_aucs = [binary_metrics(mean_ensemble([runs[m, s]["val"] for m in members]),
                                   0.5)["auc"] for s in seeds]
        candidates.append({"k": k, "members": members, "val_auc": float(np.mean(val_aucs))})
    if not candidates:
        return {}
    chosen = max(candidates, key=lambda c: (c["val_auc"], -c["k"]))
    per_seed = []
    for s in seeds:
        val = mean_ensemble([runs[m, s]["val"] for m in chosen["members"]], name="ensemble")
        test = mean_ensemble([runs[m, s]["test"] for m in chosen["members"]], name="ensemble")
        per_seed.append({"seed": s, **evaluate(val, test, s, n_resamples)})
    # every member of every seed in one ensemble
    val = mean_ensemble([runs[m, s]["val"] for m in chosen["members"] for s in seeds])
    test = mean_ensemble([runs[m, s]["test"] for m in chosen["members"] for s in seeds])
    pooled = evaluate(val, test, seeds[0], n_resamples)
    return {"members": chosen["members"], "k": chosen["k"], "candidates": candidates,
            "per_seed": per_seed, "summary": summarise(per_seed), "all_seeds": pooled}


def summarise(rows: list[dict]) -> dict:
    """Mean/sd/min/max over seeds of each figure; CI bounds averaged over seeds."""
    out = {}
    for key in ("val_auc", "test_auc", "sensitivity", "specificity", "fn", "fp",
                "test_accuracy_at_0.5", "train_seconds", "images_per_second", "best_epoch"):
        vals = [r.get(key) for r in rows]
        if any(v is not None for v in vals):
            out[key] = C.summary_stats(vals)
    cis = [r["test_auc_ci"] for r in rows if r.get("test_auc_ci") and None not in r["test_auc_ci"]]
    if cis:
        out["test_auc_ci_mean"] = [float(np.mean([c[0] for c in cis])),
                                   float(np.mean([c[1] for c in cis]))]
    return out


# --------------------------------------------------------------------------- report
def _ms(stats: dict | None, digits: int = 3, spread: str = "sd") -> str:
    if not stats or stats.get("mean") is None:
        return "—"
    if stats["n"] == 1:
        return C.fmt(stats["mean"], digits)
    if spread == "range":
        return (f"{C.fmt(stats['mean'], digits)} ({C.fmt(stats['min'], digits)}–"
                f"{C.fmt(stats['max'], digits)})")
    return f"{C.fmt(stats['mean'], digits)} ± {C.fmt(stats['sd'], digits)}"


def _ci(summary: dict) -> str:
    ci = summary.get("test_auc_ci_mean")
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "—"


def summary_row(label: str, budget: str, s: dict, timed: bool = True) -> list[str]:
    """One table row (the columns of :func:`build_table`) from a :func:`summarise` dict."""
    return [label, budget, _ms(s.get("val_auc")), _ms(s.get("test_auc")), _ci(s),
            _ms(s.get("sensitivity")), _ms(s.get("specificity")), _ms(s.get("fn"), 1),
            _ms(s.get("test_accuracy_at_0.5")),
            _ms(s.get("train_seconds"), 0) if timed else "—"]


def build_table(model_rows: list[dict], ensemble: dict, n_test_pos: int) -> dict:
    columns = ["model", "budget", "val AUC", "test AUC (mean ± sd)", "AUC 95% CI",
               "sensitivity", "specificity", f"FN (of {n_test_pos})", "ACC@0.5",
               "train s"]
    rows = [summary_row(m["label"], m["budget"], m["summary"]) for m in model_rows]
    if ensemble:
        rows.append(summary_row(f"mean ensemble of {', '.join(ensemble['members'])}", "—",
                                ensemble["summary"], timed=False))
        p = ensemble["all_seeds"]
        ci = p.get("test_auc_ci") or [None, None]
        rows.append([f"same, all seeds' runs pooled ({ensemble['k']} models x seeds)", "—",
                     C.fmt(p["val_auc"]), C.fmt(p["test_auc"]),
                     f"{C.fmt(ci[0])}–{C.fmt(ci[1])}", C.fmt(p["sensitivity"]),
                     C.fmt(p["specificity"]), C.fmt(p["fn"]),
                     C.fmt(p["test_accuracy_at_0.5"]), "—"])
    return {"columns": columns, "rows": rows}


def build_goals(model_rows: list[dict], ensemble: dict, best: dict | None) -> list[dict]:
    goals = []
    if best is None:
        return goals
    auc = best["summary"]["test_auc"]["mean"]
    top = max(model_rows, key=lambda m: m["summary"]["test_auc"]["mean"])
    detail = f"best single model chosen on validation: {best['name']}, test AUC {auc:.3f}"
    if top["name"] != best["name"]:
        detail += (f" (highest test AUC in the table: {top['name']} "
                   f"{top['summary']['test_auc']['mean']:.3f}, not chosen: no test-set selection)")
    goals.append(C.goal("best single model test AUC >= 0.975", auc >= 0.975, detail))
    if ensemble:
        e_auc = ensemble["summary"]["test_auc"]["mean"]
        goals.append(C.goal("best ensemble test AUC higher than the best single model's",
                            e_auc > auc, f"ensemble {e_auc:.3f} vs {best['name']} {auc:.3f}"))
    for who, s in (("best single model", best["summary"]),
                   ("ensemble", ensemble.get("summary") if ensemble else None)):
        if not s:
            continue
        sens, spec = s["sensitivity"]["mean"], s["specificity"]["mean"]
        goals.append(C.goal(
            f"{who}: sensitivity >= 0.98 with specificity >= 0.80 (threshold chosen on val)",
            sens >= 0.98 and spec >= 0.80,
            f"sensitivity {sens:.3f}, specificity {spec:.3f} (test, mean over seeds)"))
    return goals


def recipe_section(data_path: Path, n_seeds: int, args) -> dict:
    """The recipe and the fair side-by-side of ``bench_recipe.py`` on ``data_path``, as rows
    of this benchmark's table (in its columns), goals, figures and notes."""
    import bench_recipe as BR  # noqa: N812  (imports this module: loaded lazily, no cycle)

    # the winner's time alone is bench_recipe's figure (this benchmark keeps the machine busy)
    m = BR.measure(data_path, seeds=1 if args.smoke else n_seeds, jobs=args.recipe_jobs,
                   threads=1, smoke=args.smoke, n_resamples=args.n_resamples,
                   retrain=args.retrain, time_alone_threads=None,
                   log=lambda msg: print(msg, flush=True))
    by_row = {r["row"]: r for r in m["results"]}
    winner = m["winner"]["row"] if m["winner"] else None
    shown = [("recipe_today", "base recipe (TrainConfig defaults, bench_recipe baseline)")]
    if winner and winner != "recipe_today":
        shown.append((winner, f"base recipe + {winner} (winner on validation, fnlab train's default)"))
    shown.append((BR.REFERENCE_ROW, "ResNet-18, MedMNIST v2 protocol, the recipe's wall-clock"))
    rows = []
    for key, label in shown:
        r = by_row.get(key)
        if r is None:
            continue
        if key == winner:
            label = label.replace("(winner", "(**winner**")
        budget = (f"{'+'.join(str(e) for e in r['epochs'])} ep × {r['n_train']:,}"
                  if r.get("epochs") else "—")
        rows.append(summary_row(label, budget, r["summary"]))
    for label, auc in BR.PUBLISHED.items():
        rows.append([label, "—", "—", C.fmt(auc), "—", "—", "—", "—", "—", "—"])
    figures = {"winner": winner,
               "published": BR.PUBLISHED,
               "rows": {r["row"]: {"what": r["what"], "epochs": r["epochs"],
                                   "n_train": r["n_train"], "summary": r["summary"]}
                        for r in m["results"]}}
    notes = [f"Recipe rows: bench_recipe.py on the same file ({len(m['results'])} rows, "
             f"{len(m['seeds'])} seed(s) for the baseline, the winner and the MedMNIST "
             "protocol; the full ablation table is in recipe.json). The MedMNIST protocol "
             "there trains for at least the winner's mean wall-clock, not for 2 epochs on 800 "
             "images as in the zoo rows above. The winner's training time alone is "
             "bench_recipe.py's figure (recipe.json), not measured here."]
    goals = [dict(g, goal=f"recipe: {g['goal']}") for g in m["goals"] if g["met"] is not None]
    return {"rows": rows, "goals": goals,
            "figures": figures, "notes": notes}


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    from fnlab import models

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None,
                   help="a PneumoniaMNIST-layout .npz (default ../shared/data/"
                        "pneumoniamnist_28_variant.npz)")
    p.add_argument("--models", default=None,
                   help="comma-separated subset of: "
                        f"{', '.join(models.available_models() + [REFERENCE])} (default all)")
    p.add_argument("--seeds", default="3",
                   help="number of seeds (0..N-1) or a comma list, e.g. 0,1,2 (default 3)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs for every model (overrides --light-epochs/--heavy-epochs)")
    p.add_argument("--light-epochs", type=int, default=DEFAULT_LIGHT_EPOCHS,
                   help=f"epochs of the light models (default {DEFAULT_LIGHT_EPOCHS})")
    p.add_argument("--heavy-epochs", type=int, default=DEFAULT_HEAVY_EPOCHS,
                   help=f"epochs of {', '.join(HEAVY)} (default {DEFAULT_HEAVY_EPOCHS})")
    p.add_argument("--heavy-train", type=int, default=DEFAULT_HEAVY_TRAIN,
                   help="training images of the heavy models: a stratified subset, the same "
                        "for every heavy model of a seed (default "
                        f"{DEFAULT_HEAVY_TRAIN or 'all'}; 0 = all)")
    p.add_argument("--train", type=int, default=None,
                   help="training images of every model (stratified subset; default all)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    p.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--cache", default=str(CACHE_DIR),
                   help="folder of cached per-run predictions (default runs/bench_models)")
    p.add_argument("--retrain", action="store_true", help="ignore cached runs")
    p.add_argument("--no-recipe", dest="recipe", action="store_false",
                   help="skip the 28 px recipe and the same-budget MedMNIST side-by-side "
                        "(bench_recipe.py on the same file)")
    p.add_argument("--recipe-jobs", type=int, default=2,
                   help="training processes for the recipe's runs (default 2, one torch "
                        "thread each)")
    C.add_common_args(p, NAME)
    args = p.parse_args(argv)
    valid = models.available_models() + [REFERENCE]
    if args.smoke:
        names = SMOKE["models"]
    elif args.models:
        names = [m.strip() for m in args.models.split(",") if m.strip()]
    else:
        names = valid
    bad = [m for m in names if m not in valid]
    if bad:
        raise BenchError(f"unknown model(s) {bad}; choose from: {', '.join(valid)}")
    args.model_names = names
    try:
        if args.smoke:
            args.seed_list = SMOKE["seeds"]
        elif "," in args.seeds:
            args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
        else:
            args.seed_list = list(range(int(args.seeds)))
    except ValueError:
        raise BenchError(f"--seeds must be a count or a comma list of ints, got {args.seeds!r}") from None
    if not args.seed_list:
        raise BenchError("--seeds gives no seed")
    for flag in ("epochs", "light_epochs", "heavy_epochs"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise BenchError(f"--{flag.replace('_', '-')} must be >= 1, got {v}")
    if args.recipe_jobs < 1:
        raise BenchError(f"--recipe-jobs must be >= 1, got {args.recipe_jobs}")
    for flag in ("heavy_train", "train"):
        v = getattr(args, flag)
        if v is not None and v < 0:
            raise BenchError(f"--{flag.replace('_', '-')} must be >= 0, got {v}")
    return args


def budget_note(args, model_rows: list[dict], recipe: dict, n_train: int) -> str:
    """One sentence stating the training budget of this run."""
    tiers: dict[str, list[str]] = {}
    for m in model_rows:
        tiers.setdefault(f"{m['epochs']} epoch(s) on {m['n_train']:,} training images",
                         []).append(m["name"])
    parts = "; ".join(f"{', '.join(names)}: {what}" for what, names in tiers.items())
    heavy = ("" if args.smoke or args.epochs else
             " (every model but the two compact CNNs is 20-100x slower per image on a CPU and "
             "gets a short budget so that the whole benchmark fits about 50 minutes on 2 CPU "
             "cores: its figures are no verdict on the architecture; a stratified subset is "
             "the same for every model of a seed)")
    return (f"Budget: {parts}{heavy}. Zoo models train with the base recipe (TrainConfig "
            f"defaults: {recipe['optimizer']} lr {recipe['lr']:g}, {recipe['schedule']} "
            f"schedule, batch {recipe['batch_size']}, '{recipe['loss']}' loss, "
            f"'{recipe['augment']}' augmentation, best epoch by {recipe['monitor']}); the full "
            f"train split has {n_train:,} images.")


def plan(name: str, args) -> tuple[int, int | None]:
    """``(epochs, training-image cap or None)`` of ``name`` under the budget."""
    if args.smoke:
        return SMOKE["epochs"], None
    heavy = name in HEAVY
    epochs = args.epochs or (args.heavy_epochs if heavy else args.light_epochs)
    cap = args.train if args.train else (args.heavy_train if heavy else None)
    return epochs, (cap or None)


def main(argv=None) -> int:
    args = parse_args(argv)
    rec = C.Recorder(NAME, TITLE, argv=[sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    data_path = Path(args.data).expanduser() if args.data else default_data_path()
    if data_path is None:
        raise BenchError("no --data given and neither pneumoniamnist_28_union.npz nor "
                         "pneumoniamnist_28_variant.npz is in ../shared/data beside this "
                         "checkout; pass --data PATH (any PneumoniaMNIST-layout .npz)")
    if not data_path.is_file():
        raise BenchError(f"--data {data_path}: file not found")
    data = load_data(data_path)
    if args.smoke:
        data = {s: stratified_head(data[s], SMOKE[s]) for s in ("train", "val", "test")}
        args.n_resamples = SMOKE["n_resamples"]
    md5 = data["train"].meta.get("md5")
    import torch

    from fnlab.config import resolve_device
    from fnlab.train import TrainConfig

    device = str(resolve_device(args.device))
    cache = None if args.smoke else Path(args.cache)
    print(f"data {data_path} (md5 {md5}): " + "; ".join(
        data[s].summary() for s in ("train", "val", "test")), flush=True)
    print(f"models {args.model_names}, seeds {args.seed_list}, device {device}, "
          f"torch threads {torch.get_num_threads()}", flush=True)

    runs: dict = {}
    per_run: list[dict] = []
    total = len(args.model_names) * len(args.seed_list)
    for name in args.model_names:
        epochs, cap = plan(name, args)
        print(f"  plan: {name}: {epochs} epoch(s) x {cap or len(data['train'])} training "
              f"images x {len(args.seed_list)} seed(s)", flush=True)
    if args.dry_run:
        return 0
    done = 0
    for name in args.model_names:
        epochs, cap = plan(name, args)
        for seed in args.seed_list:
            # the same stratified subset for every model of a seed
            seed_data = dict(data, train=stratified_head(data["train"], cap, seed))
            cfg = None if name == REFERENCE else zoo_config(name, seed, epochs, device).to_dict()
            key = run_key(name, seed, epochs, md5, {k: v for k, v in (cfg or {}).items()
                                                     if k not in ("device", "progress")},
                          len(seed_data["train"]))
            t0 = time.perf_counter()
            out = cached_run(cache, key, lambda n=name, s=seed, e=epochs, d=seed_data:
                             train_one(n, s, e, d, device), reuse=not args.retrain)
            runs[name, seed] = out
            row = {"model": name, "seed": seed, "epochs": epochs, "cached": out["cached"],
                   "n_train": out["n_train"], "n_parameters": out["n_parameters"],
                   "train_seconds": out["train_seconds"],
                   "images_per_second": out["images_per_second"],
                   "best_epoch": out["best_epoch"],
                   **evaluate(out["val"], out["test"], seed, args.n_resamples)}
            per_run.append(row)
            done += 1
            print(f"[{done}/{total}] {name} seed {seed}: {epochs} ep, "
                  f"{'cached' if out['cached'] else f'{time.perf_counter() - t0:.0f} s'}, "
                  f"train {out['train_seconds']:.0f} s, val AUC {row['val_auc']:.3f}, "
                  f"test AUC {row['test_auc']:.3f}, sens {row['sensitivity']:.3f}, "
                  f"spec {row['specificity']:.3f}, FN {row['fn']}", flush=True)

    model_rows = []
    for name in args.model_names:
        rows = [r for r in per_run if r["model"] == name]
        epochs = rows[0]["epochs"]
        label = ("ResNet-18, MedMNIST v2 protocol (re-impl.)" if name == REFERENCE else name)
        model_rows.append({"name": name, "label": label, "epochs": epochs,
                           "n_train": rows[0]["n_train"], "n_parameters": rows[0]["n_parameters"],
                           "budget": f"{epochs} ep × {rows[0]['n_train']:,}",
                           "summary": summarise(rows)})
    zoo = [m for m in model_rows if m["name"] != REFERENCE]
    ranking = [m["name"] for m in sorted(zoo, key=lambda m: -m["summary"]["val_auc"]["mean"])]
    best = next((m for m in zoo if ranking and m["name"] == ranking[0]), None)
    ensemble = best_ensemble(runs, ranking, args.seed_list, args.n_resamples) \
        if len(ranking) >= 2 else {}

    n_pos = int((data["test"].labels != 0).sum())
    table = build_table(model_rows, ensemble, n_pos)
    table["caption"] = (
        f"Test split ({len(data['test'])} images, {n_pos} pneumonia); {len(args.seed_list)} "
        f"seed(s), mean ± sd over seeds; AUC 95% CI: bootstrap ({args.n_resamples} "
        "resamples) per seed, bounds averaged; sensitivity/specificity/FN at the threshold "
        f"chosen on validation for recall >= {RECALL_TARGET}; ACC@0.5 = accuracy at 0.5 (the "
        "published MedMNIST figure); budget = epochs × training images; train s = wall "
        "time of training incl. per-epoch validation.")
    goals = build_goals(model_rows, ensemble, best)
    comparison = {}
    by = {m["name"]: m for m in model_rows}
    if "resnet18" in by and REFERENCE in by:
        a, b = by["resnet18"]["summary"], by[REFERENCE]["summary"]
        comparison = {
            "fnlab_resnet18_minus_medmnist_auc": a["test_auc"]["mean"] - b["test_auc"]["mean"],
            "fnlab_resnet18_over_medmnist_train_seconds":
                a["train_seconds"]["mean"] / b["train_seconds"]["mean"],
        }
    recipe = TrainConfig().to_dict()
    config = {
        "data": str(data_path), "data_md5": md5,
        "splits": {s: data[s].counts() for s in ("train", "val", "test")},
        "models": args.model_names, "seeds": args.seed_list,
        "epochs": {m["name"]: m["epochs"] for m in model_rows},
        "heavy_models": list(HEAVY), "threshold_rule": f"recall>={RECALL_TARGET} on val",
        "n_resamples": args.n_resamples, "device": device,
        "fnlab_recipe": {k: recipe[k] for k in ("epochs", "batch_size", "lr", "weight_decay",
                                                  "optimizer", "schedule", "loss", "augment",
                                                  "monitor", "tta", "balanced_sampler")},
        "reference_protocol": {"optimizer": "adam", "lr": 1e-3, "batch_size": 128,
                               "schedule": "MultiStepLR gamma 0.1 at 50% and 75% of epochs",
                               "augment": None, "normalize": "(x - 0.5) / 0.5",
                               "loss": "cross-entropy, 2 logits", "in_channels": 1,
                               "model_selection": "best validation AUC"},
    }
    figures = {"per_run": per_run,
               "models": {m["name"]: {k: v for k, v in m.items() if k != "name"}
                          for m in model_rows},
               "ranking_by_val_auc": ranking,
               "best_single": best["name"] if best else None,
               "ensemble": {k: v for k, v in ensemble.items()},
               "comparison": comparison}
    notes = [
        budget_note(args, model_rows, recipe, len(data["train"])),
        "MedMNIST v2 protocol re-implemented: CIFAR-style ResNet-18 (3x3 stride-1 stem, no "
        "max-pool, 1 channel as MedMNIST's default), Adam 1e-3, batch 128, no augmentation, "
        "(x-0.5)/0.5, lr x0.1 at 50% and 75% of the epochs, best validation AUC kept "
        "(MedMNIST's script stores `best_model = model`, i.e. the last epoch's weights; we "
        "keep the best epoch, the stated protocol).",
        "Selection uses validation only: best single model = highest mean validation AUC; "
        "the ensemble's members (top-k zoo models by validation AUC) and k are chosen on "
        "validation; thresholds are chosen on validation.",
    ]
    if args.recipe:
        recipe_part = recipe_section(data_path, len(args.seed_list), args)
        table["rows"].extend(recipe_part["rows"])
        goals.extend(recipe_part["goals"])
        figures["recipe"] = recipe_part["figures"]
        notes.extend(recipe_part["notes"])
    if args.smoke:
        notes.append("SMOKE run: tiny subsets, 1 epoch; figures are not meaningful.")
    C.print_table(table["columns"], table["rows"], TITLE)
    for g in goals:
        print(f"goal {'MET' if g['met'] else 'NOT MET'}: {g['goal']} — {g['detail']}")
    result = rec.finish(figures, smoke=args.smoke, config=config, table=table, goals=goals,
                        notes=notes, device=device)
    C.write_result(result, C.out_path(args, NAME))
    return 0


if __name__ == "__main__":
    sys.exit(main())
