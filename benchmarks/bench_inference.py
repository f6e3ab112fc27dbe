"""Inference speed of every zoo model at 28 px: latency at batch 1, throughput at batch 256.

For each model (eval mode, ``torch.inference_mode``, random 1-channel 28 px images in
[0, 1], the input normalisation included) and each device (CPU; CUDA too when
present): per-image latency at batch 1 (median and 95th percentile over
``--iters`` calls after warm-up) and images per second at batch 256 (median over
``--reps`` calls). The table also gives each model's forward cost (MFLOP per image,
counted with ``torch.utils.flop_counter``) and its throughput relative to
``smallcnn`` measured in the same run.

Usage::

    python benchmarks/bench_inference.py              # every model, CPU (+ CUDA)
    python benchmarks/bench_inference.py --models smallcnn,resnet18 --devices cpu
    python benchmarks/bench_inference.py --smoke      # 2 models, a few calls
"""

from __future__ import annotations

import argparse
import sys
import time

import _common as C  # noqa: N812  (also puts the project root on sys.path)
import numpy as np

NAME = "inference"
TITLE = "Inference speed at 28 px"
SMOKE = {"models": ["smallcnn", "attention_cnn"], "iters": 5, "reps": 1, "warmup": 1}


BenchError = C.BenchError


def mflops(model, image_size: int = 28) -> float:
    """Forward MFLOP per image (multiply-add = 2 FLOP) at ``image_size`` px."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, model.in_channels, image_size, image_size,
                   device=next(model.parameters()).device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e6


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(model, x, n: int, warmup: int) -> np.ndarray:
    """Wall seconds of ``n`` forward calls on ``x`` after ``warmup`` untimed ones."""
    import torch

    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        _sync(x.device)
        for _ in range(n):
            t0 = time.perf_counter()
            model(x)
            _sync(x.device)
            times.append(time.perf_counter() - t0)
    return np.asarray(times)


def bench_model(name: str, device: str, iters: int, reps: int, warmup: int,
                batch: int = 256, image_size: int = 28, max_seconds: float = 30.0) -> dict:
    """Latency (batch 1) and throughput (batch ``batch``) of one zoo model on one device."""
    import torch

    from fnlab import models

    dev = torch.device(device)
    torch.manual_seed(0)
    model = models.create(name, image_size=image_size).to(dev).eval()
    x1 = torch.rand(1, 1, image_size, image_size, device=dev)
    xb = torch.rand(batch, 1, image_size, image_size, device=dev)
    lat = time_calls(model, x1, iters, warmup)
    # batch throughput: at least 2 calls, at most `reps`, stopping after ~max_seconds
    first = time_calls(model, xb, 1, warmup)
    n_more = int(min(reps - 1, max(1, max_seconds // max(first[0], 1e-6))))
    thr = np.concatenate([first, time_calls(model, xb, n_more, 0)]) if reps > 1 else first
    return {
        "model": name,
        "device": device,
        "n_parameters": models.count_parameters(model),
        "mflops_per_image": mflops(model, image_size),
        "batch1_ms_p50": float(np.percentile(lat, 50) * 1e3),
        "batch1_ms_p95": float(np.percentile(lat, 95) * 1e3),
        "batch1_images_per_second": float(1.0 / np.median(lat)),
        "batch1_calls": len(lat),
        f"batch{batch}_images_per_second": float(batch / np.median(thr)),
        f"batch{batch}_ms_per_image": float(np.median(thr) / batch * 1e3),
        f"batch{batch}_calls": len(thr),
    }


def parse_args(argv=None):
    import torch

    from fnlab import models

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None,
                   help=f"comma-separated subset of: {', '.join(models.available_models())}")
    p.add_argument("--devices", default=None,
                   help="comma list of cpu, cuda (default: cpu, plus cuda when present)")
    p.add_argument("--iters", type=int, default=100, help="timed batch-1 calls (default 100)")
    p.add_argument("--reps", type=int, default=7,
                   help="max timed batch-256 calls (default 7; fewer when one takes long)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up calls (default 5)")
    p.add_argument("--batch", type=int, default=256, help="throughput batch size (default 256)")
    C.add_common_args(p, NAME)
    args = p.parse_args(argv)
    valid = models.available_models()
    names = (SMOKE["models"] if args.smoke else
             [m.strip() for m in args.models.split(",") if m.strip()] if args.models else valid)
    bad = [m for m in names if m not in valid]
    if bad:
        raise BenchError(f"unknown model(s) {bad}; choose from: {', '.join(valid)}")
    args.model_names = names
    devices = ([d.strip() for d in args.devices.split(",") if d.strip()] if args.devices
               else ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    for d in devices:
        if d not in ("cpu", "cuda"):
            raise BenchError(f"unknown device {d!r}; choose cpu or cuda")
        if d == "cuda" and not torch.cuda.is_available():
            raise BenchError("--devices cuda: CUDA is not available on this machine")
    args.device_list = devices
    if args.smoke:
        args.iters, args.reps, args.warmup = SMOKE["iters"], SMOKE["reps"], SMOKE["warmup"]
    for flag in ("iters", "reps", "batch"):
        if getattr(args, flag) < 1:
            raise BenchError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rec = C.Recorder(NAME, TITLE, argv=[sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    import torch

    rows = []
    for device in args.device_list:
        for name in args.model_names:
            r = bench_model(name, device, args.iters, args.reps, args.warmup, args.batch)
            rows.append(r)
            print(f"{name} on {device}: batch 1 p50 {r['batch1_ms_p50']:.2f} ms, "
                  f"p95 {r['batch1_ms_p95']:.2f} ms; batch {args.batch} "
                  f"{r[f'batch{args.batch}_images_per_second']:,.0f} images/s", flush=True)
    key = f"batch{args.batch}_images_per_second"
    ref = {r["device"]: r[key] for r in rows if r["model"] == "smallcnn"}
    cpu = {r["model"]: r[key] for r in rows if r["device"] == "cpu"}
    for r in rows:
        r["throughput_vs_smallcnn"] = r[key] / ref[r["device"]] if r["device"] in ref else None
        if r["device"] == "cuda" and r["model"] in cpu:
            r["cuda_speedup_vs_cpu"] = r[key] / cpu[r["model"]]
    columns = ["model", "device", "params (M)", "MFLOP/image", "batch 1 p50 ms",
               "batch 1 p95 ms", "batch 1 images/s", f"batch {args.batch} images/s",
               "× smallcnn"]
    table_rows = [[r["model"], r["device"], C.fmt(r["n_parameters"] / 1e6, 2),
                   C.fmt(r["mflops_per_image"], 0), C.fmt(r["batch1_ms_p50"], 2),
                   C.fmt(r["batch1_ms_p95"], 2), C.fmt(r["batch1_images_per_second"], 0),
                   C.fmt(r[key], 0), C.fmt(r["throughput_vs_smallcnn"], 2)] for r in rows]
    table = {"columns": columns, "rows": table_rows,
             "caption": f"Random 1 x 28 x 28 inputs, eval mode, torch.inference_mode, "
                        f"{torch.get_num_threads()} torch thread(s) on CPU; batch 1: "
                        f"{args.iters} timed calls after {args.warmup} warm-up; batch "
                        f"{args.batch}: median of up to {args.reps} calls; × smallcnn = "
                        "throughput relative to smallcnn in the same run."}
    notes = []
    if "cuda" not in args.device_list:
        notes.append("No CUDA device on this machine: CPU figures only.")
    if args.smoke:
        notes.append("SMOKE run: a few calls; figures are not meaningful.")
    C.print_table(columns, table_rows, TITLE)
    result = rec.finish({"rows": rows}, smoke=args.smoke, table=table, notes=notes,
                        config={"models": args.model_names, "devices": args.device_list,
                                "iters": args.iters, "reps": args.reps,
                                "warmup": args.warmup, "batch": args.batch,
                                "image_size": 28, "torch_threads": torch.get_num_threads()},
                        device=",".join(args.device_list))
    C.write_result(result, C.out_path(args, NAME))
    return 0


if __name__ == "__main__":
    sys.exit(main())
