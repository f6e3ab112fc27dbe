"""``fnlab info``: versions, the device that will be used, the data directory and caches."""

from __future__ import annotations

import platform


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="versions, device, data directory, cached datasets")
    p.add_argument("--device", default="auto", help="device to resolve (default: auto)")
    p.set_defaults(func=_info)


def environment_info(device: str = "auto") -> dict:
    """Everything ``fnlab info`` prints, as a dict (notebook 00 shows it too).

    >>> info = environment_info()  # doctest: +SKIP
    >>> sorted(info)[:3]  # doctest: +SKIP
    ['captum', 'data_dir', 'datasets']
    """
    from fnlab import __version__
    from fnlab.config import data_dir, resolve_device, runs_dir

    info: dict = {"fnlab": __version__, "python": platform.python_version(),
                  "platform": platform.platform(terse=True)}
    for name in ("torch", "torchvision", "captum", "numpy", "sklearn", "mapie"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except ImportError:
            info[name] = "not installed"
    try:
        dev = resolve_device(device)
        info["device"] = str(dev)
        if dev.type == "cuda":
            import torch

            info["device"] += f" ({torch.cuda.get_device_name(dev)})"
    except Exception as exc:  # noqa: BLE001 - shown to the user, not raised
        info["device"] = f"unavailable: {exc}"
    info["data_dir"] = str(data_dir())
    info["runs_dir"] = str(runs_dir())
    try:
        from fnlab.data.registry import cached_status

        info["datasets"] = cached_status()
    except ImportError:
        info["datasets"] = {"synthetic": "built in (no download)"}
    return info


def _info(args) -> int:
    info = environment_info(args.device)
    datasets = info.pop("datasets")
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    print("datasets:")
    for name, status in datasets.items():
        print(f"  {name:<{width}}  {status}")
    return 0
