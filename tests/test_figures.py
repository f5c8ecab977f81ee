"""The figures (icp.figures) never average across conditions: each condition has its own panel, whose legend gives
that panel's own n; the ICP schedule is drawn per condition and model; the perturbation figure refines the
training batch size. Synthetic frames: the shapes of the figures, not their numbers."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from icp import figure_data, figures
from tests.conftest import REPO, installed_plugin, run_python

# two conditions that differ in every factor: 3 seeds of a 3-tap ResNet-20 trained 4 epochs, 2 seeds of a 4-tap
# PreAct ResNet-18 trained 6 epochs
CONDITIONS = {("fashion-mnist", "resnet20"): (3, 4, 3), ("cifar100", "preact_resnet18"): (2, 6, 4)}


def _row(study, dataset, model, scenario, method, seed, epochs, options=None, factors="", **extra):
    options = options or {}
    variant = method + "".join(f"+{k}={v}" for k, v in sorted(options.items())) + factors  # factors: +budget=...
    return {"run_id": f"{dataset}/{model}/{scenario}/{variant}/s{seed}", "studies": study, "dataset": dataset,
            "model": model, "scenario": scenario, "method": method, "variant": variant, "seed": seed,
            "status": "complete", "epochs": epochs,
            "top1": _top1(method, scenario, seed) + 0.01 * options.get("steps", 0),
            "images_per_s": 1000.0 / (1 + 2 * options.get("steps", 0)) + 10 * seed,
            "method_options": json.dumps(options, sort_keys=True), "path": "/nonexistent", **extra}


def _top1(method, scenario, seed):
    """A made-up last-epoch top-1 that differs by method, scenario and seed (so that lines can be told apart)."""
    rate = float(scenario[3:]) if scenario[:3] in ("sym", "asy") else 0.0
    shots = float(scenario[:-4]) if scenario.endswith("shot") else 500.0
    return (0.5 + 0.05 * (method != "ce") - rate * (0.6 if scenario.startswith("asy") else 0.4)
            + 0.05 * math.log10(shots) + 0.01 * seed)


def frames(conditions=CONDITIONS):
    """(runs, epochs) frames of every study's figures for ``conditions``: (dataset, model) -> (seeds, epochs,
    feature taps)."""
    runs = []
    for (dataset, model), (seeds, n_epochs, _) in conditions.items():
        for seed in range(seeds):
            for method in ("ce", "icp-adam"):
                runs.append(_row("main", dataset, model, "clean", method, seed, n_epochs))
                for scenario in ("sym0.2", "sym0.4", "asy0.4"):
                    runs.append(_row("noisy", dataset, model, scenario, method, seed, n_epochs))
                for shots in (5, 50):
                    runs.append(_row("fewshot", dataset, model, f"{shots}shot", method, seed, n_epochs))
            for k in (0, 1, 3):
                runs.append(_row("steps", dataset, model, "clean", "icp-adam", seed, n_epochs, {"steps": k}))
            for method in ("vae", "icp-adam"):
                runs.append(_row("generative", dataset, "vae", "clean",
                                 method, seed, n_epochs, ssim=0.5, fid_prior=50.0))
    runs = pd.DataFrame(runs)
    taps = {m: t for (_, m), (_, _, t) in conditions.items()}
    return runs, _epoch_rows(runs, taps)


def _epoch_rows(runs, taps):
    """The epochs frame of ``runs``: a row per epoch (1-based, as records number them), ICP's diagnostics with
    ``taps`` (model -> feature taps) for its runs."""
    rows = []
    for _, r in runs.iterrows():
        for e in range(1, r.epochs + 1):
            row = {k: r[k] for k in ("run_id", "studies", "dataset", "model", "scenario", "method", "variant",
                                     "seed", "status", "method_options")}
            row.update(epoch=e, test_top1=r.top1 * (1 - 0.5 ** e), test_ssim=0.1 * e, test_elbo=-100.0 / e,
                       test_fid_recon=10.0 / e if e % 2 == 0 else None)
            if r.method.startswith("icp"):
                w = r.epochs // 4
                row["diag.alpha"] = 1.0 if e - 1 < w else math.cos(math.pi * (e - 1 - w) / (2 * (r.epochs - w)))
                row["diag.input_shift"] = 0.01 * e * json.loads(r.method_options).get("steps", 5)
                for t in range(1, taps.get(r.model, 2) + 1):
                    row[f"diag.feature_mse.stage{t}"] = 0.1 * t / e
            rows.append(row)
    return pd.DataFrame(rows)


def _draw(name, runs, epochs, ctx=None):
    """Figure ``name`` drawn from the frames, as the registry draws it (its empty canvas where its study has no
    complete run)."""
    return figures.FIGURES[name][1](runs, epochs, ctx)


def _close(fig):
    from icp.figures.plot import libs

    libs()[0].close(fig)


@pytest.fixture(scope="module")
def drawn():
    """name -> the figure drawn from frames() (the checkpoint figures are left out)."""
    runs, epochs = frames()
    out = {}
    for name, (_, fn) in figures.FIGURES.items():
        if name not in ("perturbation", "reconstructions", "samples"):
            out[name] = fn(runs, epochs, None)
    yield out
    for fig in out.values():
        _close(fig)


def _data_axes(fig):
    return [ax for ax in fig.axes if ax.lines or ax.patches or ax.collections]


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().texts] if ax.get_legend() else []


def _which(ax):
    """The conditions an Axes names in its title: a subset of CONDITIONS' datasets."""
    return {d for d, _ in CONDITIONS if d in ax.get_title()}


CURVES = ["learning_curves", "compute", "noise", "fewshot", "input_shift", "feature_distance", "generative_curves",
          "steps", "schedule"]
# figures whose panel leaves the training length out (a control trains longer than the run it judges; few-shot
# step budgets train each shot count its own epochs): the length is in each line's legend name, or (fewshot)
# under each shot count's tick
BY_PANEL = ("learning_curves", "compute", "noise", "fewshot")


def _n_epochs(dataset):
    return next(e for (d, _), (_, e, _) in CONDITIONS.items() if d == dataset)


@pytest.mark.parametrize("name", CURVES)
def test_each_condition_is_drawn_in_its_own_axes(drawn, name):
    fig = drawn[name]
    axes = [ax for ax in _data_axes(fig) if "layer weights" not in ax.get_title()]
    assert axes and all(len(_which(ax)) == 1 for ax in axes), [ax.get_title() for ax in axes]
    assert {d for ax in axes for d in _which(ax)} == {d for d, _ in CONDITIONS}
    for ax in axes:  # the condition's training length is part of the condition
        (dataset,) = _which(ax)
        n_epochs = _n_epochs(dataset)
        if name == "fewshot":
            assert all(t.get_text().endswith(f"\n{n_epochs} ep") for t in ax.get_xticklabels())
        elif name in BY_PANEL:
            labels = [t for t in _legend(ax) if "(n=" in t]
            assert labels and all(f", {n_epochs} epochs (n=" in t for t in labels), labels
        else:
            assert f"{n_epochs} epochs" in ax.get_title()
    if name in ("input_shift", "feature_distance", "generative_curves"):
        for ax in axes:  # no epoch beyond the panel's own runs'
            (dataset,) = _which(ax)
            assert max(max(line.get_xdata(), default=0) for line in ax.lines) <= _n_epochs(dataset)
    if name == "learning_curves":  # progress through each run: its last epoch at 100 %
        for ax in axes:
            assert max(max(line.get_xdata(), default=0) for line in ax.lines) == pytest.approx(100, abs=1.5)  # nudged


@pytest.mark.parametrize("name", CURVES)
def test_each_legend_gives_its_own_panels_n(drawn, name):
    seeds = {d: s for (d, _), (s, _, _) in CONDITIONS.items()}
    checked = 0
    for ax in _data_axes(drawn[name]):
        if "layer weights" in ax.get_title():
            continue
        (dataset,) = _which(ax)
        labels = [t for t in _legend(ax) if "(n=" in t]
        assert labels, (ax.get_title(), _legend(ax))
        assert all(t.endswith(f"(n={seeds[dataset]})") for t in labels), (ax.get_title(), labels)
        checked += 1
    assert checked >= 2


def test_feature_distance_panels_show_only_their_models_taps(drawn):
    for ax in _data_axes(drawn["feature_distance"]):
        (dataset,) = _which(ax)
        taps = next(t for (d, _), (_, _, t) in CONDITIONS.items() if d == dataset)
        assert sorted(t.split(" ")[0] for t in _legend(ax)) == [f"stage{i}" for i in range(1, taps + 1)]


def test_schedule_weights_each_model_over_its_own_taps(drawn):
    bars = {ax.get_title(): ax for ax in drawn["schedule"].axes if "layer weights" in ax.get_title()}
    assert sorted(bars) == ["preact_resnet18: layer weights over its 4 taps",
                            "resnet20: layer weights over its 3 taps"]
    for title, ax in bars.items():
        n = 3 if title.startswith("resnet20") else 4
        assert len(ax.patches) == n and _legend(ax) == ["cosine"]  # a bar per tap of the kind the runs used
        assert [t.get_text() for t in ax.get_xticklabels()] == [f"stage{i}" for i in range(1, n + 1)]


def test_schedule_alpha_follows_each_conditions_own_schedule(drawn):
    runs, epochs = frames()
    for ax in _data_axes(drawn["schedule"]):
        if "layer weights" in ax.get_title():
            continue
        (dataset,) = _which(ax)
        want = epochs[(epochs.dataset == dataset) & (epochs.variant == "icp-adam")].groupby("epoch")["diag.alpha"]
        assert want.nunique().max() == 1  # every run of the condition records the same α_e
        (line,) = [ln for ln in ax.lines if len(ln.get_xdata()) > 1]
        assert list(line.get_xdata()) == list(want.first().index)
        assert list(line.get_ydata()) == pytest.approx(list(want.first()))


def test_one_condition_with_runs_of_two_lengths_gets_two_panels():
    runs, epochs = frames({("fashion-mnist", "resnet20"): (2, 4, 3)})
    longer, longer_epochs = frames({("fashion-mnist", "resnet20"): (1, 8, 3)})
    longer = longer.assign(run_id=longer.run_id + "-long")
    longer_epochs = longer_epochs.assign(run_id=longer_epochs.run_id + "-long")
    runs, epochs = pd.concat([runs, longer]), pd.concat([epochs, longer_epochs])
    fig = _draw("schedule", runs, epochs, None)
    alpha = [ax for ax in _data_axes(fig) if "layer weights" not in ax.get_title()]
    assert sorted(ax.get_title() for ax in alpha) == ["fashion-mnist / resnet20 / clean, 4 epochs",
                                                      "fashion-mnist / resnet20 / clean, 8 epochs"]
    for ax in alpha:
        (line,) = [ln for ln in ax.lines if len(ln.get_xdata()) > 1]
        assert max(line.get_xdata()) == (4 if "4 epochs" in ax.get_title() else 8)
        assert min(line.get_ydata()) > 0 and line.get_ydata()[0] == 1.0  # α_e of one schedule, no saw-tooth
    _close(fig)


def test_steps_shows_accuracy_and_cost_per_condition(drawn):
    titles = sorted(ax.get_title() for ax in _data_axes(drawn["steps"]))
    assert len(titles) == 4 and sum("accuracy" in t for t in titles) == 2 and sum("cost" in t for t in titles) == 2
    cost = [ax for ax in drawn["steps"].axes if "cost" in ax.get_title()]
    assert all(ax.get_ylabel().startswith("training images/s\n") for ax in cost)


def test_noise_keeps_the_rate_on_x_and_the_kind_as_line_style(drawn):
    for ax in _data_axes(drawn["noise"]):
        assert ax.get_xlabel() == "noise rate (%)"
        assert {"symmetric", "asymmetric"} <= set(_legend(ax))
        xs = {x for line in ax.lines for x in line.get_xdata()}
        assert {0.0, 20.0, 40.0} <= xs


def test_figures_written_with_integer_epoch_ticks_and_empty_canvas(tmp_path, monkeypatch):
    from matplotlib.ticker import MaxNLocator

    runs, epochs = frames()
    fig = _draw("input_shift", runs, epochs, None)
    monkeypatch.setitem(figures.FIGURES, "input_shift", ("main", lambda *_: fig))
    png, pdf = figures.make("input_shift", runs, epochs, tmp_path)
    assert png.stat().st_size > 5_000 and pdf.exists()
    for ax in _data_axes(fig):
        assert ax.get_xlabel() == "epoch"
        locator = ax.xaxis.get_major_locator()
        assert isinstance(locator, MaxNLocator) and locator._integer
    for name in ("learning_curves", "compute"):
        empty = figures.FIGURES[name][1](runs.assign(status="running"), epochs, None)
        assert any(t.get_text().startswith("no complete") for t in empty.axes[0].texts)
        _close(empty)


def _tiny():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4)).eval()
    x = torch.randn(16, 3, 2, 2)
    y = torch.randint(0, 4, (16,))
    return model, x, y


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_perturbation_refines_a_training_batch_whatever_is_shown(optimizer):
    import torch

    from icp.methods.icp import ICPOptions

    model, x, y = _tiny()
    opts = ICPOptions(optimizer=optimizer, steps=3, step_size=0.5, cuda_graph=False)
    _, _, icp3, fgsm3 = figure_data.refine_as_training(model, x, y, opts, batch_size=8, n_images=3)
    x6, y6, icp6, fgsm6 = figure_data.refine_as_training(model, x, y, opts, batch_size=8, n_images=6)
    assert icp3.shape[0] == 3 and icp6.shape[0] == 6 and torch.equal(x6, x[:6]) and torch.equal(y6, y[:6])
    assert torch.allclose(icp3, icp6[:3]) and torch.allclose(fgsm3, fgsm6[:3])
    assert not torch.allclose(icp6, x6)  # it did refine


def test_perturbation_step_per_image_is_trainings():
    """With the mean-reduced loss of a batch of B, an SGD step moves each image by η/B times its own gradient:
    the per-sample (summed) refinement with step η/B. Refining only the shown images would step B/n times
    further."""
    import dataclasses

    import torch

    from icp.methods.icp import ICPOptions, refine

    model, x, y = _tiny()
    opts = ICPOptions(optimizer="sgd", steps=2, step_size=0.5, cuda_graph=False)
    _, _, shown, _ = figure_data.refine_as_training(model, x, y, opts, batch_size=8, n_images=3)
    per_sample = refine(model, x[:3], y[:3], dataclasses.replace(opts, reduction="sum", step_size=0.5 / 8))
    assert torch.allclose(shown, per_sample, atol=1e-6)
    alone = refine(model, x[:3], y[:3], opts)  # the old figure: the shown images as their own batch
    assert not torch.allclose(shown, alone, atol=1e-4)


def test_steps_puts_the_shared_alpha_only_run_at_k_zero_of_every_line():
    runs, epochs = frames({("fashion-mnist", "resnet20"): (2, 4, 3)})
    runs = runs[~((runs.studies == "steps") & (runs.method_options == json.dumps({"steps": 0})))]
    extra = [_row("steps", "fashion-mnist", "resnet20", "clean", "icp", s, 4, {"steps": 0}) for s in range(2)]
    extra += [_row("steps", "fashion-mnist", "resnet20", "clean", "icp-sgd", s, 4, {"steps": k, "reduction": "sum"})
              for s in range(2) for k in (1, 3)]
    fig = figures.FIGURES["steps"][1](pd.concat([runs, pd.DataFrame(extra)], ignore_index=True), epochs, None)
    (acc,) = [ax for ax in fig.axes if "accuracy" in ax.get_title()]
    drawn = [line for line in acc.lines if len(line.get_xdata()) > 1]
    assert len(drawn) == 2 and all(min(line.get_xdata()) == 0 for line in drawn)  # icp-adam and icp-sgd from K = 0
    assert not any("icp+steps=0" in label for label in _legend(acc))  # no line of its own
    _close(fig)


def test_the_perturbation_figure_never_draws_the_alpha_only_control():
    control = _row("main", "fashion-mnist", "resnet20", "clean", "icp", 0, 4, {"steps": 0})
    adam = _row("main", "fashion-mnist", "resnet20", "clean", "icp-adam", 0, 4)
    assert figures.perturbation_run(pd.DataFrame([control, adam])).variant == "icp-adam"
    assert figures.perturbation_run(pd.DataFrame([control])) is None


def test_every_figure_has_a_caption_that_is_valid_restructured_text():
    from docutils.core import publish_doctree
    from docutils.utils import SystemMessage

    assert set(figures.CAPTIONS) == set(figures.FIGURES)
    for name, caption in figures.CAPTIONS.items():
        assert len(caption) > 40 and "\n" not in caption, name
        try:  # the Snakemake report renders it as reStructuredText: no warning (e.g. |x| as a substitution)
            publish_doctree(caption, settings_overrides={"halt_level": 2, "report_level": 5})
        except SystemMessage as exc:
            pytest.fail(f"caption of {name}: {exc}")
    # docs/results.md lists every figure with its caption (a block that tools/readme.py generates from the registry)
    docs = (REPO / "docs/results.md").read_text()
    for name, (study, _) in figures.FIGURES.items():
        assert f"* `{name}` (study `{study}`): {figures.CAPTIONS[name].replace('``', '`')}\n" in docs, name


# few-shot under a fixed budget of optimizer steps: each shot count trains its own number of epochs
SHOT_EPOCHS = {5: 24, 20: 6, 100: 2}


def _fewshot_frames():
    runs = [_row("fewshot", dataset, model, f"{shots}shot", method, seed, n_epochs)
            for (dataset, model), (seeds, _, _) in CONDITIONS.items() for seed in range(seeds)
            for method in ("ce", "icp-adam") for shots, n_epochs in SHOT_EPOCHS.items()]
    runs = pd.DataFrame(runs)
    return runs, _epoch_rows(runs, {})


def test_fewshot_draws_a_line_over_the_shot_counts_in_one_panel_per_dataset_and_model():
    runs, epochs = _fewshot_frames()
    fig = figures.FIGURES["fewshot"][1](runs, epochs, None)
    axes = _data_axes(fig)
    assert sorted(ax.get_title() for ax in axes) == ["cifar100 / preact_resnet18", "fashion-mnist / resnet20"]
    seeds = {d: s for (d, _), (s, _, _) in CONDITIONS.items()}
    for ax in axes:
        (dataset,) = _which(ax)
        lines = [line for line in ax.lines if len(line.get_xdata()) > 1]
        assert len(lines) == 2  # ce and icp-adam, each over every shot count
        assert all(sorted(line.get_xdata()) == sorted(SHOT_EPOCHS) for line in lines)
        assert ax.get_xscale() == "log"
        assert [t.get_text() for t in ax.get_xticklabels()] == [f"{s}\n{e} ep" for s, e in SHOT_EPOCHS.items()]
        assert sorted(t for t in _legend(ax) if "(n=" in t) == [f"ce (n={seeds[dataset]})",
                                                                f"icp-adam (n={seeds[dataset]})"]
    _close(fig)


def _with_controls(study="main", scenario="clean"):
    """frames() plus, in each condition of ``study``, the α-only control (icp+steps=0, as long as ICP) and the
    compute-matched ce (ce+budget=icp-adam), trained for the ce epochs that its icp-adam run costs."""
    from icp.methods.options import training_cost

    runs, _ = frames()
    extra = []
    for (dataset, model), (seeds, n_epochs, _) in CONDITIONS.items():
        matched = round(training_cost("icp-adam", {}, n_epochs))
        for seed in range(seeds):
            extra.append(_row(study, dataset, model, scenario, "icp", seed, n_epochs, {"steps": 0}))
            extra.append(_row(study, dataset, model, scenario, "ce", seed, matched, factors="+budget=icp-adam"))
    runs = pd.concat([runs, pd.DataFrame(extra)], ignore_index=True)
    return runs, _epoch_rows(runs, {m: t for (_, m), (_, _, t) in CONDITIONS.items()})


def _icp_adam_costs(n_epochs):
    """Each epoch's step cost of an icp-adam run of ``n_epochs`` (defaults), in ce steps."""
    from icp.methods.options import epoch_costs

    return epoch_costs("icp-adam", {}, n_epochs)


def _lines_by_label(ax):
    """legend name (without its n) -> the Line2D drawn for it."""
    handles = {t.get_text().rsplit(" (n=", 1)[0]: h for t, h in zip(ax.get_legend().texts,
                                                                     ax.get_legend().legend_handles)}
    drawn = {}
    for name, handle in handles.items():
        for line in ax.lines:
            if len(line.get_xdata()) > 1 and line.get_color() == handle.get_color():
                drawn[name] = line
    return drawn


@pytest.mark.parametrize("name", ["learning_curves", "compute"])
def test_controls_share_the_panel_of_the_icp_run_they_judge(name):
    runs, epochs = _with_controls()
    fig = figures.FIGURES[name][1](runs, epochs, None)
    axes = _data_axes(fig)
    assert len(axes) == len(CONDITIONS)  # one panel per dataset, model and scenario: none for a training length
    for ax in axes:
        (dataset,) = _which(ax)
        n_epochs = _n_epochs(dataset)
        matched = round(sum(_icp_adam_costs(n_epochs)))
        names = [t.rsplit(" (n=", 1)[0] for t in _legend(ax) if "(n=" in t]
        assert f"icp-adam, {n_epochs} epochs" in names
        assert f"ce+budget=icp-adam (ce, FLOP-matched to icp-adam), {matched} epochs" in names
        assert any(t.startswith("icp+steps=0 (α-only control") for t in names)
        assert len(_lines_by_label(ax)) == len(names) == 4  # ce, icp-adam and both controls, each drawn
    _close(fig)


def test_compute_puts_each_epoch_at_the_runs_training_compute_so_far():
    """Epochs are 1-based: epoch e of a run sits at the sum of its first e epoch costs; the compute-matched ce
    ends where the icp-adam run it matches ends, the α-only control where plain ce of its length does."""
    runs, epochs = _with_controls()
    fig = _draw("compute", runs, epochs, None)
    for ax in _data_axes(fig):
        (dataset,) = _which(ax)
        n_epochs = _n_epochs(dataset)
        lines = {k.split(",")[0].split(" ")[0]: v for k, v in _lines_by_label(ax).items()}
        assert list(lines["icp-adam"].get_xdata()) == pytest.approx(list(pd.Series(_icp_adam_costs(n_epochs)).cumsum()))
        assert list(lines["ce"].get_xdata()) == list(range(1, n_epochs + 1))
        assert list(lines["icp+steps=0"].get_xdata()) == list(range(1, n_epochs + 1))  # K = 0 costs ce's
        control = lines["ce+budget=icp-adam"].get_xdata()
        assert max(control) == pytest.approx(max(lines["icp-adam"].get_xdata()), abs=0.5)
        assert ax.get_xlabel() == "training compute (ce epochs)"
    _close(fig)


def test_noise_draws_a_control_in_the_panel_of_what_it_controls():
    runs, _ = _with_controls()
    noisy, _ = _with_controls("noisy", "sym0.4")
    extra = noisy[noisy.variant.isin(["ce+budget=icp-adam", "icp+steps=0"])]
    runs = pd.concat([runs, extra], ignore_index=True)
    epochs = _epoch_rows(runs, {})
    fig = _draw("noise", runs, epochs, None)
    axes = _data_axes(fig)
    assert sorted(ax.get_title() for ax in axes) == ["cifar100 / preact_resnet18", "fashion-mnist / resnet20"]
    for ax in axes:
        (dataset,) = _which(ax)
        matched = round(sum(_icp_adam_costs(_n_epochs(dataset))))
        assert any(t.startswith(f"ce+budget=icp-adam (ce, FLOP-matched to icp-adam), {matched} epochs (n=")
                   for t in _legend(ax)), _legend(ax)
        assert any(t.startswith(f"icp-adam, {_n_epochs(dataset)} epochs (n=") for t in _legend(ax))
    _close(fig)


def test_a_variant_trained_for_two_lengths_draws_two_lines_never_their_mean():
    runs, epochs = frames({("fashion-mnist", "resnet20"): (2, 4, 3)})
    longer, longer_epochs = frames({("fashion-mnist", "resnet20"): (2, 8, 3)})
    longer = longer.assign(run_id=longer.run_id + "-long")
    longer_epochs = longer_epochs.assign(run_id=longer_epochs.run_id + "-long")
    runs, epochs = pd.concat([runs, longer]), pd.concat([epochs, longer_epochs])
    for name in ("learning_curves", "compute", "noise"):
        fig = figures.FIGURES[name][1](runs, epochs, None)
        (ax,) = _data_axes(fig)
        names = {t.rsplit(" (n=", 1)[0] for t in _legend(ax) if "(n=" in t}
        assert {"ce, 4 epochs", "ce, 8 epochs", "icp-adam, 4 epochs", "icp-adam, 8 epochs"} == names, name
        _close(fig)


@pytest.mark.parametrize("name", CURVES)
def test_legends_cover_neither_data_nor_the_y_label(drawn, name):
    fig = drawn[name]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    checked = 0
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent(renderer)
        assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()  # below the Axes: off the data
        assert not box.overlaps(ax.yaxis.label.get_window_extent(renderer)), ax.get_title()
        assert not box.overlaps(ax.xaxis.label.get_window_extent(renderer)), ax.get_title()
        for other in fig.axes:  # nor another panel
            if other is not ax:
                assert not box.overlaps(other.get_window_extent(renderer)), (ax.get_title(), other.get_title())
        checked += 1
    assert checked >= 2


def test_every_figure_function_says_what_it_draws():
    for name, (_, fn) in figures.FIGURES.items():
        assert fn.__doc__ and len(fn.__doc__.strip()) > 40, name  # its caption, where it has no docstring
    doc = figures.FIGURES["compute"][1].__doc__
    assert "training compute" in doc and "FLOP-matched" in doc


def test_fewshot_ticks_give_the_range_of_epochs_where_a_control_trains_longer():
    runs, _ = _fewshot_frames()
    control = [_row("fewshot", "fashion-mnist", "resnet20", f"{shots}shot", "ce", seed, 4 * n_epochs,
                    factors="+budget=icp-adam") for seed in range(3) for shots, n_epochs in SHOT_EPOCHS.items()]
    runs = pd.concat([runs, pd.DataFrame(control)], ignore_index=True)
    fig = _draw("fewshot", runs, _epoch_rows(runs, {}), None)
    (ax,) = [ax for ax in _data_axes(fig) if _which(ax) == {"fashion-mnist"}]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{s}\n{e}–{4 * e} ep" for s, e in SHOT_EPOCHS.items()]
    assert len([line for line in ax.lines if len(line.get_xdata()) == len(SHOT_EPOCHS)]) == 3  # with the control's
    assert any(t.startswith("ce+budget=icp-adam (ce, FLOP-matched") for t in _legend(ax))
    _close(fig)


def test_a_run_writes_its_figures_arrays_so_the_login_side_draws_them_without_torch(tiny_cfg, tmp_path):
    """A complete ICP run leaves figure_data.npz, written from its final last.pt in its own job; the perturbation
    figure drawn from it in a fresh process imports no torch, and its arrays are those the figure would compute from
    last.pt itself (a run trained before the file existed). A ce run, which no such figure draws, writes none."""
    import subprocess
    import sys

    import numpy as np

    from icp import engine

    cfg = tiny_cfg("train.epochs=1", "method.name=icp-adam", "method.options.steps=2", "model.name=resnet20")
    run_dir = tmp_path / "runs" / "icp"
    assert engine.Trainer(cfg, run_dir).run()["status"] == "complete"
    written = figure_data.load(run_dir, "perturbation")
    computed = figure_data.arrays(run_dir, "perturbation")
    assert written is not None and set(written) == set(computed)
    for key, value in computed.items():
        if np.ndim(value):
            np.testing.assert_allclose(written[key], value, atol=1e-6)
        else:  # the refinement's settings
            assert written[key] == value.item(), key
    assert np.abs(written["ICP"] - written["original"]).max() > 0  # it refined
    ce = tmp_path / "runs" / "ce"
    engine.Trainer(tiny_cfg("train.epochs=1"), ce).run()
    assert not (ce / figure_data.NAME).exists()
    script = (f"import sys, pandas as pd\nfrom icp import figures\n"
              f"runs = pd.DataFrame([dict(run_id='fashion-mnist/resnet20/clean/icp-adam/s0', studies='main', "
              f"dataset='fashion-mnist', model='resnet20', scenario='clean', method='icp-adam', variant='icp-adam', "
              f"seed=0, status='complete', epochs=1, method_options='{{\"steps\": 2}}', path={str(run_dir)!r})])\n"
              f"fig = figures.FIGURES['perturbation'][1](runs, pd.DataFrame(), None)\n"
              f"assert 'torch' not in sys.modules, 'torch imported'\nprint(len(fig.axes))")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) >= 30  # 5 rows x 6 images, and the colour bar


def test_schedule_draws_alpha_curves_that_coincide_as_one_line_named_for_each_variant():
    """The α-only control records the same α_e as the ICP run it controls: `schedule` draws them as one line whose
    legend names both (two lines on each other read as one anyway); a control whose α_e differs keeps its own."""
    runs, epochs = frames({("fashion-mnist", "resnet20"): (2, 4, 3)})
    control = runs[runs.variant == "icp-adam"].assign(variant="icp+steps=0", method="icp",
                                                      run_id=lambda f: f.run_id + "-a")
    runs = pd.concat([runs, control])
    same = epochs[epochs.variant == "icp-adam"].assign(variant="icp+steps=0", method="icp",
                                                       run_id=lambda f: f.run_id + "-a")
    for shift, n_lines in ((1.0, 1), (0.5, 2)):
        ep = pd.concat([epochs, same.assign(**{"diag.alpha": same["diag.alpha"] * shift})])
        fig = _draw("schedule", runs, ep, None)
        (ax,) = [ax for ax in _data_axes(fig) if "layer weights" not in ax.get_title()]
        lines = [ln for ln in ax.lines if len(ln.get_xdata()) > 1]
        assert len(lines) == n_lines, shift
        named = [t for t in _legend(ax) if " = " in t]
        assert (named == [t for t in _legend(ax) if "α-only" in t and "icp-adam" in t] != []) == (n_lines == 1)
        _close(fig)


def test_input_shift_uses_a_log_axis_only_for_a_wide_range_and_names_only_the_studies_drawn():
    runs, epochs = frames({("fashion-mnist", "resnet20"): (2, 4, 3)})
    main_runs, main_epochs = runs[runs.studies == "main"], epochs[epochs.studies == "main"]
    narrow = _draw("input_shift", main_runs, main_epochs.assign(**{"diag.input_shift": 0.009}), None)
    ax = _data_axes(narrow)[0]
    assert ax.get_yscale() == "linear" and "study main)" in narrow._suptitle.get_text()
    assert "ablations" not in narrow._suptitle.get_text() and "steps" not in narrow._suptitle.get_text()
    wide = _draw("input_shift", runs, epochs, None)  # K = 1 .. 5 over epochs 1 .. 4: 0.01 .. 0.2, a factor 20
    shift = epochs["diag.input_shift"].dropna()
    assert shift[shift > 0].max() / shift[shift > 0].min() > 10
    assert all(ax.get_yscale() == "log" for ax in _data_axes(wide))
    for fig in (narrow, wide):
        _close(fig)


def test_compute_puts_every_other_method_at_its_whole_training_compute_beside_ces_curve():
    """A method that is neither ICP nor ce is one labelled point: its last-epoch top-1 (mean over seeds) at its
    whole training compute, e.g. CS-KD at 4/3 ce epochs per epoch; a method that costs ce's sits at ce's end."""
    from icp.methods.options import training_cost

    runs, _ = frames()
    extra = [_row("main", dataset, model, "clean", method, seed, n_epochs)
             for (dataset, model), (seeds, n_epochs, _) in CONDITIONS.items() for seed in range(seeds)
             for method in ("cskd", "ls")]
    runs = pd.concat([runs, pd.DataFrame(extra)], ignore_index=True)
    epochs = _epoch_rows(runs, {m: t for (_, m), (_, _, t) in CONDITIONS.items()})
    fig = _draw("compute", runs, epochs, None)
    for ax in _data_axes(fig):
        (dataset,) = _which(ax)
        n_epochs = _n_epochs(dataset)
        model = next(m for (d, m) in CONDITIONS if d == dataset)
        labels = {t.get_text(): t.xy for t in ax.texts}
        last = runs[(runs.dataset == dataset) & (runs.method == "cskd")].top1.mean() * 100 * (1 - 0.5 ** n_epochs)
        assert labels["cskd"][0] == pytest.approx(training_cost("cskd", {}, n_epochs, model), rel=1e-6)
        assert labels["cskd"][1] == pytest.approx(last, rel=1e-6)
        assert labels["ls"][0] == pytest.approx(n_epochs)  # ls costs ce's: at the end of ce's curve
    _close(fig)


# ------------------------------------------------------------------------------------------ a figure is a file
# (icp.figures): a module beside the others, or in another installed package under the `icp.figures` entry point
# group, is found, drawn by `icp figures` and by the Snakefile with no other edit; the registry draws its empty
# canvas; a change of its file redraws it alone. The catalogue is read once per process: each case runs in a fresh
# interpreter, the plugin files under tmp_path.
FIGURE = '''
"""A test figure: each variant's last-epoch test top-1, as bars."""
NAME = "{name}"
STUDY = "main"
CAPTION = "Each variant's last-epoch test top-1 (%) as a bar: a figure from outside ``icp/figures/``."
TITLE = "Study main: last-epoch test top-1 per variant"


def draw(runs, epochs, ctx):
    from icp.figures import common, plot

    done = common.complete(runs, STUDY)
    assert len(done), "the registry draws the empty canvas"
    plt, _ = plot.libs()
    fig, ax = plt.subplots(figsize=(4, 3))
    top1 = done.groupby("variant").top1.mean() * 100
    ax.bar(list(top1.index), list(top1.values))
    ax.set(xlabel="variant", ylabel="test top-1 (%)")
    fig.suptitle(TITLE)
    return fig
'''


def test_a_figure_module_beside_the_others_is_found_without_matplotlib_and_drawn(tmp_path):
    """The example of docs/adding-a-figure.md, dropped beside the figures, is in the catalogue (read without
    matplotlib), drawn by `icp figures` from the laptop's records, and gets the registry's empty canvas."""
    import re

    page = (REPO / "docs/adding-a-figure.md").read_text()
    example = re.search(r"## 1\. The file: `icp/figures/<name>\.py`\n\n```python\n(.*?)```", page, re.S)[1]
    folder = tmp_path / "figures"
    folder.mkdir()
    (folder / "bars.py").write_text(example)
    out = tmp_path / "out"
    proc = run_python(f"""
        import sys
        import icp.figures as figures
        figures.__path__.append({str(folder)!r})  # as if the file were in icp/figures/
        assert "bars" in figures.available(["main"]) and "bars" not in figures.available(["noisy"])
        bars = figures.module_of("bars")
        assert figures.CAPTIONS["bars"] == " ".join(bars.CAPTION.split())
        assert figures.checkpoint_runs("bars", None) == []
        assert not {{"matplotlib", "seaborn", "torch"}} & set(sys.modules)  # the catalogue is read cheaply
        from icp.cli import main
        main(["figures", "--grid", "config/laptop.yaml", "--results", "results/laptop", "--only", "bars",
              "--out", {str(out)!r}])
        from tests.test_figures import frames
        runs, epochs = frames()
        fig = figures.FIGURES["bars"][1](runs.assign(status="running"), epochs, None)  # not its draw
        assert [t.get_text() for t in fig.axes[0].texts] == ["no complete run of study main yet"]
        assert fig.axes[0].get_title() == bars.TITLE
    """)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (out / "bars.png").stat().st_size > 5_000 and (out / "bars.pdf").exists()


def test_the_registry_draws_the_empty_canvas_of_a_figure_whose_study_has_no_complete_run(monkeypatch):
    """Where its study has no complete run, a figure's draw is not called: the registry says so, under the figure's
    title; a figure that reads more than its study (EMPTY = None) says itself why it has nothing to draw."""
    runs, epochs = frames()
    runs = runs.assign(status="running")
    for name in figures.FIGURES:
        module = figures.module_of(name)
        if getattr(module, "EMPTY", "") is None:
            continue
        monkeypatch.setattr(module, "draw", lambda *_: pytest.fail(f"{name}: draw called"))
        fig = figures.FIGURES[name][1](runs, epochs, None)
        (ax,) = fig.axes
        assert [t.get_text() for t in ax.texts] == [getattr(module, "EMPTY", f"no complete run of study "
                                                                               f"{module.STUDY} yet")], name
        assert ax.get_title() == module.TITLE, name
        _close(fig)
    assert {n for n in figures.FIGURES if getattr(figures.module_of(n), "EMPTY", "") is None} == {
        "input_shift", "critical_difference", "tuning"}


def test_a_figure_of_another_installed_package_is_drawn_by_icp_and_the_snakefile_and_redrawn_alone(tmp_path):
    """The entry point's figure is in `icp figures` and in `snakemake all` (here two of its figures); a change of the
    plugin's file plans that figure's job alone (its code digest is a parameter of the Snakefile's figure rule)."""
    import re
    import subprocess

    from tests.test_pipeline import SNAKEMAKE, tiny_grid, write_records

    env = installed_plugin(tmp_path / "site", "barsplug", FIGURE.replace("{name}", "barsplug"), "icp.figures")
    path = tiny_grid(tmp_path, tmp_path / "data", ["ce", "ls"])
    from icp import grid

    write_records(grid.load_expand(path), {"ce": 0.61, "ls": 0.64})
    targets = [str(tmp_path / "figures" / f"{name}.png") for name in ("barsplug", "learning_curves")]

    def snakemake(*args):
        return subprocess.run(["timeout", "-s", "KILL", "300", SNAKEMAKE, *args, "--cores", "2", "--config",
                               f"grid={path}"], cwd=REPO, capture_output=True, text=True, env=env)

    first = snakemake(*targets)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert all((tmp_path / "figures" / f"{n}.{e}").exists() for n in ("barsplug", "learning_curves")
               for e in ("png", "pdf"))
    nothing = snakemake("-n", *targets)
    assert "Nothing to be done" in nothing.stdout + nothing.stderr, nothing.stdout[-2000:] + nothing.stderr[-2000:]
    plug = tmp_path / "site" / "barsplug.py"
    plug.write_text(plug.read_text().replace("figsize=(4, 3)", "figsize=(5, 3)"))
    again = snakemake("-n", *targets)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-3000:]
    assert re.findall(r"wildcards: figure=(\w+)", out) == ["barsplug"], out[-3000:]
    assert re.search(r"^figure\s+1$", out, re.M) and not re.search(r"^summary\s", out, re.M), out[-3000:]
    listed = subprocess.run([SNAKEMAKE, "-n", "all", "--config", f"grid={path}"], cwd=REPO, capture_output=True,
                            text=True, env=env, timeout=300)
    assert "figure=barsplug" in listed.stdout + listed.stderr


def test_a_figure_module_the_registry_cannot_use_is_one_line_everywhere(tmp_path):
    import subprocess
    import sys

    from tests.test_pipeline import SNAKEMAKE

    cases = {"nocaption": (FIGURE.replace("{name}", "nocaption").replace("CAPTION =", "NOTE ="),
                           "nocaption.py: not a figure module: CAPTION must be a non-empty string"),
             "misnamed": (FIGURE.replace("{name}", "other"),
                          "misnamed.py: not a figure module: NAME 'other' is not its module's name 'misnamed'"),
             "compute": (FIGURE.replace("{name}", "compute"),
                         "figure 'compute' is declared twice: in icp.figures.compute and in compute"),
             "unread": ("def oops(:\n", "unread.py: the figure cannot be read (SyntaxError")}
    for module, (source, want) in cases.items():
        env = installed_plugin(tmp_path / module, module, source, "icp.figures")
        for cmd in ([sys.executable, "-m", "icp", "figures", "--grid", "config/laptop.yaml", "--out", str(tmp_path)],
                    ["timeout", "-s", "KILL", "300", SNAKEMAKE, "-n", "--config", "grid=config/laptop.yaml"]):
            if module != "nocaption" and cmd[0] != sys.executable:
                continue  # the Snakefile's one line: once
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=320, env=env)
            errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "icp: error:" in ln]
            assert proc.returncode != 0 and len(errors) == 1 and want in errors[0], (cmd, proc.stdout[-1500:],
                                                                                     proc.stderr[-1500:])


def test_a_figures_code_digest_is_its_own_file_the_helpers_and_the_registry():
    import hashlib

    here = REPO / "icp" / "figures"
    for name in figures.FIGURES:
        files = [Path(figures.module_of(name).__file__), here / "common.py", here / "plot.py", here / "__init__.py"]
        assert figures.source_digest(name) == hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    assert len({figures.source_digest(name) for name in figures.FIGURES}) == len(figures.FIGURES)
