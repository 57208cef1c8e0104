"""Figures of the paper experiment (matplotlib, Agg canvas: no display, no pyplot state).

* :func:`plot_regret_cost`: Figure 2's pair of panels, cumulative regret (mean over runs
  with a 10-90% band) and mean exact cost (with band and the cost-limit line), both
  against episodes (BASELINES 0.1, 8.8). Also used for the extra-baselines plot.
* :func:`plot_gridworld_policies`: Figure 1, the gridworld with policies drawn as arrows
  (arrow length = action probability), cost cells in red, the goal in green, one panel
  per task with its title.

Files are written atomically (rendered to memory, then
:func:`safemeta_fast.runio.atomic_write_bytes`).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .runio import atomic_write_bytes

__all__ = ["plot_regret_cost", "plot_gridworld_policies", "thin_indices", "MAX_POINTS"]

#: Curves are drawn at most at this many episode indices (evenly spaced, ends included).
MAX_POINTS = 2000

_COLOURS = {
    "ours": "tab:cyan", "safe_pce": "tab:red", "safe_meta_rl": "tab:blue", "dope_plus": "tab:green",
    "lb_sgd": "tab:purple", "safe_policy": "0.4", "safe_pce_paper": "tab:orange",
    "pce": "tab:brown", "dope": "tab:olive",
}


def canvas(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=110)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(Path(path), buf.getvalue())


def thin_indices(n: int, *series) -> np.ndarray:
    """At most about :data:`MAX_POINTS` episode indices in [0, n), both ends included.

    Without ``series``: evenly spaced. With arrays of shape (n,): the index range is cut
    into buckets and each bucket keeps its first index and the positions of every
    series' minimum and maximum, so no spike (a violation, say) is lost to decimation.
    """
    if n <= MAX_POINTS:
        return np.arange(n)
    if not series:
        return np.unique(np.linspace(0, n - 1, MAX_POINTS).round().astype(np.int64))
    n_buckets = max(1, MAX_POINTS // (1 + 2 * len(series)))
    edges = np.unique(np.linspace(0, n, n_buckets + 1).round().astype(np.int64))
    keep = [edges[:-1], [n - 1]]
    for y in series:
        y = np.asarray(y, dtype=np.float64)
        for lo, hi in zip(edges[:-1], edges[1:]):
            seg = y[lo:hi]
            keep.append([lo + int(np.argmax(seg)), lo + int(np.argmin(seg))])
    return np.unique(np.concatenate([np.asarray(k, dtype=np.int64) for k in keep]))


#: Line styles by method, so that curves which coincide (pi_s and the paper constants) stay
#: visible; unknown methods cycle through the rest.
_STYLES = {"safe_policy": (0, (5, 3)), "safe_pce_paper": (0, (1, 2)), "ours": "-"}
_CYCLE = ["-", (0, (6, 2)), (0, (3, 1, 1, 1)), (0, (1, 1))]


def plot_regret_cost(curves: dict, *, cost_limit: float, path, title: str = "") -> Path:
    """Two panels: cumulative regret and exact cost against episodes, mean and 10-90% band.

    Parameters
    ----------
    curves : dict of str -> dict
        Per method: ``label``, optionally ``episodes`` (int array (n,), the 0-based episode
        indices the values belong to; default ``arange(n)``), and arrays of shape (n,):
        ``regret_mean``, ``regret_q10``, ``regret_q90``, ``cost_mean``, ``cost_q10``,
        ``cost_q90``. More than :data:`MAX_POINTS` points are thinned.
    cost_limit : float
        Drawn as a dashed line in the cost panel.
    path : str or Path
        PNG file to write.
    title : str

    Returns
    -------
    Path

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> k = np.arange(1, 101.0)
    >>> c = {"a": {"label": "A", "regret_mean": k, "regret_q10": k, "regret_q90": k,
    ...            "cost_mean": 0 * k + 1, "cost_q10": 0 * k + 1, "cost_q90": 0 * k + 1}}
    >>> p = plot_regret_cost(c, cost_limit=1.5, path=os.path.join(tempfile.mkdtemp(), "f.png"))
    >>> p.stat().st_size > 0
    True
    """
    if not curves:
        raise ValueError("curves is empty; nothing to draw")
    from matplotlib.patches import Patch

    fig = canvas((7.5, 7.0))
    ax_r, ax_c = fig.subplots(2, 1, sharex=True)
    top = 1.2 * cost_limit
    off_scale = []
    for i, (name, cv) in enumerate(curves.items()):
        n = np.asarray(cv["regret_mean"]).size
        episodes = np.asarray(cv.get("episodes", np.arange(n)))
        if episodes.shape != (n,):
            raise ValueError(f"curves[{name!r}]['episodes'] has shape {episodes.shape}; "
                             f"expected ({n},)")
        colour = _COLOURS.get(name)
        style = _STYLES.get(name, _CYCLE[i % len(_CYCLE)])
        lw = 2.2 if name == "ours" else 1.5
        idx = thin_indices(n)
        x = (episodes[idx] + 1) / 1e3
        ax_r.plot(x, np.asarray(cv["regret_mean"])[idx], ls=style, color=colour,
                  label=cv["label"], lw=lw)
        ax_r.fill_between(x, np.asarray(cv["regret_q10"])[idx], np.asarray(cv["regret_q90"])[idx],
                          color=colour, alpha=0.15, lw=0)
        c_mean, c_lo, c_hi = (np.asarray(cv[k]) for k in ("cost_mean", "cost_q10", "cost_q90"))
        idx = thin_indices(n, c_mean, c_hi, c_lo)  # keeps every spike
        x = (episodes[idx] + 1) / 1e3
        ax_c.plot(x, c_mean[idx], ls=style, color=colour, label=cv["label"], lw=lw * 0.9)
        ax_c.fill_between(x, c_lo[idx], c_hi[idx], color=colour, alpha=0.15, lw=0)
        over = c_hi[idx] > top
        if over.any():
            off_scale.append(float(c_hi.max()))
            ax_c.plot(x[over], np.full(over.sum(), top * 0.985), "v", color=colour, ms=4,
                      clip_on=False)
    ax_c.axhline(cost_limit, color="k", ls=":", lw=1.2, label=f"cost limit {cost_limit:g}")
    ax_c.set_ylim(0.0, top)
    handles, labels = ax_c.get_legend_handles_labels()
    handles.append(Patch(color="0.5", alpha=0.3, lw=0))
    labels.append("shaded: 10-90% of runs")
    if off_scale:
        ax_c.text(0.01, 0.97, f"v: 90% quantile above {top:g} (off scale, max "
                  f"{max(off_scale):.3g})", transform=ax_c.transAxes, fontsize=7, va="top")
    ax_r.set_ylabel("cumulative regret")
    ax_c.set_ylabel("exact cost $V_c$ of the deployed policy")
    ax_c.set_xlabel(r"episode k ($\times 10^3$)")
    ax_r.legend(fontsize=8, loc="upper left")
    ax_c.legend(handles, labels, fontsize=8, loc="lower right")
    ax_r.grid(alpha=0.3)
    ax_c.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_gridworld_policies(panels, *, path) -> Path:
    """Figure 1: gridworld tasks with a policy each, drawn as arrows.

    Parameters
    ----------
    panels : sequence of (CMDP, numpy.ndarray (S, A), str)
        A square-grid task (S = n*n states, A = 4 actions right, up, left, down; state
        ``s = n*y + x``), a policy and the panel title. Cost cells (any action with a
        positive cost) are red, absorbing states green; in every other cell an arrow per
        action with probability >= 0.02 points its way, its length proportional to the
        probability.
    path : str or Path

    Returns
    -------
    Path
    """
    from .envs.gridworld import ACTIONS

    panels = list(panels)
    if not panels:
        raise ValueError("panels is empty; nothing to draw")
    fig = canvas((5.2 * len(panels), 5.6))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (M, pi, title) in zip(axes, panels):
        S, A = M.n_states, M.n_actions
        n = int(round(np.sqrt(S)))
        if n * n != S or A != 4:
            raise ValueError(f"panel {title!r}: expected a square grid with 4 actions; got "
                             f"S = {S}, A = {A}")
        pi = np.asarray(pi, dtype=np.float64)
        if pi.shape != (S, A):
            raise ValueError(f"panel {title!r}: policy has shape {pi.shape}; expected {(S, A)}")
        cost_cell = np.asarray(M.c).max(axis=(1, 2)) > 0
        goal = np.asarray(M.absorbing)
        start = np.asarray(M.nu0) > 0
        for s in range(S):
            x, y = s % n, s // n
            face = "#e34a33" if cost_cell[s] else ("#74c476" if goal[s] else "white")
            ax.add_patch(_rect(x, y, face))
            if goal[s]:
                ax.text(x + 0.5, y + 0.5, "goal", ha="center", va="center", fontsize=8)
                continue
            if start[s]:
                ax.plot(x + 0.12, y + 0.12, "o", color="tab:blue", ms=3)
            for a in range(A):
                p = pi[s, a]
                if p < 0.02:
                    continue
                dx, dy = ACTIONS[a] * 0.42 * p
                ax.arrow(x + 0.5, y + 0.5, dx, dy, width=0.02, head_width=0.12 * max(p, 0.3),
                         head_length=0.1 * max(p, 0.3), length_includes_head=True, color="k")
        ax.set_xlim(0, n)
        ax.set_ylim(0, n)
        ax.set_aspect("equal")
        ax.set_xticks(np.arange(n) + 0.5, [str(i) for i in range(n)])
        ax.set_yticks(np.arange(n) + 0.5, [str(i) for i in range(n)])
        ax.set_xlabel("x")
        ax.set_ylabel("y (state s = n y + x)")
        ax.set_title(title, fontsize=9)
    fig.suptitle("Gridworld: LP-optimal policies (red: cost cells, green: goal, blue dot: start "
                 "states of nu0)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _rect(x, y, face):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), 1, 1, facecolor=face, edgecolor="0.6", lw=0.8)
