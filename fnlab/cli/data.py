"""``fnlab data``: list, download, check and preview datasets.

::

    fnlab data list                                   # registry and what is cached
    fnlab data download pneumoniamnist --size 28      # verified download into data_dir()
    fnlab data check PATH                             # exit 0 clean, 1 problems, 2 usage
    fnlab data preview PATH --out grid.png            # PATH: .npz, folder or registry name
"""

from __future__ import annotations

import sys
from pathlib import Path

from fnlab.cli import UsageError, error_line
from fnlab.cli.validate import image_side, positive_float, positive_int, seed_int


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="list, download, check and preview datasets",
                              description=__doc__.split("::")[0].strip())
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")

    q = sub.add_parser("list", help="datasets in the registry and whether they are cached")
    q.add_argument("--verbose", "-v", action="store_true", help="also licence and citation")
    q.set_defaults(func=_list)

    q = sub.add_parser("download", help="download PneumoniaMNIST (or ChestMNIST, an external "
                                        "site) with md5 verification")
    q.add_argument("name", help="dataset to download (pneumoniamnist, or chestmnist: NIH "
                                "adult X-rays, used as an external test site)")
    q.add_argument("--size", type=int, default=28,
                   help="image side: 28 (about 4 MB, the default) or the MedMNIST+ 64, 128, 224 "
                        "(21, 76, 214 MB; meant for training on a GPU)")
    q.add_argument("--dest", default=None, help="folder or .npz path (default: data dir)")
    q.add_argument("--force", action="store_true", help="replace a file already there")
    q.add_argument("--timeout", type=positive_float, default=60.0,
                   help="seconds to wait for each read from the server (connecting and its "
                        "first answer: at most 10)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_download)

    q = sub.add_parser("check", help="validate a .npz, a dataset folder or a DICOM folder")
    q.add_argument("path", help=".npz file or folder")
    q.add_argument("--quiet", "-q", action="store_true", help="print only the verdict")
    q.set_defaults(func=_check)

    q = sub.add_parser("preview", help="save a grid of example images as PNG")
    q.add_argument("path", help=".npz file, dataset folder, or a registry name (synthetic)")
    q.add_argument("--out", required=True, help="PNG file to write")
    q.add_argument("-n", "--n", type=positive_int, default=16, help="number of images (default 16)")
    q.add_argument("--seed", type=seed_int, default=0, help="0 to 2**32 - 1 (default 0)")
    q.add_argument("--size", type=image_side, default=128, help="side when loading a folder")
    q.set_defaults(func=_preview)

    p.set_defaults(func=lambda args: _no_action(p))


def _no_action(parser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _list(args) -> int:
    from fnlab.data.registry import available

    rows = available()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['kind']:<8}  {r['description']}")
        print(f"{'':<{width}}  {'':<8}  classes: {', '.join(r['classes'])}; {r['status']}")
        if args.verbose:
            print(f"{'':<{width}}  {'':<8}  licence: {r['licence']}; {r['url']}")
            print(f"{'':<{width}}  {'':<8}  cite: {r['citation']}")
    return 0


def _download(args) -> int:
    from fnlab.data import medmnist

    if args.name not in medmnist.DATASETS:
        raise UsageError(
            f"cannot download {args.name!r}: only 'pneumoniamnist' and 'chestmnist' (an "
            "external site: fnlab evaluate RUN --data PATH) are downloadable (synthetic is "
            "built in; kermany and covid_radiography are folders you pass with data_path)")
    sizes = medmnist.DATASETS[args.name]
    if args.size not in sizes:
        raise UsageError(f"--size {args.size} is not available; choose one of: "
                         f"{', '.join(map(str, sizes))}")
    try:
        path = medmnist.download(args.size, args.dest, progress=not args.no_progress,
                                 timeout=args.timeout, force=args.force, dataset=args.name)
    except medmnist.DownloadError as exc:  # one line, manual steps included
        print(f"fnlab data download: error: {error_line(exc)}", file=sys.stderr)
        return 1
    print(f"{path}  (md5 {medmnist.file_info(args.size, args.name).md5} verified)")
    return 0


def _check(args) -> int:
    from fnlab.data.check import check_path

    path = Path(args.path).expanduser()
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    report = check_path(path, progress=sys.stderr.isatty())
    print(("OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)")
          if args.quiet else report.format())
    return 0 if report.ok else 1


def _preview(args) -> int:
    from fnlab.data.preview import preview_grid
    from fnlab.data.registry import DATASETS, load_dataset

    out = Path(args.out).expanduser()
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {args.out}: the preview is a PNG file; name it NAME.png")
    if out.is_dir():
        raise UsageError(f"--out {args.out}: is a folder; name the PNG file to write "
                         f"(e.g. {out / 'preview.png'})")
    path = Path(args.path).expanduser()
    if not path.exists():
        if args.path not in DATASETS:
            raise UsageError(f"{args.path}: no such file or folder, and not a dataset name "
                             f"({', '.join(DATASETS)})")
        source = load_dataset(args.path, seed=args.seed)
    else:
        source = path
    out = preview_grid(source, args.out, n=args.n, seed=args.seed, size=args.size)
    print(out)  # errors: one line from fnlab.cli.main, exit 1
    return 0
