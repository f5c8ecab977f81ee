"""Figure ``critical_difference`` (supplementary): each study's critical-difference diagram of the methods'
average ranks (:mod:`icp.verdict`); it draws studies main, noisy, fewshot and tuned, and says itself why a study
has no diagram."""
from __future__ import annotations

import textwrap

from icp.figures import plot

NAME = "critical_difference"
STUDY = "main"
CAPTION = ("Supplementary: critical-difference diagram (Demšar 2006), one per study (main, noisy, fewshot; tuned, its "
           "tuned finals, on its own) with at least five independent units (a unit: one dataset × model, the "
           "study's settings in it averaged first), of the average ranks (1 = best) of each unit's last-epoch test "
           "top-1 among the methods measured on every unit; a bar joins methods that the Nemenyi test after "
           "Friedman's (α = 0.05, scikit-posthocs) cannot tell apart. Each title gives the critical difference in "
           "ranks and the number of units; a study with fewer than five units gets no diagram, and the figure says "
           "why. A method with a diverged run in a setting takes the worst possible top-1 (0 %) there: a loss, not "
           "missing. The controls (α-only, FLOP-matched ce) and methods measured on fewer units are not ranked; "
           "``tables/verdict.md`` gives every method's IQM difference to ce with its interval and probabilities of "
           "improvement.")
TITLE = "Which method wins per study: average rank of last-epoch test top-1 over independent units (1 = best)"
EMPTY = None  # it ranks the methods of four studies, main's complete or not


def draw(runs, epochs, ctx):
    from icp.results import verdict

    plt, _ = plot.libs()
    verdicts = verdict.compute(runs, reps=1)  # ranks only: no interval is drawn here
    drawn = [v for v in verdicts.values() if v.has_cd]
    why = "; ".join(f"{v.study}: {v.why_no_cd()}" for v in verdicts.values() if not v.has_cd)
    if not drawn:
        return plot.empty(TITLE, textwrap.fill(why or "no complete classifier run of studies main, noisy, fewshot "
                                               "or tuned yet", 90))
    k_max = max(len(v.ranked_methods) for v in drawn)
    fig, axes = plt.subplots(len(drawn), 1, figsize=(7.5, len(drawn) * (1.6 + 0.3 * k_max)), layout="constrained",
                             squeeze=False)
    for v, ax in zip(drawn, axes[:, 0]):
        _cd_panel(fig, ax, v)
    fig.suptitle(textwrap.fill(TITLE + (f". {why}" if why else ""), 100), fontsize=9)
    return fig


def _cd_panel(fig, ax, v) -> None:
    """One study's critical-difference diagram on ``ax``, the CD bar above it, its title the study's numbers."""
    import scikit_posthocs as sp
    from matplotlib.transforms import offset_copy

    from icp.results import verdict
    from icp.results.text import p_text

    k, n = len(v.ranked_methods), len(v.ranked_units)
    ranks = v.table.set_index("method").avg_rank.reindex(v.ranked_methods)
    labels = {m: _label_short(m) for m in v.ranked_methods}
    ranks.index = ranks.index.map(labels)
    sig = verdict.nemenyi(v).rename(index=labels, columns=labels)
    sp.critical_difference_diagram(ranks, sig, ax=ax, alpha=verdict.ALPHA, label_fmt_left="{label} ({rank:.2f})",
                                   label_fmt_right="({rank:.2f}) {label}", marker_props={"clip_on": False})
    ax.set_xlim(0.9, max(k, ranks.min() + v.cd) + 0.1)  # the whole range of ranks, 1 to k, and the CD bar
    ax.grid(axis="y", visible=False)
    # the CD bar, from the best rank, in points above the rank ticks (whatever the Axes' height in rank units)
    start = float(ranks.min())
    ax.plot([start, start + v.cd], [0, 0], color="k", linewidth=2, clip_on=False,
            transform=offset_copy(ax.transData, fig=fig, y=26, units="points"))
    ax.text(start + v.cd / 2, 0, f"critical difference = {v.cd:.2f} ranks", ha="center", va="bottom", fontsize=9,
            transform=offset_copy(ax.transData, fig=fig, y=30, units="points"), clip_on=False)
    low, _ = ax.get_ylim()
    ax.set_ylim(low, 0.05)
    friedman = "" if v.friedman_p != v.friedman_p else f"; Friedman {p_text(v.friedman_p, spaced=True)}"
    losses = f"; {len(v.diverged)} diverged setting(s) counted as losses" if v.diverged else ""
    ax.set_title(textwrap.fill(f"study {v.study}: {k} methods over {n} units, critical difference (Nemenyi, "
                               f"α = {verdict.ALPHA:g}) {v.cd:.2f} ranks{friedman}{losses}", 100), fontsize=9,
                 pad=40)


def _label_short(variant: str) -> str:
    """A variant's label without what the tables add in brackets (the CD diagram's labels sit in one line)."""
    from icp.naming import variant_label

    return variant_label(variant).split(" (")[0]
