"""Figures of the open-check experiments (matplotlib Agg canvas, atomic PNG writes).

* :func:`plot_histograms`: one histogram panel per series with labelled vertical lines
  (slack distributions, distances to the cover);
* :func:`plot_panels`: panels of y against x, one line per series (regret and violation
  rate against a shift, a schedule or a margin).

Both reuse :mod:`safemeta_fast.plotting`'s canvas and atomic save.
"""

from __future__ import annotations

import numpy as np

from ..plotting import canvas, save_figure

__all__ = ["plot_histograms", "plot_panels"]

_LINE_STYLES = ("--", ":", "-.", (0, (5, 1)))


def plot_histograms(panels: list, *, path, title: str = "", bins: int = 50):
    """Histogram panels, stacked vertically.

    Parameters
    ----------
    panels : list of dict
        Each: ``values`` (1-D array), ``title``, ``xlabel`` and optionally ``lines``
        (dict label -> x position, drawn as vertical lines; a line more than two data
        spans away from the data is only named in the legend).
    path : str or Path
        PNG file.
    title : str
    bins : int

    Returns
    -------
    Path
    """
    if not panels:
        raise ValueError("panels is empty; nothing to draw")
    fig = canvas((7.5, 2.6 * len(panels) + 0.6))
    axes = np.atleast_1d(fig.subplots(len(panels), 1))
    for ax, p in zip(axes, panels):
        v = np.asarray(p["values"], dtype=float)
        v = v[np.isfinite(v)]
        ax.hist(v, bins=bins, color="tab:blue", alpha=0.75)
        lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
        span = max(hi - lo, 1e-12)
        for i, (label, x) in enumerate(p.get("lines", {}).items()):
            if lo - 2 * span <= x <= hi + 2 * span:
                ax.axvline(x, color=f"C{i + 1}", ls=_LINE_STYLES[i % len(_LINE_STYLES)], lw=1.4,
                           label=f"{label} = {x:.4g}")
            else:  # far outside the data: named in the legend, not drawn (keeps the scale)
                ax.plot([], [], " ", label=f"{label} = {x:.4g} (off scale)")
        ax.set_title(p["title"], fontsize=9)
        ax.set_xlabel(p["xlabel"])
        ax.set_ylabel("tasks")
        if p.get("lines"):
            ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_panels(x, panels: list, *, path, xlabel: str, title: str = "", xticklabels=None,
                logx: bool = False):
    """Panels of y against x with one line per series.

    Parameters
    ----------
    x : array_like, shape (n,)
    panels : list of dict
        Each: ``ylabel`` and ``series`` (dict label -> array (n,)), optionally ``hline``
        (y of a dashed reference line) and ``logy``.
    path : str or Path
    xlabel, title : str
    xticklabels : list of str, optional
        Labels at the x positions.
    logx : bool

    Returns
    -------
    Path
    """
    x = np.asarray(x, dtype=float)
    fig = canvas((7.5, 2.8 * len(panels) + 0.6))
    axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True))
    for ax, p in zip(axes, panels):
        for i, (label, y) in enumerate(p["series"].items()):
            ax.plot(x, np.asarray(y, dtype=float), "-o", color=f"C{i}", ms=4, lw=1.4, label=label)
        if p.get("hline") is not None:
            ax.axhline(p["hline"], color="k", ls=":", lw=1.0)
        if p.get("logy"):
            ax.set_yscale("symlog")
        ax.set_ylabel(p["ylabel"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if logx:
        axes[-1].set_xscale("log")
    if xticklabels is not None:
        axes[-1].set_xticks(x)
        axes[-1].set_xticklabels(xticklabels, fontsize=7, rotation=20)
    axes[-1].set_xlabel(xlabel)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
