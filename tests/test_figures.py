"""The figures (icp.figures) never average across conditions: each condition has its own panel, whose legend gives
that panel's own n; the ICP schedule is drawn per condition and model; the perturbation figure refines the
training batch size. Synthetic frames: the shapes of the figures, not their numbers."""
import json
import math

import pandas as pd
import pytest

from icp import figures

# two conditions that differ in every factor: 3 seeds of a 3-tap ResNet-20 trained 4 epochs, 2 seeds of a 4-tap
# PreAct ResNet-18 trained 6 epochs
CONDITIONS = {("fashion-mnist", "resnet20"): (3, 4, 3), ("cifar100", "preact_resnet18"): (2, 6, 4)}


def _row(study, dataset, model, scenario, method, seed, epochs, options=None, **extra):
    options = options or {}
    variant = method + "".join(f"+{k}={v}" for k, v in sorted(options.items()))
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
    return runs, pd.DataFrame(rows)


@pytest.fixture(scope="module")
def drawn():
    """name -> the figure drawn from frames() (the checkpoint figures are left out)."""
    runs, epochs = frames()
    out = {}
    for name, (_, fn) in figures.FIGURES.items():
        if name not in ("perturbation", "reconstructions", "samples"):
            out[name] = fn(runs, epochs, None)
    yield out
    plt, _ = figures._libs()
    for fig in out.values():
        plt.close(fig)


def _data_axes(fig):
    return [ax for ax in fig.axes if ax.lines or ax.patches or ax.collections]


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().texts] if ax.get_legend() else []


def _which(ax):
    """The conditions an Axes names in its title: a subset of CONDITIONS' datasets."""
    return {d for d, _ in CONDITIONS if d in ax.get_title()}


@pytest.mark.parametrize("name", ["learning_curves", "noise", "fewshot", "input_shift", "feature_distance",
                                  "generative_curves", "steps", "schedule"])
def test_each_condition_is_drawn_in_its_own_axes(drawn, name):
    fig = drawn[name]
    axes = [ax for ax in _data_axes(fig) if "layer weights" not in ax.get_title()]
    assert axes and all(len(_which(ax)) == 1 for ax in axes), [ax.get_title() for ax in axes]
    assert {d for ax in axes for d in _which(ax)} == {d for d, _ in CONDITIONS}
    for ax in axes:  # the condition's training length is part of the condition
        (dataset,) = _which(ax)
        n_epochs = next(e for (d, _), (_, e, _) in CONDITIONS.items() if d == dataset)
        assert f"{n_epochs} epochs" in ax.get_title()
    if name in ("learning_curves", "input_shift", "feature_distance", "generative_curves"):
        for ax in axes:  # no epoch beyond the panel's own runs'
            (dataset,) = _which(ax)
            n_epochs = next(e for (d, _), (_, e, _) in CONDITIONS.items() if d == dataset)
            assert max(max(line.get_xdata(), default=0) for line in ax.lines) <= n_epochs


@pytest.mark.parametrize("name", ["learning_curves", "noise", "fewshot", "input_shift", "feature_distance",
                                  "generative_curves", "steps", "schedule"])
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
        assert len(ax.patches) == 2 * n  # cosine and uniform, a bar per tap
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
    fig = figures.schedule(runs, epochs, None)
    alpha = [ax for ax in _data_axes(fig) if "layer weights" not in ax.get_title()]
    assert sorted(ax.get_title() for ax in alpha) == ["fashion-mnist / resnet20 / clean, 4 epochs",
                                                      "fashion-mnist / resnet20 / clean, 8 epochs"]
    for ax in alpha:
        (line,) = [ln for ln in ax.lines if len(ln.get_xdata()) > 1]
        assert max(line.get_xdata()) == (4 if "4 epochs" in ax.get_title() else 8)
        assert min(line.get_ydata()) > 0 and line.get_ydata()[0] == 1.0  # α_e of one schedule, no saw-tooth
    figures._libs()[0].close(fig)


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
    fig = figures.learning_curves(runs, epochs, None)
    monkeypatch.setitem(figures.FIGURES, "learning_curves", ("main", lambda *_: fig))
    png, pdf = figures.make("learning_curves", runs, epochs, tmp_path)
    assert png.stat().st_size > 5_000 and pdf.exists()
    for ax in _data_axes(fig):
        assert ax.get_xlabel() == "epoch"
        locator = ax.xaxis.get_major_locator()
        assert isinstance(locator, MaxNLocator) and locator._integer
    empty = figures.learning_curves(runs.assign(status="running"), epochs, None)
    assert "no complete run of study main yet" in [t.get_text() for t in empty.axes[0].texts]
    figures._libs()[0].close(empty)


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
    _, _, icp3, fgsm3 = figures.refine_as_training(model, x, y, opts, batch_size=8, n_images=3)
    x6, y6, icp6, fgsm6 = figures.refine_as_training(model, x, y, opts, batch_size=8, n_images=6)
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
    _, _, shown, _ = figures.refine_as_training(model, x, y, opts, batch_size=8, n_images=3)
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
    figures._libs()[0].close(fig)


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
        assert f"``{name}``" in figures.__doc__ and caption in figures.__doc__
