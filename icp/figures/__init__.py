"""The paper's figures, from the run records (through ``summary.csv`` and ``epochs.csv`` of :mod:`icp.results`)
and, for the figures of a trained model, the arrays its job wrote (:mod:`icp.figure_data`). Each is written as
``<name>.png`` and ``<name>.pdf``.

**A figure is a file.** A module in ``icp/figures/`` (or one that another installed package names under the
``icp.figures`` entry point group, as methods are found: :mod:`icp.methods.options`) declares at its top, with
no matplotlib or seaborn import at module level (the Snakefile reads this registry for its catalogue)::

    NAME = "mine"          # its files' stem: the module's own name
    STUDY = "main"         # the study whose runs it draws: a grid without that study does not make it
    CAPTION = "..."        # what it shows, reStructuredText, one paragraph (the report shows it under it)
    TITLE = "..."          # its title, also that of its empty canvas (optional)
    EMPTY = "..."          # optional: what the empty canvas says; None: the figure draws its own empty canvas

    def checkpoints(grid): ...           # optional: the grid runs whose trained model it reads
    def draw(runs, epochs, ctx): ...     # the matplotlib figure (import matplotlib inside)

and nothing else lists it: :data:`FIGURES` finds every such module on first use, ``icp figures``, the Snakefile
(its ``figure`` rule) and ``dvc repro`` draw it. The modules :data:`HELPERS` hold what the figures share:
:mod:`icp.figures.common` selects and groups runs, :mod:`icp.figures.plot` draws panels, lines and legends. A
module the registry cannot use (no ``CAPTION``, a ``NAME`` not its own, a name declared twice, a file that does not
import) is one ``ConfigError`` line naming its file, in ``icp figures``, ``icp grid`` and the Snakefile.

A figure never fails for want of runs: where its study has no complete run yet, :func:`make` draws an empty canvas
with the figure's ``TITLE`` saying so (``EMPTY``, default 'no complete run of study STUDY yet'), and the figure's
``draw`` is not called. A figure that reads other studies' runs or runs that did not complete (``input_shift``,
``critical_difference``, ``tuning``) sets ``EMPTY = None`` and says itself why it has nothing to draw.

A *condition* is a dataset, model, scenario and number of training epochs (:data:`icp.figures.common.CONDITION`):
figures never average across conditions. The figures that compare variants (``learning_curves``, ``compute``,
``noise``, ``fewshot``) draw one panel per dataset × model × scenario (:data:`icp.figures.common.PANEL`; in
``noise`` and ``fewshot`` the scenario is the x-axis) and a line per variant *and training length*: a control that
trains for more epochs (the compute-matched ``ce+budget=...``) sits beside the run it judges, each line's legend
name gives its length, and a variant with runs of two lengths draws two lines, never their mean; few-shot shot
counts, whose fixed step budget trains each its own epochs, are one line with the epochs under each tick. The
other figures draw one panel per condition (one Axes), titled with it. Each panel has its own legend, below the
Axes (never over the data or the y-label), whose labels give that panel's ``n`` (distinct complete seeds of the
line in that panel; ``n=2–3`` where the points of one curve rest on different numbers of seeds). Suptitles name
the study and what is averaged; axes carry units.

:func:`source_digest` is a figure's own code (its module, the helpers and this registry): the Snakefile's
``figure`` rule takes it as a parameter, so that a change of one figure's file redraws that figure alone. The
list of figures with their captions is generated into docs/results.md (``python tools/readme.py``).
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Callable, Iterator

from icp import atomic
from icp.plugins import plugin_modules
from icp.schema import ConfigError

ENTRY_POINTS = "icp.figures"  # the entry point group of figures in other installed packages
HELPERS = ("common", "plot")  # modules of this package that hold no figure: what the figures share
# studies that are tables only (no figure draws them), and why
TABLE_ONLY = {"authors": "the ICP authors' own recipe beside ours: a table",
              "ablations": "ICP's options one at a time: a table (its runs also feed the schedule figures)"}

_DRAW: dict[str, tuple[str, Callable]] = {}  # name -> (study it needs, draw: the empty canvas, else the module's)
_CAPTIONS: dict[str, str] = {}  # name -> its caption, one line
_MODULES: dict[str, object] = {}  # name -> the module that declares it
_SCANNED: list[bool] = []


def _origin(module: str) -> str:
    spec = importlib.util.find_spec(module)
    return spec.origin if spec and spec.origin else module


def _read(module: str) -> None:
    """Import a figure module and register what it declares; a module the registry cannot use is one
    ``ConfigError`` line naming its file."""
    try:
        mod = importlib.import_module(module)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken figure file: one line naming it, wherever it is read
        raise ConfigError(f"{_origin(module)}: the figure cannot be read ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    where = getattr(mod, "__file__", None) or module
    stem = module.rsplit(".", 1)[-1]
    name = getattr(mod, "NAME", None)
    wrong = [f"NAME {name!r} is not its module's name {stem!r}" if name != stem else None,
             *(f"{key} must be a non-empty string" for key in ("STUDY", "CAPTION")
               if not (isinstance(getattr(mod, key, None), str) and getattr(mod, key).strip())),
             "TITLE must be a string" if not isinstance(getattr(mod, "TITLE", ""), str) else None,
             "EMPTY must be a string or None" if not isinstance(getattr(mod, "EMPTY", ""), (str, type(None))) else None,
             "draw(runs, epochs, ctx) is missing" if not callable(getattr(mod, "draw", None)) else None,
             "checkpoints must be a function of the grid" if not callable(getattr(mod, "checkpoints", len)) else None]
    wrong = [w for w in wrong if w]
    if wrong:
        raise ConfigError(f"{where}: not a figure module: {'; '.join(wrong)}")
    if name in _MODULES and _MODULES[name] is not mod:
        raise ConfigError(f"figure '{name}' is declared twice: in {_MODULES[name].__name__} and in {module}")
    _MODULES[name] = mod
    _CAPTIONS[name] = " ".join(mod.CAPTION.split())
    _DRAW[name] = (mod.STUDY, _drawer(mod, _CAPTIONS[name]))


def _drawer(mod, caption: str) -> Callable:
    """The figure's ``draw``, or, where its study has no complete run yet and it leaves that to the registry
    (``EMPTY`` not None), the empty canvas that says so."""
    @functools.wraps(mod.draw)
    def draw(runs, epochs, ctx, **kwargs):
        why = getattr(mod, "EMPTY", f"no complete run of study {mod.STUDY} yet")
        if why is not None:
            from icp.figures import common, plot

            if common.complete(runs, mod.STUDY).empty:
                return plot.empty(getattr(mod, "TITLE", f"Study {mod.STUDY}: {mod.NAME}"), why)
        return mod.draw(runs, epochs, ctx, **kwargs)

    draw.__doc__ = mod.draw.__doc__ or caption  # what the figure shows, also in help()
    return draw


def _scan() -> None:
    """Every figure: this package's modules (but the helpers), then the modules of the ``icp.figures`` entry
    points."""
    if _SCANNED:
        return
    for module in plugin_modules(__name__, ENTRY_POINTS, HELPERS):
        _read(module)
    _SCANNED.append(True)


class _Catalogue(MutableMapping):
    """A registry table, filled on first use (:func:`_scan`); writable, so that a test can put a figure in."""

    def __init__(self, table: dict):
        self._table = table

    def __getitem__(self, name: str):
        _scan()
        return self._table[name]

    def __setitem__(self, name: str, value) -> None:
        _scan()
        self._table[name] = value

    def __delitem__(self, name: str) -> None:
        _scan()
        del self._table[name]

    def __iter__(self) -> Iterator[str]:
        _scan()
        return iter(dict(self._table))

    def __len__(self) -> int:
        _scan()
        return len(self._table)


# name -> (the study it needs, the function that draws it: draw(runs, epochs, ctx) -> matplotlib Figure)
FIGURES: MutableMapping[str, tuple[str, Callable]] = _Catalogue(_DRAW)
# name -> what the figure shows, in reStructuredText: the one place of each caption (report, docs)
CAPTIONS: MutableMapping[str, str] = _Catalogue(_CAPTIONS)


def module_of(name: str):
    """The module that declares figure ``name``."""
    _scan()
    return _MODULES[name]


def quiet_missing_metadata():
    """For ``snakemake --report``: a filter on Snakemake's logger that drops its "Missing metadata for file ..."
    warnings (outputs it did not make itself: DVC-pulled records) and says once, at the first, what they mean."""
    import logging

    class Quiet(logging.Filter):
        said = False

        def filter(self, record):
            if "Missing metadata for file" not in str(record.getMessage()):
                return True
            if not Quiet.said:
                Quiet.said = True
                print("icp: outputs made outside this Snakemake (pulled by DVC, or in another checkout) show no job "
                      "details in the report; their files and captions are there", file=sys.stderr)
            return False

    quiet = Quiet()
    logging.getLogger("snakemake.logging").addFilter(quiet)
    return quiet


def available(studies) -> list[str]:
    """The figures a grid with these studies yields."""
    return [name for name, (study, _) in FIGURES.items() if study in studies]


def unknown_studies(studies) -> list[str]:
    """A warning line for each study name that no figure draws (a typo such as ``nosiy``): its tables are made,
    its figures never are."""
    from icp.schema import did_you_mean

    drawn = sorted({study for study, _ in FIGURES.values()})
    known = sorted({*drawn, *TABLE_ONLY})
    return [f"warning: unknown study '{s}': no figure draws it, its tables are made (studies with figures: "
            f"{', '.join(drawn)}; tables only: {', '.join(sorted(TABLE_ONLY))})"
            f"{hint if (hint := did_you_mean(s, known)).startswith('; did') else ''}"
            for s in studies if s not in known]


def checkpoint_runs(name: str, grid) -> list:
    """The grid runs whose checkpoints a figure reads (Snakemake inputs): its module's ``checkpoints(grid)``,
    none where it has none."""
    _scan()
    checkpoints = getattr(_MODULES.get(name), "checkpoints", None)
    return list(checkpoints(grid)) if checkpoints else []


def source_digest(name: str) -> str:
    """sha256 of the code that draws figure ``name``: its module's file, the helper modules and this registry (which
    writes the files). The Snakefile's ``figure`` rule has it as a parameter, so that Snakemake redraws a figure
    whose own code changed, and only that figure."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in (Path(module_of(name).__file__), *(here / f"{m}.py" for m in HELPERS), here / "__init__.py"):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def make(name: str, runs, epochs, out_dir: str | Path, ctx=None) -> list[Path]:
    """Draw one figure and write ``<out_dir>/<name>.png`` and ``.pdf`` (atomically: nothing half-written)."""
    from icp.figures.plot import libs

    plt, sns = libs()
    if name not in FIGURES:
        raise ConfigError(f"unknown figure '{name}'; known: {', '.join(FIGURES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with sns.axes_style("whitegrid"):
        fig = FIGURES[name][1](runs, epochs, ctx)
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:  # epochs are whole numbers: no 1.5 on an epoch axis
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    paths = []
    for ext in ("png", "pdf"):
        # no creation date: the same records give byte-identical files (DVC and git see no change)
        paths.append(atomic.write(lambda fh: fig.savefig(fh, format=ext, dpi=130, bbox_inches="tight", metadata={
            "CreationDate": None} if ext == "pdf" else None), out_dir / f"{name}.{ext}"))
    plt.close(fig)
    return paths


_MOVED = {"compute_curves": "compute", "perturbation_run": "perturbation"}  # helpers of one figure, by their old name


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(f"{__name__}.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
