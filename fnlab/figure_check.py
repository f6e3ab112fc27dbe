"""Find text that overlaps in a matplotlib figure, where matplotlib can tell.

A figure a student cannot read teaches nothing. :func:`figure_overlaps` draws a figure
and compares the bounding boxes matplotlib reports for its text and data:

* tick labels of one axis that overlap each other;
* an axes' title or axis labels that overlap another axes (its plotting area);
* a figure title (``suptitle``) that overlaps an axes' title;
* a legend that covers data: line vertices, scatter points or bars of the axes it
  belongs to (a legend placed outside the plotting area covers nothing).

:func:`watch_figures` wraps ``plt.show`` so that every figure a notebook shows is checked;
the course's figure test runs every notebook that way.

Example
-------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import matplotlib.pyplot as plt
>>> fig, ax = plt.subplots(figsize=(2, 2))
>>> _ = ax.plot([0, 1], [0, 1], label="a line")
>>> _ = ax.set_xticks(range(0, 20), [f"label {i}" for i in range(20)])
>>> any("tick labels" in p for p in figure_overlaps(fig))
True
>>> fig, ax = plt.subplots(figsize=(4, 3))
>>> _ = ax.plot([0, 1], [0, 1], label="a line")
>>> _ = ax.legend(loc="upper left")
>>> figure_overlaps(fig)
[]
>>> plt.close("all")
"""

from __future__ import annotations

import numpy as np

#: pixels two boxes may share before they count as overlapping (anti-aliasing, padding)
TOLERANCE = 1.0


def _overlap(a, b, tol: float = TOLERANCE) -> bool:
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > tol) and (min(a.y1, b.y1) - max(a.y0, b.y0) > tol)


def _area(ax, renderer):
    """What an axes shows: its plotting area, or, with the axis off, its images (else None)."""
    if ax.axison:
        return ax.get_window_extent(renderer)
    boxes = [im.get_window_extent(renderer) for im in ax.get_images() if im.get_visible()]
    if not boxes:
        return None
    from matplotlib.transforms import Bbox
    return Bbox.union(boxes)


def _visible_texts(texts) -> list:
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def _name(ax, index: int) -> str:
    title = ax.get_title() or ax.get_title(loc="left") or ax.get_xlabel() or ""
    return f"axes {index}" + (f" ({title[:40]!r})" if title else "")


def _tick_problems(ax, name: str, renderer) -> list[str]:
    out = []
    if not ax.axison:
        return out
    for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
        if not axis.get_visible():
            continue
        labels = _visible_texts(axis.get_ticklabels())
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels]
        for (ta, a), (tb, b) in zip(boxes, boxes[1:]):
            if _overlap(a, b):
                out.append(f"{name}: {which} tick labels {ta!r} and {tb!r} overlap")
                break
    return out


def _data_points(ax) -> np.ndarray:
    """Display coordinates of the data an axes shows (line vertices, scatter points)."""
    points = []
    for line in ax.get_lines():
        if line.get_visible() and len(line.get_xydata()):
            xy = line.get_xydata()
            xy = xy[np.isfinite(xy).all(axis=1)]
            if len(xy):
                points.append(line.get_transform().transform(xy))
    for coll in ax.collections:
        offsets = coll.get_offsets() if hasattr(coll, "get_offsets") else []
        if coll.get_visible() and len(offsets):
            xy = np.asarray(offsets, dtype=float)
            xy = xy[np.isfinite(xy).all(axis=1)]
            if len(xy):
                points.append(coll.get_offset_transform().transform(xy))
    return np.concatenate(points) if points else np.empty((0, 2))


def _legend_problems(ax, name: str, renderer) -> list[str]:
    legend = ax.get_legend()
    if legend is None or not legend.get_visible():
        return []
    box = legend.get_window_extent(renderer)
    inside = _data_points(ax)
    if len(inside):
        hit = ((inside[:, 0] > box.x0 + TOLERANCE) & (inside[:, 0] < box.x1 - TOLERANCE)
               & (inside[:, 1] > box.y0 + TOLERANCE) & (inside[:, 1] < box.y1 - TOLERANCE))
        if hit.any():
            return [f"{name}: the legend covers {int(hit.sum())} data point(s)"]
    for patch in ax.patches:  # bars
        if patch.get_visible() and _overlap(box, patch.get_window_extent(renderer)):
            return [f"{name}: the legend covers a bar"]
    return []


def figure_overlaps(fig) -> list[str]:
    """Every overlap matplotlib can tell in ``fig``, one line each ([] when none).

    The figure is drawn first (text sizes are known only then).
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    out = []
    for i, ax in enumerate(axes):
        name = _name(ax, i)
        out += _tick_problems(ax, name, renderer)
        out += _legend_problems(ax, name, renderer)
        own = _visible_texts([ax.title, ax._left_title, ax._right_title,
                              ax.xaxis.label, ax.yaxis.label])
        for j, other in enumerate(axes):
            if other is ax or other.bbox.bounds == ax.bbox.bounds:
                continue  # twin axes share the plotting area
            area = _area(other, renderer)
            for text in ([] if area is None else own):
                if _overlap(text.get_window_extent(renderer), area):
                    out.append(f"{name}: {text.get_text()[:40]!r} overlaps {_name(other, j)}")
    suptitle = fig._suptitle
    if suptitle is not None and suptitle.get_visible() and suptitle.get_text().strip():
        top = suptitle.get_window_extent(renderer)
        for i, ax in enumerate(axes):
            if ax.title.get_text() and _overlap(top, ax.title.get_window_extent(renderer)):
                out.append(f"the figure title overlaps the title of {_name(ax, i)}")
    return out


#: problems found by :func:`watch_figures` since it was installed (figure number, line)
FOUND: list[tuple[int, str]] = []


def watch_figures() -> None:
    """Check every figure shown from now on; problems go to :data:`FOUND`.

    Figures are checked when ``plt.show()`` is called and, in IPython, at the end of each
    cell before the inline backend displays and closes them. Each figure is checked once.

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> watch_figures()
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots(figsize=(2, 2))
    >>> _ = ax.set_xticks(range(20), [f"label {i}" for i in range(20)])
    >>> plt.show()
    >>> len(FOUND) > 0
    True
    >>> FOUND.clear(); plt.close("all")
    """
    import matplotlib.pyplot as plt

    if getattr(plt.show, "_fnlab_watched", False):
        return
    show = plt.show

    def check_open(*_):
        for number in plt.get_fignums():
            fig = plt.figure(number)
            if not getattr(fig, "_fnlab_checked", False):
                fig._fnlab_checked = True
                FOUND.extend((number, line) for line in figure_overlaps(fig))

    def checked_show(*args, **kwargs):
        check_open()
        return show(*args, **kwargs)

    checked_show._fnlab_watched = True
    plt.show = checked_show
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with Jupyter
        return
    shell = get_ipython()
    if shell is not None:  # before the inline backend's flush at the end of a cell
        shell.events.callbacks["post_execute"].insert(0, check_open)
