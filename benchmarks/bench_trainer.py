"""Trainer overhead: ``fnlab.train.fit`` against a bare PyTorch loop.

Both train the same model (``smallcnn``, 28 px, one logit), on the same in-memory
data, with the same batch size, optimiser (AdamW), one-cycle schedule and
class-weighted BCE, and both run the validation split through the model after
every epoch. The bare loop slices batches from pre-built tensors; ``fit`` does
everything it always does (history, best-epoch bookkeeping, progress bar
disabled, NaN check). Runs alternate (bare, fnlab, bare, fnlab, ...) so that load
from other processes hits both alike; the figure is the median over repeats of
training images per second (wall clock and process CPU time).

Goal: fnlab >= 0.95x the bare loop.

Usage::

    python benchmarks/bench_trainer.py            # real data when ../shared/data has it
    python benchmarks/bench_trainer.py --smoke    # seconds (results go to a temp folder)
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common as C  # noqa: N812  (also puts the project root on sys.path)
import numpy as np

NAME = "trainer"
TITLE = "Trainer overhead: fnlab fit vs a bare PyTorch loop"


def _data(n_train: int, n_val: int, seed: int = 0):
    from fnlab.config import shared_data_dir
    from fnlab.data.imageset import ImageSet

    shared = shared_data_dir()
    path = shared / "pneumoniamnist_28_variant.npz" if shared else None
    if path is not None and path.is_file():
        rng = np.random.default_rng(seed)
        with np.load(path) as z:
            itr = rng.permutation(len(z["train_labels"]))[:n_train]
            iva = rng.permutation(len(z["val_labels"]))[:n_val]
            xtr, ytr = z["train_images"][itr], z["train_labels"].ravel()[itr]
            xva, yva = z["val_images"][iva], z["val_labels"].ravel()[iva]
        source = str(path.name)
    else:  # random images with a learnable signal
        rng = np.random.default_rng(seed)
        ytr, yva = rng.integers(0, 2, n_train), rng.integers(0, 2, n_val)
        xtr = (rng.random((n_train, 28, 28)) * 200 + 40 * ytr[:, None, None]).astype(np.uint8)
        xva = (rng.random((n_val, 28, 28)) * 200 + 40 * yva[:, None, None]).astype(np.uint8)
        source = "random"
    return (ImageSet(xtr, ytr, split="train"), ImageSet(xva, yva, split="val"), source)


def bare_loop(model, train, val, epochs: int, batch_size: int, lr: float, seed: int) -> None:
    """The reference: what a student would write by hand, with no bookkeeping."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    x = torch.from_numpy(train.images).unsqueeze(1).float().div(255)
    y = torch.from_numpy(train.labels)
    xv = torch.from_numpy(val.images).unsqueeze(1).float().div(255)
    counts = np.bincount(train.labels, minlength=2)
    w = torch.tensor(len(y) / (2 * counts), dtype=torch.float32)
    steps = (len(y) + batch_size - 1) // batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps * epochs)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y))
        for i in range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb, yb = x[idx], y[idx]
            out = model(xb)
            wb = w[yb]
            loss = (F.binary_cross_entropy_with_logits(out, yb.float(), reduction="none")
                    * wb).sum() / wb.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            torch.sigmoid(torch.cat([model(xv[j:j + 512]) for j in range(0, len(xv), 512)]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("Usage")[0].strip())
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    ap.add_argument("--n-train", type=int, default=2048)
    ap.add_argument("--n-val", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="results JSON (default: benchmarks/results)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n_train, args.n_val, args.epochs, args.repeats = 256, 128, 1, 1

    import torch

    from fnlab import models
    from fnlab.train import TrainConfig, fit

    rec = C.Recorder(NAME, TITLE, argv)
    train, val, source = _data(args.n_train, args.n_val)
    lr = 3e-3
    cfg = TrainConfig(model="smallcnn", epochs=args.epochs, batch_size=args.batch_size, lr=lr,
                      augment=None, loss="weighted", monitor=None, device="cpu",
                      progress=False, seed=0)
    images = len(train) * args.epochs
    results: dict[str, dict[str, list[float]]] = {
        "bare": {"wall": [], "cpu": []}, "fnlab": {"wall": [], "cpu": []}}

    def timed(kind: str) -> None:
        torch.manual_seed(0)
        model = models.create("smallcnn", image_size=train.image_size)
        w0, c0 = time.perf_counter(), time.process_time()
        if kind == "bare":
            bare_loop(model, train, val, args.epochs, args.batch_size, lr, seed=0)
        else:
            fit(model, train, val, cfg)
        results[kind]["wall"].append(images / (time.perf_counter() - w0))
        results[kind]["cpu"].append(images / (time.process_time() - c0))

    timed("bare")  # warm-up (imports, allocator, kernels); not recorded
    timed("fnlab")
    results = {"bare": {"wall": [], "cpu": []}, "fnlab": {"wall": [], "cpu": []}}
    for _ in range(args.repeats):
        timed("bare")
        timed("fnlab")
    med = {k: {m: statistics.median(v[m]) for m in v} for k, v in results.items()}
    ratio_wall = med["fnlab"]["wall"] / med["bare"]["wall"]
    ratio_cpu = med["fnlab"]["cpu"] / med["bare"]["cpu"]
    figures = {
        "bare_images_per_second": round(med["bare"]["wall"], 1),
        "fnlab_images_per_second": round(med["fnlab"]["wall"], 1),
        "ratio_wall": round(ratio_wall, 3),
        "bare_images_per_cpu_second": round(med["bare"]["cpu"], 1),
        "fnlab_images_per_cpu_second": round(med["fnlab"]["cpu"], 1),
        "ratio_cpu": round(ratio_cpu, 3),
        "ratio": round(ratio_wall, 3),
        "torch_threads": torch.get_num_threads(),
        "all_runs": {k: {m: [round(x, 1) for x in v[m]] for m in v} for k, v in results.items()},
    }
    rows = [["bare PyTorch loop", f"{med['bare']['wall']:.0f}", f"{med['bare']['cpu']:.0f}", "1.000"],
            ["fnlab fit", f"{med['fnlab']['wall']:.0f}", f"{med['fnlab']['cpu']:.0f}",
             f"{ratio_wall:.3f} (cpu {ratio_cpu:.3f})"]]
    for r in rows:
        print("  ".join(f"{c:>22}" for c in r))
    result = rec.finish(
        figures, smoke=args.smoke,
        config={"model": "smallcnn", "n_train": len(train), "n_val": len(val),
                "epochs": args.epochs, "batch_size": args.batch_size, "repeats": args.repeats,
                "data": source},
        table={"columns": ["loop", "images/s (wall)", "images/s (CPU time)", "ratio"],
               "rows": rows, "caption": "median over alternating repeats"},
        goals=[C.goal("fnlab fit >= 0.95x a bare PyTorch loop", None if args.smoke
                      else ratio_wall >= 0.95 or ratio_cpu >= 0.95,
                      f"wall {ratio_wall:.3f}, CPU time {ratio_cpu:.3f}")],
        notes=["Other processes share the CPU; runs alternate so load hits both loops alike, "
               "and the CPU-time ratio is less sensitive to it than the wall-clock ratio."],
    )
    C.write_result(result, args.out or C.default_out(NAME, args.smoke))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
