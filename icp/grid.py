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
  distilled. An ICP variant with ``steps: 0`` is always this one run (:func:`canonical_method`), so the ``steps``
  study's K = 0 point and the controls of ``main``, ``noisy`` and ``fewshot`` are shared.
* ``compute_matched``: ``ce+budget=<method>``, plain CE given the training FLOPs of the ``<method>`` run of the
  same dataset, model, scenario, seed and step budget (the grid's ``compute_matched: {like: METHOD}``; that run
  is added to the study too): as many ce epochs as that run's declared cost in ce epochs
  (:func:`icp.methods.options.training_cost`, FLOPs, the same on every machine; ICP-Adam's warm-up epochs count
  as one), rounded, with the schedule stretched alike (:func:`matched_epochs`), so "better than ce" can be told
  from "trained longer".

A run's id names every factor and nothing else: ``<dataset>/<model>/<scenario>/<method>[+key=value...]/s<seed>``,
e.g. ``cifar100/resnet20/sym0.4/icp-sgd+reduction=sum+step_size=0.01/s2``. It is also the run's directory under
``runs_dir``. Options are named in key order; values equal to the method's default are dropped before naming, so
a run that two studies share (``steps=5`` in ``steps`` is ``icp-adam`` in ``main``; the clean ``ce`` run) has one
id and is trained once.
AI-KD's ``teacher`` option is not a factor: it is set to the ``ce`` run of the same dataset, model, scenario and
seed, which is added to the study and listed in the run's ``depends``. Likewise a generative model's run (the VAE)
gets ``train.fid_features``: the ``ce`` ResNet-20 run of its dataset (clean, seed 0), FID's feature network; or,
where the grid sets ``fid_features: inception[:PATH]``, Inception-v3 (no dependency).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import yaml

from icp import tuning
from icp.config import ConfigError, did_you_mean, read_yaml
from icp.methods import options_of, validate_options
from icp.methods.options import ICP_FAMILY
from icp.model_registry import GENERATIVE

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "workflow" / "schemas" / "grid.schema.yaml"
STUDIES = ("main", "noisy", "fewshot", "steps", "ablations", "generative", "authors", "tuned")
# With steps 0 an ICP variant refines nothing and distils nothing (the α-only control): only these options act
ALPHA_ONLY_OPTIONS = ("steps", "warmup", "label_smoothing", "authors_eval_ce")  # and the eval-mode CE term
CONTROLS = ("alpha_only", "compute_matched")
TEACHER_METHODS = {"aikd": "ce"}  # method -> the method of the run whose checkpoint it needs (option `teacher`)
# A generative model's FID features come from this classifier run of the same dataset (train.fid_features):
# (model, scenario, method, seed)
FID_FEATURE_RUN = ("resnet20", "clean", "ce", 0)


def _generative(model: str) -> bool:
    return model in GENERATIVE


_SCENARIO = re.compile(r"^(?:(?P<clean>clean)|(?P<type>sym|asy)(?P<rate>0?\.\d+)|(?P<shots>[1-9]\d*)shot)$")
_SAFE = re.compile(r"^[A-Za-z0-9._+=-]+$")


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


def parse_scenario(tag: str) -> list[str]:
    """A scenario tag (clean, sym0.4, asy0.2, 25shot) as ``--set`` items; the inverse of records.scenario_tag."""
    m = _SCENARIO.match(str(tag))
    if m is None:
        raise ConfigError(f"scenario '{tag}': expected clean, sym<rate>, asy<rate> (e.g. sym0.4) or <n>shot")
    if m["clean"]:
        return ["scenario.kind=clean"]
    if m["shots"]:
        return ["scenario.kind=fewshot", f"scenario.shots={int(m['shots'])}"]
    rate = float(m["rate"])
    if not 0 < rate < 1:
        raise ConfigError(f"scenario '{tag}': the noise rate must be in (0, 1)")
    kind = {"sym": "symmetric", "asy": "asymmetric"}[m["type"]]
    return ["scenario.kind=noisy", f"scenario.noise_type={kind}", f"scenario.noise_rate={rate:g}"]


def canonical_scenario(tag: str) -> str:
    m = _SCENARIO.match(str(tag))
    if m is not None and m["rate"]:
        return f"{m['type']}{float(m['rate']):g}"
    return str(tag)


def format_value(value: Any) -> str:
    """A method option value as it appears in run ids (and in ``--set``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "-".join(format_value(v) for v in value)
    return str(value)


def variant(method: str, options: Iterable[tuple[str, Any]], factors: Iterable[tuple[str, str]] = ()) -> str:
    """``method[+key=value...]``: the method part of a run id (options non-default, sorted by key), then the grid
    factors that are not method options (``+budget=icp-adam``: compute-matched; ``+recipe=authors``)."""
    return method + "".join(f"+{k}={format_value(v)}" for k, v in (*options, *factors))


def variant_of_id(rid: str) -> Optional[str]:
    """The variant part of a grid run id (``dataset/model/scenario/variant/s<seed>``), or None for another id."""
    parts = str(rid).split("/")
    return parts[3] if len(parts) == 5 and re.fullmatch(r"s\d+", parts[4]) else None


def variant_label(name: str) -> str:
    """A variant as tables and figures name it: the controls say plainly what they are."""
    if re.fullmatch(r"icp(\+label_smoothing=[^+]+)?\+steps=0(\+warmup=[^+]+)?", name):
        return f"{name} (α-only control: α-weighted CE, K = 0)"
    if re.fullmatch(r"icp\+authors_eval_ce=true(\+label_smoothing=[^+]+)?\+steps=0(\+warmup=[^+]+)?", name):
        return f"{name} (α-only control + the authors' eval-mode CE, K = 0)"
    m = re.search(r"\+tuned=(\d+)$", name)
    if m:
        return f"{name} (tuned: trial {m[1]}'s setting, chosen on validation)"
    m = re.search(r"\+budget=([^+]+)", name)
    if m:
        return f"{name} (ce, FLOP-matched to {m[1]})"
    if name == "icp-sgd":  # the input barely moves: each image's step is divided by the batch size
        return "icp-sgd (as published: η = 0.002 on the batch-mean loss)"
    return name


def canonical_method(method: str, options: dict) -> tuple[str, dict]:
    """ICP with ``steps: 0`` (the α-only control) is one run whatever its input optimizer and refinement options:
    ``icp`` with the options that still act (:data:`ALPHA_ONLY_OPTIONS`), so every study shares it."""
    if method in ICP_FAMILY and options.get("steps") == 0:
        return "icp", {k: v for k, v in options.items() if k in ALPHA_ONLY_OPTIONS}
    return method, options


def run_id(dataset: str, model: str, scenario: str, method: str, options: Iterable[tuple[str, Any]],
           seed: int, factors: Iterable[tuple[str, str]] = ()) -> str:
    parts = [dataset, model, canonical_scenario(scenario), variant(method, options, factors), f"s{seed}"]
    for part in parts:
        if not _SAFE.match(part):
            raise ConfigError(f"run id part '{part}' is not filesystem-safe (letters, digits and ._+=- only)")
    return "/".join(parts)


def _tuning_defaults(recipe_file: Optional[str], overrides: list[str], space: dict, where: str) -> dict[str, Any]:
    """Each key of a tuning space at its value in the cell's resolved config (recipe, grid settings, the method's
    option defaults): a tuned method's trial 0, its published default."""
    if recipe_file is None:
        raise ConfigError(f"{where}: no recipe for the cell")
    cfg = _resolved(recipe_file, tuple(overrides))
    out = {}
    for key in space:
        node: Any = cfg
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{where}.{key}: not a key of the run's config")
            node = node[part]
        out[key] = node
    return out


@functools.lru_cache(maxsize=None)
def _resolved(recipe_file: str, overrides: tuple[str, ...]) -> dict:
    from icp import config

    return config.resolve(config.read_yaml(recipe_file, "recipe"), list(overrides)).to_dict()


@functools.lru_cache(maxsize=None)
def _option_defaults(method: str) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(options_of(method)):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _normalise_options(method: str, options: dict) -> tuple[tuple[str, Any], ...]:
    """Validate options against the method's ``Options``; keep those that differ from the defaults, by key."""
    return _normalise_cached(method, json.dumps(options, sort_keys=True))


@functools.lru_cache(maxsize=None)
def _normalise_cached(method: str, options_json: str) -> tuple[tuple[str, Any], ...]:
    options = json.loads(options_json)
    probe = dict(options)
    if method in TEACHER_METHODS:
        probe.setdefault("teacher", "<teacher run>")
    validate_options(method, probe)  # unknown key, wrong type or range: one ConfigError naming it
    defaults = _option_defaults(method)
    return tuple(sorted((k, v) for k, v in options.items() if not (k in defaults and defaults[k] == v)))


def load(path: str | Path, check: bool = True, apply_params: bool = True) -> dict:
    """Read a grid file and (``check``) validate it with its schema (the Snakefile validates it with Snakemake's
    ``validate`` instead, against the same schema)."""
    grid = read_yaml(path, "grid file")
    if check:
        validate_schema(grid, str(path))
    return with_params(grid, str(path)) if apply_params else grid


def with_params(grid: dict, where: str = "grid") -> dict:
    """Apply the grid's ``params`` section: ``seeds`` and ``set`` from a section of another YAML file (the laptop
    grid's knobs live in DVC's ``params.yaml``, so that ``dvc params diff`` shows them). ``seeds`` replaces the
    grid's, ``set`` items come after the grid's own."""
    ref = grid.get("params")
    if not ref:
        return grid
    section = read_yaml(ref["file"], "params file")
    for part in str(ref["key"]).split("."):
        if not isinstance(section, dict) or part not in section:
            raise ConfigError(f"{where}: params: {ref['file']} has no section '{ref['key']}'")
        section = section[part]
    unknown = sorted(set(section) - {"seeds", "set"})
    if unknown:
        raise ConfigError(f"{where}: params: {ref['file']}:{ref['key']} may set seeds and set only, not {unknown}")
    out = {k: v for k, v in grid.items() if k != "params"}
    if "seeds" in section:
        out["seeds"] = list(section["seeds"])
    out["set"] = [*grid.get("set", []), *section.get("set", [])]
    return out


def validate_schema(grid: dict, where: str = "grid") -> None:
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(grid), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        at = ".".join(str(p) for p in e.path) or "(top level)"
        message = e.message
        if e.validator == "pattern" and "description" in e.schema:  # say what is accepted, not the regex
            message = f"{e.instance!r} is not {e.schema['description']}"
            if e.path and "scenarios" in e.path:
                message += did_you_mean(str(e.instance), scenario_spellings(str(e.instance)))
        elif e.validator == "additionalProperties" and isinstance(e.instance, dict):  # a key typo: the nearest key
            known = set(e.schema.get("properties") or {})
            unexpected = sorted(k for k in e.instance if k not in known)
            if unexpected and known:
                message = (f"unknown key '{unexpected[0]}'{did_you_mean(str(unexpected[0]), known)}"
                           + (f" (also unknown: {', '.join(map(str, unexpected[1:]))})" if unexpected[1:] else ""))
        raise ConfigError(f"{where}: {at}: {message}")


def scenario_spellings(word: str) -> list[str]:
    """Well-formed scenarios that a mistyped ``word`` may have meant, for its suggestion: its digits read as a noise
    rate (``sym04`` -> ``sym0.4``, ``sym40`` -> ``sym0.4``) in the family it names, or as a shot count, and
    ``clean``; never ``word`` itself, and each one that :data:`_SCENARIO` accepts."""
    digits = "".join(re.findall(r"[0-9.]+", word))
    rates = set()
    if digits:
        if "." in digits:
            rates.add(digits)
        elif digits.startswith("0"):
            rates.add(f"0.{digits[1:] or '0'}")
        else:
            rates.update({f"0.{digits}", f"{int(digits) / 100:g}"} if int(digits) <= 100 else set())
    rates = {f"{float(r):g}" for r in rates if re.fullmatch(r"\d*\.?\d+", r)} or {"0.4"}
    families = [f for f in ("sym", "asy") if f in word.lower()] or ["sym", "asy"]
    out = ["clean", *(f"{f}{r}" for f in families for r in sorted(rates))]
    if "shot" in word.lower() or not any(f in word.lower() for f in ("sym", "asy")):
        out += [f"{int(d)}shot" for d in re.findall(r"\d+", word)[:1] if int(d) > 0]
    return [c for c in dict.fromkeys(out) if c != word and _SCENARIO.match(c)]


def expand(grid: dict, source: Optional[str] = None, check_recipes: bool = True) -> Grid:
    """Every study's runs, deduplicated by run id; ``grid`` is a loaded (schema-checked) grid mapping."""
    runs_dir = str(grid.get("runs_dir", "results/runs")).rstrip("/")
    data_root = str(grid.get("data_root", "data"))
    recipes: dict = grid.get("recipes", {})
    common = [str(s) for s in grid.get("set", [])]
    fid_features = str(grid.get("fid_features", "classifier"))
    where = source or "grid"
    runs: dict[str, Run] = {}
    studies: dict[str, list[str]] = {}
    checked: set = set()
    tuned_cells: list[Tuned] = []
    candidates: dict[str, Run] = {}  # the final runs of every trial: in the grid once a selection chooses it

    def add(study: str, dataset, model, scenario, method, options: dict, seed: int, recipe: Optional[dict] = None,
            budget: Optional[tuple[str, "Run"]] = None, steps: Optional[int] = None,
            tuned: tuple[tuple[str, str], tuple[str, ...]] = ((), ()), candidate: bool = False) -> str:
        """Add one run (and the runs it depends on); ``recipe``: the block's own ({name, file}); ``budget``: (the
        method whose training FLOPs a compute-matched run gets, the run of that method it matches); ``steps``: a
        few-shot run's budget of optimizer steps; ``tuned``: (the factor of a tuning trial, ``("trial", i)``, and
        its drawn ``--set`` items); ``candidate``: a final run of a tuning trial (``("tuned", i)``), kept apart from
        the grid's runs until a selection chooses its trial (:meth:`Grid.with_selections`)."""
        tune_factor, tune_sets = tuned
        key = f"{dataset}/{model}"
        recipe_file = recipe["file"] if recipe else recipes.get(key)
        if recipe_file is None:
            raise ConfigError(f"study '{study}': no recipe for {key}; add it under 'recipes'")
        method, options = canonical_method(method, options)
        opts = _normalise_options(method, options)
        factors = ((("budget", budget[0]),) if budget else ()) + ((("recipe", recipe["name"]),) if recipe else ()) \
            + ((tune_factor,) if tune_factor else ())
        rid = run_id(dataset, model, scenario, method, opts, seed, factors)
        into = candidates if candidate else runs
        if rid not in into:
            depends: tuple[str, ...] = ()
            extra: list[str] = []
            if method in TEACHER_METHODS:
                tid = add(study, dataset, model, scenario, TEACHER_METHODS[method], {}, seed, recipe)
                depends = (tid,)
                extra = [f"method.options.teacher={runs[tid].run_dir}"]
            if _generative(model) and fid_features != "classifier":
                extra.append(f"train.fid_features={fid_features}")
            elif _generative(model):
                fid_model, fid_scenario, fid_method, fid_seed = FID_FEATURE_RUN
                fid = add(study, dataset, fid_model, fid_scenario, fid_method, {}, fid_seed)
                depends += (fid,)
                extra.append(f"train.fid_features={runs[fid].run_dir}")
            overrides = [f"data.dataset={dataset}", f"data.root={data_root}", f"model.name={model}",
                         *parse_scenario(scenario), f"method.name={method}",
                         *(f"method.options.{k}={_yaml_value(v)}" for k, v in opts), *extra,
                         f"train.seed={seed}", *common, *tune_sets]
            if steps is not None:
                overrides += _step_budget(recipe_file, overrides, steps)
            if budget:
                epochs, _ = matched_epochs(budget[1])
                overrides += _stretched(recipe_file, overrides, epochs)
            into[rid] = Run(rid, f"{runs_dir}/{rid}", dataset, model, canonical_scenario(scenario), method, opts,
                            seed, recipe_file, tuple(overrides), depends, factors=factors)
            if check_recipes and recipe_file not in checked:
                _check_recipe(recipe_file, dataset, model)
                checked.add(recipe_file)
        if candidate:
            return rid
        members = studies.setdefault(study, [])
        if rid not in members:
            members.append(rid)
        return rid

    for study, blocks in grid.get("studies", {}).items():
        for i, block in enumerate(blocks):
            names = list(block.get("options", {}))
            values = [block["options"][k] for k in names]
            recipe = block.get("recipe")
            budgets = block.get("optimizer_steps", {})
            conditions = list(itertools.product(block["datasets"], block["models"], block.get("scenarios", ["clean"]),
                                                block.get("seeds", grid.get("seeds", [0]))))
            steps = lambda dataset, scenario: _few_shot_steps(budgets, dataset, scenario,  # noqa: E731
                                                               f"{where}: study '{study}'")
            for (dataset, model, scenario, seed), (j, method), combo in itertools.product(
                    conditions, enumerate(block["methods"]), list(itertools.product(*values))):
                with _naming(where, f"studies.{study}.{i}.methods.{j}"):
                    add(study, dataset, model, scenario, method, dict(zip(names, combo)), seed, recipe,
                        steps=steps(dataset, scenario))
            if block.get("tune"):
                tuning_spec = grid.get("tuning") or {}
                tuning.check(tuning_spec, {study: set(block["methods"])}, where)
                cells = list(dict.fromkeys((d, m, sc) for d, m, sc, _ in conditions))
                seeds = tuple(block.get("seeds", grid.get("seeds", [0])))
                tuning.check_seeds(tuning_spec, seeds, where, study)
                for (dataset, model, scenario), method in itertools.product(cells, block["methods"]):
                    space = tuning_spec["spaces"][method]
                    defaults = _tuning_defaults(recipe["file"] if recipe else recipes.get(f"{dataset}/{model}"),
                                                [f"data.dataset={dataset}", f"model.name={model}",
                                                 *parse_scenario(scenario), f"method.name={method}", *common,
                                                 *(["method.options.teacher=<teacher run>"]
                                                   if method in TEACHER_METHODS else [])],
                                                space, f"{where}: tuning.spaces.{method}")
                    draws = tuning.draws(space, tuning.trial_count(tuning_spec),
                                         int(tuning_spec.get("draw_seed", 0)), defaults)
                    trials, finals = [], []
                    for t, setting in enumerate(draws):
                        sets = tuple(f"{k}={_yaml_value(v)}" for k, v in sorted(setting.items()))
                        with _naming(where, f"studies.{study}.{i}.tune"):
                            trials.append(add(study, dataset, model, scenario, method, {},
                                              int(tuning_spec.get("seed", tuning.DEFAULT_SEED)), recipe, steps=steps(dataset, scenario),
                                              tuned=(("trial", str(t)), sets)))
                            finals.append(tuple(add(study, dataset, model, scenario, method, {}, seed, recipe,
                                                    steps=steps(dataset, scenario), tuned=(("tuned", str(t)), sets),
                                                    candidate=True) for seed in seeds))
                    tuned_cells.append(Tuned(study, dataset, model, canonical_scenario(scenario), method,
                                             tuple(trials), tuple(draws), seeds, tuple(finals)))
            controls = block.get("controls", [])
            for dataset, model, scenario, seed in conditions:
                if "alpha_only" in controls:  # ICP's α schedule re-weighting CE, nothing refined or distilled
                    add(study, dataset, model, scenario, "icp", {"steps": 0}, seed, recipe,
                        steps=steps(dataset, scenario))
                if "compute_matched" in controls:  # ce given the training FLOPs of the run it matches
                    like = _matched_method(grid, f"{where}: study '{study}'")
                    matched = add(study, dataset, model, scenario, like, {}, seed, recipe,
                                  steps=steps(dataset, scenario))
                    add(study, dataset, model, scenario, "ce", {}, seed, recipe, (like, runs[matched]),
                        steps(dataset, scenario))

    membership: dict[str, list[str]] = {}
    for study, ids in studies.items():
        for rid in ids:
            membership.setdefault(rid, []).append(study)
    runs = {rid: dataclasses.replace(r, studies=tuple(membership[rid])) for rid, r in runs.items()}
    return Grid(runs, studies, runs_dir, source, str(grid.get("results_dir", "results")).rstrip("/"),
                str(grid.get("figures_dir", "figures")).rstrip("/"), tuple(tuned_cells),
                candidates, str(grid.get("logs_dir") or "").rstrip("/"))


@contextlib.contextmanager
def _naming(where: str, at: str) -> Iterator[None]:
    """Prefix a config error raised while expanding a grid item with the file and the item's place in it."""
    try:
        yield
    except ConfigError as exc:
        if str(exc).startswith(where):
            raise
        raise ConfigError(f"{where}: {at}: {exc}") from None


def _few_shot_steps(budgets: dict, dataset: str, scenario: str, where: str) -> Optional[int]:
    """A block's ``optimizer_steps`` for a few-shot run of ``dataset`` (None: the recipe's epochs)."""
    if not budgets or not str(scenario).endswith("shot"):
        return None
    if dataset not in budgets:
        raise ConfigError(f"{where}: optimizer_steps has no budget for dataset '{dataset}' (has: "
                          f"{', '.join(sorted(budgets))})")
    return int(budgets[dataset])


def _step_budget(recipe: str, overrides: list[str], steps: int) -> list[str]:
    """``--set`` items that train a few-shot run for ``steps`` optimizer steps: epochs = ceil(steps / steps per
    epoch), with shots × classes training images; test metrics about 50 times a run (``train.eval_every``), since
    a 5-shot run's epochs are a few steps each. Every method of a cell gets the same number of steps."""
    from icp import config, data

    cfg = config.resolve(_recipe_tree(recipe), overrides)
    images = cfg.scenario.shots * data.INFO[cfg.data.dataset].num_classes
    per_epoch = images // cfg.train.batch_size if cfg.data.drop_last else -(-images // cfg.train.batch_size)
    epochs = -(-steps // max(1, per_epoch))
    return [f"train.epochs={epochs}", f"train.eval_every={max(1, epochs // 50)}"]


def _matched_method(grid: dict, where: str) -> str:
    """The method whose training FLOPs a compute-matched ``ce`` run gets: the grid's ``compute_matched.like``."""
    matched = grid.get("compute_matched")
    if not matched or not matched.get("like"):
        raise ConfigError(f"{where}: controls: compute_matched needs the grid's 'compute_matched' section "
                          "(like: METHOD)")
    return str(matched["like"])


def matched_epochs(run: "Run") -> tuple[int, float]:
    """(ce epochs, FLOP ratio to ce) that give a ``ce`` run the training FLOPs of ``run``: its declared cost
    (:func:`icp.methods.options.training_cost`, in ce epochs of the same data, scenario and batch) rounded to
    whole epochs, and that cost over the run's epochs."""
    from icp import config
    from icp.methods.options import training_cost

    cfg = config.resolve(_recipe_tree(run.recipe), list(run.overrides))
    cost = training_cost(cfg.method.name, cfg.method.options, cfg.train.epochs)
    return max(1, round(cost)), cost / cfg.train.epochs


@functools.lru_cache(maxsize=None)
def _recipe_tree(path: str) -> dict:
    from icp import config

    return config.read_yaml(path, "recipe")


def _stretched(recipe: str, overrides: list[str], epochs: int) -> list[str]:
    """``--set`` items that train the run ``overrides`` describes for ``epochs`` epochs with its schedule stretched
    alike (milestones given in epochs and the warm-up scaled by the ratio of epochs; those given as fractions of
    the run stretch with it)."""
    from icp import config

    cfg = config.resolve(_recipe_tree(recipe), overrides)
    ratio = epochs / cfg.train.epochs
    out = [f"train.epochs={epochs}"]
    milestones = cfg.schedule.milestones
    if any(m >= 1 for m in milestones):
        out.append(f"schedule.milestones={_yaml_value([round(m * ratio) if m >= 1 else m for m in milestones])}")
    if cfg.schedule.warmup_epochs:
        out.append(f"schedule.warmup_epochs={cfg.schedule.warmup_epochs * ratio:g}")
    return out


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def _check_recipe(recipe: str, dataset: str, model: str) -> None:
    from icp import config

    data = config.read_yaml(recipe, "recipe")
    if data.get("method") is not None:
        raise ConfigError(f"recipe {recipe}: a recipe has no 'method' section (the grid sets the method)")
    config.resolve(data, [f"data.dataset={dataset}", f"model.name={model}"])


def grid_files(folder: str | Path = "config") -> list[str]:
    """The grid files in ``folder`` (``config/paper.yaml``, ``config/laptop.yaml``, ...): its YAML files whose
    mapping declares ``studies`` (a training config or recipe never does), sorted by name."""
    out = []
    for path in sorted(Path(folder).glob("*.yaml")) if Path(folder).is_dir() else []:
        try:
            tree = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(tree, dict) and isinstance(tree.get("studies"), dict):
            out.append(str(path))
    return out


def load_expand(path: str | Path, check_recipes: bool = True) -> Grid:
    """The grid of a file, with the final runs of its tuned cells that are chosen (:meth:`Grid.with_selections`)."""
    return expand(load(path), str(path), check_recipes).with_selections()
