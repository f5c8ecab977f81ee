"""The grid: studies declared as products of factors, expanded into runs. The one expansion that the Snakefile,
the DVC pipeline and ``icp grid`` call; nothing else lists runs.

A grid file (``config/paper.yaml``; schema ``workflow/schemas/grid.schema.yaml``) holds::

    runs_dir: results/runs           # every run's directory is <runs_dir>/<run id>
    data_root: data                  # data.root of every run
    seeds: [0, 1, 2]                 # default seeds of every block
    recipes:                         # "<dataset>/<model>" -> recipe: data, optimizer, schedule, epochs, batch
      fashion-mnist/resnet20: config/recipes/fmnist-resnet20.yaml
    set: [train.grad_clip=5]         # optional overrides of every run (after the recipe)
    studies:
      <study>:                       # a list of blocks; a study's runs are the union of its blocks' products
        - datasets: [...]
          models: [...]
          methods: [...]             # registered method names (`icp methods`)
          scenarios: [clean]         # scenario tags: clean, sym0.4, asy0.2 (label noise), 25shot (few-shot)
          options: {steps: [1, 5]}   # optional: method options, each a list of values (their product)
          seeds: [0, 1, 2]           # optional, default: the top-level seeds
          controls: [alpha_only, compute_matched]   # optional: the control runs below
          recipe: {name: authors, file: config/recipes/cifar100-resnet20-authors.yaml}   # optional
          optimizer_steps: {cifar100: 12956}   # optional: few-shot runs train this many steps, whatever the shots
    compute_matched: {like: icp-adam}   # for the compute_matched controls

Every method of a study trains with the recipe of its dataset and model: no method gets another budget than its
baseline. A recipe has no ``method`` section (the grid sets the method). A block may name its own recipe
(``recipe: {name: authors, file: ...}``, e.g. the ICP authors' protocol); its runs' ids then end their variant in
``+recipe=<name>``, and AI-KD's teacher is trained with that recipe too.

Controls (a block's ``controls``, for each of its datasets, models, scenarios and seeds):

* ``alpha_only``: ICP with K = 0 (``icp+steps=0``): the α schedule re-weights CE, nothing is refined or
  distilled. An ICP variant with ``steps: 0`` is always this one run (:func:`icp.naming.canonical_method`), so the
  ``steps`` study's K = 0 point and the controls of ``main``, ``noisy`` and ``fewshot`` are shared.
* ``compute_matched``: ``ce+budget=<method>`` (``vae+budget=<method>`` for a generative model), the baseline given
  the training FLOPs of the ``<method>`` run of the same dataset, model, scenario, seed and step budget
  (:mod:`icp.matching`), so "better than ce" can be told from "trained longer".

A run's id names every factor and nothing else: ``<dataset>/<model>/<scenario>/<method>[+key=value...]/s<seed>``
(:mod:`icp.naming`), also the run's directory under ``runs_dir``; a run that two studies share has one id and is
trained once.
AI-KD's ``teacher`` option is not a factor: it is set to the ``ce`` run of the same dataset, model, scenario, seed
and step budget (its ``Options.teacher_method``), which is added to the study and listed in the run's ``depends``.
Likewise a generative model's run (the VAE) gets ``train.fid_features``: the ``ce`` ResNet-20 run of its dataset
(clean, seed 0), FID's feature network; or, where the grid sets ``fid_features: inception[:PATH]``, Inception-v3
(no dependency).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from icp import gridfile, matching, run_config, tuning
from icp.methods.options import teacher_of
from icp.model_registry import is_generative
from icp.naming import canonical_method, canonical_scenario, normalise_options, parse_scenario, run_id, variant
from icp.schema import ConfigError, did_you_mean

STUDIES = ("main", "noisy", "fewshot", "steps", "ablations", "generative", "authors", "tuned")
# A generative model's FID features come from this classifier run of the same dataset (train.fid_features):
# (model, scenario, method, seed)
FID_FEATURE_RUN = ("resnet20", "clean", "ce", 0)


@dataclass(frozen=True)
class Run:
    """One training run of the grid: its id, its factors and the ``icp train`` arguments that make it."""

    run_id: str
    run_dir: str
    dataset: str
    model: str
    scenario: str
    method: str
    options: tuple[tuple[str, Any], ...]  # non-default method options, sorted by key (teacher excluded)
    seed: int
    recipe: str
    overrides: tuple[str, ...]  # --set items, applied after the recipe
    depends: tuple[str, ...] = ()  # ids of runs whose records must be complete first
    studies: tuple[str, ...] = ()
    factors: tuple[tuple[str, str], ...] = ()  # grid factors beside the method options: budget, recipe

    @property
    def variant(self) -> str:
        """The run id's method part: ``method[+option=value...][+budget=...][+recipe=...]``."""
        return variant(self.method, self.options, self.factors)

    @property
    def record(self) -> str:
        return f"{self.run_dir}/record.json"

    def train_args(self) -> list[str]:
        """The arguments of ``icp train`` (and of the launcher) that train this run."""
        args = ["--config", self.recipe]
        for item in self.overrides:
            args += ["--set", item]
        return args + ["--out", self.run_dir, "--run-id", self.run_id]


@dataclass(frozen=True)
class Tuned:
    """One tuned (study, dataset, model, scenario, method): its trial runs (``<method>+trial=<i>``, in draw order),
    their drawn settings, and the seeds of its final runs (``<method>+tuned=<i>``, trial i's configuration)."""

    study: str
    dataset: str
    model: str
    scenario: str
    method: str
    trials: tuple[str, ...]  # run ids
    settings: tuple[dict, ...]  # config key -> value, per trial
    seeds: tuple[int, ...]
    finals: tuple[tuple[str, ...], ...] = ()  # per trial, the ids of its final runs (one per seed)

    @property
    def name(self) -> str:
        """``<dataset>/<model>/<scenario>/<method>``: the selection's place under ``<results_dir>/tuning/``."""
        return f"{self.dataset}/{self.model}/{self.scenario}/{self.method}"


@dataclass
class Grid:
    runs: dict[str, Run]  # by run id, in grid order
    studies: dict[str, list[str]]  # study -> run ids
    runs_dir: str
    source: Optional[str] = None
    results_dir: str = "results"  # summary.csv, epochs.csv, tables/
    figures_dir: str = "figures"
    tuned: tuple[Tuned, ...] = ()  # the tuned cells and methods (icp.tuning)
    candidates: dict[str, Run] = dataclasses.field(default_factory=dict)  # final runs of every trial, by id
    logs_dir: str = ""  # the launchers' logs (launch.log, submitit/) per run id; "" = in the run's directory
    analysis: dict = dataclasses.field(default_factory=dict)  # primary families, targets, pilot SDs (icp.power)

    def __getitem__(self, run_id: str) -> Run:
        if run_id in self.runs:
            return self.runs[run_id]
        return self.candidates[run_id]  # a tuned cell's final run, chosen or not (KeyError: neither)

    def selection(self, cell: Tuned) -> str:
        """Where the selection record of a tuned cell and method goes."""
        return f"{self.results_dir}/tuning/{cell.name}/selection.json"

    def finals(self, cell: Tuned, trial: int) -> list[Run]:
        """The final runs of ``cell`` if trial ``trial`` is chosen: its configuration at each of the cell's seeds
        (built by the expansion as any run of the grid, an AI-KD teacher of each seed included), ids ending
        ``+tuned=<trial>``."""
        return [self.candidates[rid] for rid in cell.finals[trial]]

    def chosen(self, cell: Tuned) -> Optional[int]:
        """The trial chosen for ``cell`` by its selection record, or None (no selection yet, or every trial
        lost)."""
        from icp import jsonfile

        sel = jsonfile.read(self.selection(cell))
        return None if not sel or sel.get("chosen") is None else int(sel["chosen"])

    def with_selections(self) -> "Grid":
        """This grid with the final runs of every tuned cell whose selection record exists (in its study, after
        the cell's other runs): what the tables, ``icp status`` and the summary read once trials are chosen."""
        runs, studies = dict(self.runs), {k: list(v) for k, v in self.studies.items()}
        for cell in self.tuned:
            trial = self.chosen(cell)
            if trial is None:
                continue
            for run in self.finals(cell, trial):
                runs.setdefault(run.run_id, dataclasses.replace(run, studies=(cell.study,)))
                if run.run_id not in studies[cell.study]:
                    studies[cell.study].append(run.run_id)
        return dataclasses.replace(self, runs=runs, studies=studies)

    def select(self, study: Optional[str] = None) -> list[Run]:
        if study is None:
            return list(self.runs.values())
        if study not in self.studies:
            raise ConfigError(f"unknown study '{study}'{did_you_mean(study, self.studies)}")
        return [self.runs[i] for i in self.studies[study]]

    def depends_records(self, run_id: str) -> list[str]:
        return [self.runs[d].record for d in self[run_id].depends]


def expand(grid: dict, source: Optional[str] = None, check_recipes: bool = True) -> Grid:
    """Every study's runs, deduplicated by run id; ``grid`` is a loaded (schema-checked) grid mapping. Each block
    gives its methods' runs (:meth:`_Expansion.block`), then its tuned cells (:meth:`_Expansion.tune`) and its
    controls (:meth:`_Expansion.alpha_only`, :meth:`_Expansion.compute_matched`) in each of its conditions."""
    return _Expansion(grid, source or "grid", check_recipes).grid(source)


@dataclass
class _Cell:
    """Where a block's runs go: the study, the block's own recipe ({name, file}) and few-shot step budgets."""

    study: str
    recipe: Optional[dict]
    budgets: dict
    where: str

    def steps(self, dataset: str, scenario: str) -> Optional[int]:
        return run_config.few_shot_steps(self.budgets, dataset, scenario, f"{self.where}: study '{self.study}'")


class _Expansion:
    """The state of one expansion: the runs so far, each study's run ids, the tuned cells, and the candidate final
    runs of every tuning trial (in the grid once a selection chooses it)."""

    def __init__(self, grid: dict, where: str, check_recipes: bool):
        self.spec, self.where, self.check_recipes = grid, where, check_recipes
        self.runs_dir = str(grid.get("runs_dir", "results/runs")).rstrip("/")
        self.data_root = str(grid.get("data_root", "data"))
        self.recipes: dict = grid.get("recipes", {})
        self.common = [str(s) for s in grid.get("set", [])]
        self.fid_features = str(grid.get("fid_features", "classifier"))
        self.runs: dict[str, Run] = {}
        self.studies: dict[str, list[str]] = {}
        self.checked: set = set()
        self.tuned_cells: list[Tuned] = []
        self.candidates: dict[str, Run] = {}
        for study, blocks in grid.get("studies", {}).items():
            for i, block in enumerate(blocks):
                self.block(study, i, block)

    def grid(self, source: Optional[str]) -> Grid:
        membership: dict[str, list[str]] = {}
        for study, ids in self.studies.items():
            for rid in ids:
                membership.setdefault(rid, []).append(study)
        runs = {rid: dataclasses.replace(r, studies=tuple(membership[rid])) for rid, r in self.runs.items()}
        analysis = dict(self.spec.get("analysis") or {})
        _check_primary(analysis, self.studies, runs, self.where)
        return Grid(runs, self.studies, self.runs_dir, source, str(self.spec.get("results_dir", "results")).rstrip("/"),
                    str(self.spec.get("figures_dir", "figures")).rstrip("/"), tuple(self.tuned_cells),
                    self.candidates, str(self.spec.get("logs_dir") or "").rstrip("/"), analysis)

    # ------------------------------------------------------------------------------------------ one run
    def add(self, cell: _Cell, dataset, model, scenario, method, options: dict, seed: int,
            budget: Optional[tuple[str, "Run"]] = None, tuned: tuple[tuple[str, str], tuple[str, ...]] = ((), ()),
            candidate: bool = False) -> str:
        """Add one run (and the runs it depends on) to ``cell``'s study; ``budget``: (the method whose training
        FLOPs a compute-matched run gets, the run of that method it matches); ``tuned``: (the factor of a tuning
        trial, ``("trial", i)``, and its drawn ``--set`` items); ``candidate``: a final run of a tuning trial
        (``("tuned", i)``), kept apart from the grid's runs until a selection chooses its trial
        (:meth:`Grid.with_selections`)."""
        tune_factor, tune_sets = tuned
        recipe = cell.recipe
        key = f"{dataset}/{model}"
        recipe_file = recipe["file"] if recipe else self.recipes.get(key)
        if recipe_file is None:
            raise ConfigError(f"study '{cell.study}': no recipe for {key}; add it under 'recipes'")
        method, options = canonical_method(method, options)
        opts = normalise_options(method, options)
        factors = ((("budget", budget[0]),) if budget else ()) + ((("recipe", recipe["name"]),) if recipe else ()) \
            + ((tune_factor,) if tune_factor else ())
        rid = run_id(dataset, model, scenario, method, opts, seed, factors)
        into = self.candidates if candidate else self.runs
        if rid not in into:
            steps = cell.steps(dataset, scenario)
            depends, extra = self.dependencies(cell, dataset, model, scenario, method, seed)
            overrides = [f"data.dataset={dataset}", f"data.root={self.data_root}", f"model.name={model}",
                         *parse_scenario(scenario), f"method.name={method}",
                         *(f"method.options.{k}={run_config.yaml_value(v)}" for k, v in opts), *extra,
                         f"train.seed={seed}", *self.common, *tune_sets]
            if steps is not None:
                overrides += run_config.step_budget(recipe_file, overrides, steps)
            if budget:
                epochs, _ = matching.matched_epochs(budget[1])
                overrides += matching.stretched(recipe_file, overrides, epochs)
            into[rid] = Run(rid, f"{self.runs_dir}/{rid}", dataset, model, canonical_scenario(scenario), method, opts,
                            seed, recipe_file, tuple(overrides), depends, factors=factors)
            if self.check_recipes and recipe_file not in self.checked:
                run_config.check_recipe(recipe_file, dataset, model)
                self.checked.add(recipe_file)
        if candidate:
            return rid
        members = self.studies.setdefault(cell.study, [])
        if rid not in members:
            members.append(rid)
        return rid

    def dependencies(self, cell: _Cell, dataset, model, scenario, method, seed) -> tuple[tuple[str, ...], list[str]]:
        """The runs a run needs and the ``--set`` items naming them: a method's teacher (its ``Options``'
        ``teacher_method``: the cell's run of that method, same recipe and step budget); a generative model's FID
        feature network (:data:`FID_FEATURE_RUN`, or Inception-v3 with no run)."""
        depends: tuple[str, ...] = ()
        extra: list[str] = []
        if teacher_of(method):
            tid = self.add(cell, dataset, model, scenario, teacher_of(method), {}, seed)
            depends, extra = (tid,), [f"method.options.teacher={self.runs[tid].run_dir}"]
        if is_generative(model) and self.fid_features != "classifier":
            extra.append(f"train.fid_features={self.fid_features}")
        elif is_generative(model):
            fid_model, fid_scenario, fid_method, fid_seed = FID_FEATURE_RUN
            fid_cell = _Cell(cell.study, None, {}, self.where)
            fid = self.add(fid_cell, dataset, fid_model, fid_scenario, fid_method, {}, fid_seed)
            depends += (fid,)
            extra.append(f"train.fid_features={self.runs[fid].run_dir}")
        return depends, extra

    # ------------------------------------------------------------------------------------------ one block
    def block(self, study: str, i: int, block: dict) -> None:
        names = list(block.get("options", {}))
        values = [block["options"][k] for k in names]
        cell = _Cell(study, block.get("recipe"), block.get("optimizer_steps", {}), self.where)
        seeds = block.get("seeds", self.spec.get("seeds", [0]))
        conditions = list(itertools.product(block["datasets"], block["models"], block.get("scenarios", ["clean"]),
                                            seeds))
        for (dataset, model, scenario, seed), (j, method), combo in itertools.product(
                conditions, enumerate(block["methods"]), list(itertools.product(*values))):
            with _at_item(self.where, f"studies.{study}.{i}.methods.{j}"):
                self.add(cell, dataset, model, scenario, method, dict(zip(names, combo)), seed)
        if block.get("tune"):
            self.tune(cell, i, block, conditions, tuple(seeds))
        controls = block.get("controls", [])
        for dataset, model, scenario, seed in conditions:
            if "alpha_only" in controls:
                self.alpha_only(cell, dataset, model, scenario, seed)
            if "compute_matched" in controls:
                self.compute_matched(cell, block, dataset, model, scenario, seed)

    def tune(self, cell: _Cell, i: int, block: dict, conditions: list, seeds: tuple) -> None:
        """Each tuned method of each cell of the block: its trials (:mod:`icp.tuning`'s draws at the tuning seed)
        and the candidate final runs of each trial at the block's seeds."""
        study, where = cell.study, self.where
        tuning_spec = self.spec.get("tuning") or {}
        tuning.check(tuning_spec, {study: set(block["methods"])}, where)
        tuning.check_seeds(tuning_spec, seeds, where, study)
        for (dataset, model, scenario), method in itertools.product(
                dict.fromkeys((d, m, sc) for d, m, sc, _ in conditions), block["methods"]):
            space = tuning_spec["spaces"][method]
            recipe = cell.recipe["file"] if cell.recipe else self.recipes.get(f"{dataset}/{model}")
            defaults = tuning.published_defaults(recipe, [f"data.dataset={dataset}", f"model.name={model}",
                                                          *parse_scenario(scenario), f"method.name={method}",
                                                          *self.common, *(["method.options.teacher=<teacher run>"]
                                                                          if teacher_of(method) else [])],
                                                 space, f"{where}: tuning.spaces.{method}")
            draws = tuning.draws(space, tuning.trial_count(tuning_spec), int(tuning_spec.get("draw_seed", 0)), defaults)
            trials, finals = [], []
            for t, setting in enumerate(draws):
                sets = tuple(f"{k}={run_config.yaml_value(v)}" for k, v in sorted(setting.items()))
                with _at_item(where, f"studies.{study}.{i}.tune"):
                    trials.append(self.add(cell, dataset, model, scenario, method, {},
                                           int(tuning_spec.get("seed", tuning.DEFAULT_SEED)),
                                           tuned=(("trial", str(t)), sets)))
                    finals.append(tuple(self.add(cell, dataset, model, scenario, method, {}, seed,
                                                 tuned=(("tuned", str(t)), sets), candidate=True) for seed in seeds))
            self.tuned_cells.append(Tuned(study, dataset, model, canonical_scenario(scenario), method,
                                          tuple(trials), tuple(draws), seeds, tuple(finals)))

    # ------------------------------------------------------------------------------------------ the controls
    def alpha_only(self, cell: _Cell, dataset, model, scenario, seed) -> None:
        """ICP's α schedule re-weighting CE, nothing refined or distilled: ``icp`` with K = 0."""
        self.add(cell, dataset, model, scenario, "icp", {"steps": 0}, seed)

    def compute_matched(self, cell: _Cell, block: dict, dataset, model, scenario, seed) -> None:
        """The baseline (``ce``; ``vae`` for a generative model) given the training FLOPs of each run the block's
        ``compute_matched`` spec names (:func:`icp.matching.matched_methods`), one control per budget."""
        spec = matching.control_spec(self.spec, block, f"{self.where}: study '{cell.study}'")
        base = matching.baseline(model)

        def cell_run(m: str, options: dict) -> Run:  # the run in this cell, built apart to read its cost
            return self.candidates.pop(self.add(cell, dataset, model, scenario, m, options, seed, candidate=True))

        for name, like, options in matching.matched_methods(spec, block["methods"], base, cell_run):
            matched = self.add(cell, dataset, model, scenario, like, options, seed)
            self.add(cell, dataset, model, scenario, base, {}, seed, (name, self.runs[matched]))


def _check_primary(analysis: dict, studies: dict[str, list[str]], runs: dict[str, "Run"], where: str) -> None:
    """Each declared primary comparison names a study of the grid and two of that study's variants."""
    from icp import power

    for study, declared in (analysis.get("primary") or {}).items():
        if study not in studies:
            raise ConfigError(f"{where}: analysis.primary: unknown study '{study}'{did_you_mean(study, studies)}")
        variants = {runs[rid].variant for rid in studies[study]}
        for text in declared:
            try:
                comparison = power.parse(text)
            except ValueError as exc:
                raise ConfigError(f"{where}: analysis.primary.{study}: {exc}") from None
            for name in (comparison.variant, comparison.against):
                if name not in variants:
                    raise ConfigError(f"{where}: analysis.primary.{study}: '{name}' is no variant of study "
                                      f"'{study}'{did_you_mean(name, variants)}")


@contextlib.contextmanager
def _at_item(where: str, at: str) -> Iterator[None]:
    """Prefix a config error raised while expanding a grid item with the file and the item's place in it."""
    try:
        yield
    except ConfigError as exc:
        if str(exc).startswith(where):
            raise
        raise ConfigError(f"{where}: {at}: {exc}") from None


def load_expand(path: str | Path, check_recipes: bool = True) -> Grid:
    """The grid of a file, with the final runs of its tuned cells that are chosen (:meth:`Grid.with_selections`)."""
    return expand(gridfile.load(path), str(path), check_recipes).with_selections()


def run_count_line(g: Grid, planned: Optional[set] = None) -> str:
    """The line a sweep starts with: the grid's runs (with the final runs of tuned cells whose trial is not chosen
    yet), how many this call trains, and where to follow them; Snakemake's own "N of M steps" counts jobs."""
    pending = sum(len(cell.seeds) for cell in g.tuned if g.chosen(cell) is None)
    total = len(g.runs) + pending
    later = f", {pending} of them the final runs of tuned cells once their trials are chosen" if pending else ""
    now = f"; this call trains {len(planned)}" if planned is not None else ""
    return (f"icp: {g.source}: {total} runs{later}{now}. Snakemake's steps count its jobs (selections and tables "
            f"too); `icp status --watch --grid {g.source}` follows the runs with an ETA")

