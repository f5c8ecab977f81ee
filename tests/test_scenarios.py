"""Tests for icp.scenarios (label noise, few-shot, stratified splits, determinism)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from icp import scenarios as sc
from icp.scenarios import (
    ASYMMETRIC_MAPS,
    CIFAR100_FINE_LABELS,
    CIFAR100_SUPERCLASSES,
    apply_scenario,
    corrupt_labels,
    few_shot,
    stratified_holdout,
    stratified_subset,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# Independent reference: the widely used CIFAR-100 fine -> coarse label table.
FINE_TO_COARSE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]


def balanced(num_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    y = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
    return np.random.default_rng(seed).permutation(y)


def unbalanced(num_classes: int = 10) -> np.ndarray:
    counts = [37 + 13 * c for c in range(num_classes)]
    y = np.concatenate([np.full(n, c, dtype=np.int64) for c, n in enumerate(counts)])
    return np.random.default_rng(1).permutation(y)


# --------------------------------------------------------------------------- symmetric
@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_symmetric_exact_count_never_own_class_uniform_targets(rate):
    y = balanced(10, 1000)
    y_before = y.copy()
    noisy = corrupt_labels(y, 10, "symmetric", rate, seed=3)
    np.testing.assert_array_equal(y, y_before)  # input untouched
    assert noisy.dtype == np.int64 and noisy.shape == y.shape and noisy is not y
    flipped = noisy != y
    assert int(flipped.sum()) == round(rate * len(y))
    # Targets of corrupted labels, expressed as offset (1..9) from the original class,
    # must be uniform over the 9 other classes: chi-square with 8 dof, loose bound.
    offsets = (noisy[flipped] - y[flipped]) % 10
    assert offsets.min() >= 1
    obs = np.bincount(offsets, minlength=10)[1:]
    exp = flipped.sum() / 9
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    assert chi2 < 30.0, chi2  # P(chi2_8 > 30) ~ 2e-4
    # each source class is corrupted at ~rate (chosen uniformly over samples)
    per_class = np.array([flipped[y == c].mean() for c in range(10)])
    assert np.all(np.abs(per_class - rate) < 0.07), per_class
    # targets over destination classes also ~uniform
    dest = np.bincount(noisy[flipped], minlength=10)
    assert dest.min() > 0.8 * flipped.sum() / 10


def test_symmetric_zero_rate_and_small_inputs():
    y = balanced(3, 5)
    np.testing.assert_array_equal(corrupt_labels(y, 3, "symmetric", 0.0, 1), y)
    out = corrupt_labels(np.array([0, 1], dtype=np.int32), 2, "symmetric", 0.5, 1)
    assert out.dtype == np.int64 and int((out != np.array([0, 1])).sum()) == 1


def test_corrupt_labels_validation():
    y = balanced(10, 10)
    for bad_rate in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError):
            corrupt_labels(y, 10, "symmetric", bad_rate, 0)
    with pytest.raises(ValueError, match="unknown noise kind"):
        corrupt_labels(y, 10, "pairflip", 0.2, 0)
    with pytest.raises(ValueError, match="no asymmetric noise map"):
        corrupt_labels(y, 10, "asymmetric", 0.2, 0, dataset="svhn")
    with pytest.raises(ValueError):
        corrupt_labels(y, 10, "asymmetric", 0.2, 0, dataset=None)
    with pytest.raises(ValueError):
        corrupt_labels(y, 5, "symmetric", 0.2, 0)  # label out of range
    with pytest.raises(ValueError):
        corrupt_labels(y, 10, "symmetric", 0.2, -1)  # bad seed
    # message is one line
    try:
        corrupt_labels(y, 10, "asymmetric", 0.2, 0, dataset="svhn")
    except ValueError as e:
        assert "\n" not in str(e)


# --------------------------------------------------------------------------- asymmetric
@pytest.mark.parametrize("dataset,num_classes,per_class", [
    ("cifar10", 10, 500), ("fashion-mnist", 10, 500), ("cifar100", 100, 50)])
@pytest.mark.parametrize("rate", [0.1, 0.3, 0.45])
def test_asymmetric_follows_map_and_rate(dataset, num_classes, per_class, rate):
    y = balanced(num_classes, per_class)
    y_before = y.copy()
    noisy = corrupt_labels(y, num_classes, "asymmetric", rate, seed=11, dataset=dataset)
    np.testing.assert_array_equal(y, y_before)
    mapping = ASYMMETRIC_MAPS[dataset]
    flipped = noisy != y
    expected_targets = np.array([mapping[int(c)] for c in y[flipped]])
    np.testing.assert_array_equal(noisy[flipped], expected_targets)
    eligible = np.isin(y, list(mapping))
    assert not flipped[~eligible].any()  # unmapped classes untouched
    n_el = int(eligible.sum())
    measured = flipped[eligible].mean()
    assert abs(measured - rate) <= 1.0 / n_el + 1e-12
    assert int(flipped.sum()) == round(rate * n_el)
    # each mapped class loses ~rate of its samples (largest remainder: within one sample)
    for c in mapping:
        lost = int(flipped[y == c].sum())
        assert abs(lost - rate * per_class) <= 1.0


def test_asymmetric_cifar10_unmapped_classes_untouched_unbalanced():
    y = unbalanced(10)
    noisy = corrupt_labels(y, 10, "asymmetric", 0.4, seed=5, dataset="CIFAR-10")
    for c in (0, 1, 6, 7, 8):  # airplane, automobile, frog, horse, ship
        np.testing.assert_array_equal(noisy[y == c], y[y == c])
    m = ASYMMETRIC_MAPS["cifar10"]
    assert m == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    eligible = np.isin(y, list(m))
    n_el = int(eligible.sum())
    assert abs((noisy != y)[eligible].mean() - 0.4) <= 1.0 / n_el
    for c in m:
        n_c = int((y == c).sum())
        assert abs(int((noisy != y)[y == c].sum()) - 0.4 * n_c) <= 1.0


def test_cifar100_superclasses_official():
    groups = list(CIFAR100_SUPERCLASSES.values())
    assert len(groups) == 20 and all(len(g) == 5 for g in groups)
    assert sorted(i for g in groups for i in g) == list(range(100))
    # coarse label k (official order) == k-th group, checked against an independent table
    for k, g in enumerate(groups):
        assert all(FINE_TO_COARSE[i] == k for i in g), (k, g)
    assert len(CIFAR100_FINE_LABELS) == 100
    names = lambda key: {CIFAR100_FINE_LABELS[i] for i in CIFAR100_SUPERCLASSES[key]}
    assert names("aquatic_mammals") == {"beaver", "dolphin", "otter", "seal", "whale"}
    assert names("fish") == {"aquarium_fish", "flatfish", "ray", "shark", "trout"}
    assert names("people") == {"baby", "boy", "girl", "man", "woman"}
    assert names("vehicles_2") == {"lawn_mower", "rocket", "streetcar", "tank", "tractor"}


def test_cifar100_map_bijection_within_superclass():
    m = ASYMMETRIC_MAPS["cifar100"]
    assert sorted(m) == list(range(100))
    assert sorted(m.values()) == list(range(100))  # permutation
    assert all(m[c] != c for c in m)  # no fixed points
    assert all(FINE_TO_COARSE[m[c]] == FINE_TO_COARSE[c] for c in m)
    # cyclic "next" within each group
    for g in CIFAR100_SUPERCLASSES.values():
        s = sorted(g)
        assert [m[c] for c in s] == s[1:] + s[:1]


def test_fashion_mnist_map_complete_no_fixed_points():
    m = ASYMMETRIC_MAPS["fashion-mnist"]
    assert sorted(m) == list(range(10))
    assert all(m[c] != c and 0 <= m[c] < 10 for c in m)
    assert m[0] == 6 and m[6] == 0 and m[2] == 4 and m[4] == 2  # garment look-alikes


# --------------------------------------------------------------------------- few-shot
def test_few_shot_exact_per_class():
    y = unbalanced(10)
    idx = few_shot(y, 7, seed=2)
    assert idx.dtype == np.int64
    assert np.all(np.diff(idx) > 0)  # sorted, unique
    np.testing.assert_array_equal(np.bincount(y[idx], minlength=10), np.full(10, 7))
    # per-class choice is not just the first k of each class
    assert not np.array_equal(idx, np.sort(np.concatenate([np.flatnonzero(y == c)[:7] for c in range(10)])))


def test_few_shot_short_class_raises():
    y = np.array([0] * 10 + [1] * 3 + [2] * 10)
    with pytest.raises(ValueError, match=r"class 1 has only 3"):
        few_shot(y, 5, seed=0)
    with pytest.raises(ValueError):
        few_shot(y, 0, seed=0)


# --------------------------------------------------------------------------- holdout / subset
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_stratified_holdout(fraction):
    y = unbalanced(10)
    keep, hold = stratified_holdout(y, fraction, seed=4)
    assert keep.dtype == np.int64 and hold.dtype == np.int64
    assert np.all(np.diff(keep) > 0) and np.all(np.diff(hold) > 0)
    assert len(np.intersect1d(keep, hold)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([keep, hold])), np.arange(len(y)))
    for c in range(10):
        n_c = int((y == c).sum())
        assert int((y[hold] == c).sum()) == round(fraction * n_c)
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError):
            stratified_holdout(y, bad, seed=0)


@pytest.mark.parametrize("size", [0, 1, 10, 97, 500])
def test_stratified_subset(size):
    y = unbalanced(10)
    idx = stratified_subset(y, size, seed=8)
    assert idx.dtype == np.int64 and len(idx) == size
    assert np.all(np.diff(idx) > 0)
    counts = np.bincount(y, minlength=10)
    got = np.bincount(y[idx], minlength=10)
    # largest remainder: each class within one of its proportional share
    assert np.all(np.abs(got - size * counts / counts.sum()) < 1.0)
    with pytest.raises(ValueError):
        stratified_subset(y, len(y) + 1, seed=0)


def test_largest_remainder_helper():
    lr = sc._largest_remainder
    np.testing.assert_array_equal(lr(10, np.array([1, 1, 1])), [4, 3, 3])  # tie -> lowest index
    np.testing.assert_array_equal(lr(7, np.array([5, 0, 5])), [4, 0, 3])
    np.testing.assert_array_equal(lr(0, np.array([3, 4])), [0, 0])
    w = np.array([13, 7, 29, 1, 50])
    for total in range(0, 101):
        parts = lr(total, w)
        assert parts.sum() == total and np.all(np.abs(parts - total * w / w.sum()) < 1)


# --------------------------------------------------------------------------- determinism
def test_same_seed_same_result_different_seed_different_result():
    y = balanced(10, 200)
    a = corrupt_labels(y, 10, "symmetric", 0.3, 1)
    np.testing.assert_array_equal(a, corrupt_labels(y, 10, "symmetric", 0.3, 1))
    assert not np.array_equal(a, corrupt_labels(y, 10, "symmetric", 0.3, 2))
    b = corrupt_labels(y, 10, "asymmetric", 0.3, 1, dataset="cifar10")
    np.testing.assert_array_equal(b, corrupt_labels(y, 10, "asymmetric", 0.3, 1, dataset="cifar10"))
    assert not np.array_equal(b, corrupt_labels(y, 10, "asymmetric", 0.3, 2, dataset="cifar10"))
    f = few_shot(y, 5, 1)
    np.testing.assert_array_equal(f, few_shot(y, 5, 1))
    assert not np.array_equal(f, few_shot(y, 5, 2))
    k, h = stratified_holdout(y, 0.2, 1)
    k2, h2 = stratified_holdout(y, 0.2, 1)
    np.testing.assert_array_equal(h, h2)
    assert not np.array_equal(h, stratified_holdout(y, 0.2, 2)[1])
    s = stratified_subset(y, 100, 1)
    np.testing.assert_array_equal(s, stratified_subset(y, 100, 1))
    assert not np.array_equal(s, stratified_subset(y, 100, 2))
    # numpy's global RNG state is irrelevant
    np.random.seed(123)
    np.testing.assert_array_equal(a, corrupt_labels(y, 10, "symmetric", 0.3, 1))


DIGEST_SNIPPET = r"""
import hashlib
import numpy as np
from icp.scenarios import corrupt_labels, few_shot, stratified_holdout, stratified_subset, apply_scenario
y = (np.arange(3000, dtype=np.int64) * 7919 % 10)
parts = [
    corrupt_labels(y, 10, "symmetric", 0.4, 17),
    corrupt_labels(y, 10, "asymmetric", 0.3, 17, dataset="cifar10"),
    corrupt_labels(y, 10, "asymmetric", 0.3, 17, dataset="fashion-mnist"),
    few_shot(y, 13, 17),
    *stratified_holdout(y, 0.1, 17),
    stratified_subset(y, 333, 17),
    apply_scenario(y, 10, "noisy", 17, noise_rate=0.2).labels,
]
h = hashlib.sha256()
for p in parts:
    h.update(np.ascontiguousarray(p, dtype="<i8").tobytes())
print(h.hexdigest())
"""


def test_cross_process_determinism():
    ns: dict = {}
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(DIGEST_SNIPPET, ns)
    in_process = buf.getvalue().strip()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONHASHSEED"] = "random"
    digests = set()
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", DIGEST_SNIPPET], env=env, cwd=str(REPO_ROOT.parent),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip())
    assert digests == {in_process}
    assert len(in_process) == 64


# --------------------------------------------------------------------------- apply_scenario
def test_apply_scenario_clean():
    y = unbalanced(10)
    r = apply_scenario(y, 10, "clean", seed=0)
    np.testing.assert_array_equal(r.indices, np.arange(len(y)))
    np.testing.assert_array_equal(r.labels, y)
    np.testing.assert_array_equal(r.clean_labels, y)
    s = r.summary
    assert s["kind"] == "clean" and s["noise_type"] is None and s["noisy_count"] == 0
    assert s["noise_rate_measured"] == 0.0 and s["train_size"] == len(y) and s["shots"] is None
    assert s["class_counts"] == np.bincount(y, minlength=10).tolist()
    json.dumps(s)


def test_apply_scenario_noisy_symmetric():
    y = balanced(10, 300)
    r = apply_scenario(y, 10, "noisy", seed=9, noise_type="symmetric", noise_rate=0.4)
    s = r.summary
    assert s["noisy_count"] == round(0.4 * len(y)) == int((r.labels != r.clean_labels).sum())
    assert s["noise_rate_measured"] == pytest.approx(0.4, abs=1 / len(y))
    assert s["noise_rate"] == 0.4 and s["noise_type"] == "symmetric"
    assert s["class_counts"] == np.bincount(r.labels, minlength=10).tolist()
    assert sum(s["class_counts"]) == s["train_size"] == len(y)
    np.testing.assert_array_equal(r.clean_labels, y[r.indices])
    np.testing.assert_array_equal(r.labels, corrupt_labels(y, 10, "symmetric", 0.4, 9))
    json.dumps(s)


def test_apply_scenario_noisy_asymmetric():
    y = balanced(10, 300)
    r = apply_scenario(y, 10, "noisy", seed=9, dataset="cifar10", noise_type="asymmetric", noise_rate=0.3)
    s = r.summary
    assert s["noise_rate_measured_eligible"] == pytest.approx(0.3, abs=1 / (5 * 300))
    assert s["noise_rate_measured"] == pytest.approx(0.3 * 5 / 10, abs=1 / len(y))
    json.dumps(s)


def test_apply_scenario_fewshot():
    y = unbalanced(10)
    r = apply_scenario(y, 10, "fewshot", seed=3, shots=5)
    np.testing.assert_array_equal(r.indices, few_shot(y, 5, 3))
    np.testing.assert_array_equal(r.labels, y[r.indices])
    np.testing.assert_array_equal(r.clean_labels, y[r.indices])
    s = r.summary
    assert s["train_size"] == 50 and s["shots"] == 5 and s["class_counts"] == [5] * 10
    assert s["noisy_count"] == 0
    json.dumps(s)


def test_apply_scenario_validation():
    y = balanced(10, 10)
    with pytest.raises(ValueError):
        apply_scenario(y, 10, "mixup", seed=0)
    with pytest.raises(ValueError):
        apply_scenario(y, 10, "fewshot", seed=0)  # shots missing
    with pytest.raises(ValueError):
        apply_scenario(y, 10, "clean", seed=0, noise_rate=0.2)


# --------------------------------------------------------------------------- validation that matches the setting
def test_per_class_holdout_holds_exactly_k_of_every_class_and_keeps_the_rest():
    y = unbalanced(10)
    keep, hold = sc.per_class_holdout(y, 9, seed=3)
    assert hold.dtype == keep.dtype == np.int64 and np.all(np.diff(hold) > 0) and np.all(np.diff(keep) > 0)
    np.testing.assert_array_equal(np.bincount(y[hold], minlength=10), np.full(10, 9))
    assert not np.intersect1d(keep, hold).size and len(keep) + len(hold) == len(y)
    np.testing.assert_array_equal(hold, sc.per_class_holdout(y, 9, seed=3)[1])
    assert not np.array_equal(hold, sc.per_class_holdout(y, 9, seed=4)[1])
    # its own stream: not the draw few_shot makes with the same seed
    assert not np.array_equal(hold, few_shot(y, 9, seed=3))
    # the training shots drawn from what it keeps are disjoint from it, k per class again
    shots = keep[few_shot(y[keep], 9, seed=3)]
    assert not np.intersect1d(shots, hold).size
    np.testing.assert_array_equal(np.bincount(y[shots], minlength=10), np.full(10, 9))


def test_per_class_holdout_needs_a_class_larger_than_k():
    y = np.array([0] * 10 + [1] * 5 + [2] * 10)
    with pytest.raises(ValueError, match=r"class 1 has only 5 samples"):
        sc.per_class_holdout(y, 5, seed=0)
    with pytest.raises(ValueError):
        sc.per_class_holdout(y, 0, seed=0)


@pytest.mark.parametrize("kind,dataset", [("symmetric", None), ("asymmetric", "fashion-mnist")])
def test_a_named_stream_is_the_same_process_in_a_draw_of_its_own(kind, dataset):
    """corrupt_labels(stream="validation"): the same count and transition as the training draw, other samples; the
    unnamed stream is the historical draw (tests/test_data.py pins the training labels to the digests of before)."""
    y = balanced(10, 600)
    train = corrupt_labels(y, 10, kind, 0.4, 5, dataset=dataset)
    val = corrupt_labels(y, 10, kind, 0.4, 5, dataset=dataset, stream="validation")
    np.testing.assert_array_equal(train, corrupt_labels(y, 10, kind, 0.4, 5, dataset=dataset, stream=""))
    np.testing.assert_array_equal(val, corrupt_labels(y, 10, kind, 0.4, 5, dataset=dataset, stream="validation"))
    assert (val != y).sum() == (train != y).sum() == round(0.4 * len(y))
    assert not np.array_equal(np.flatnonzero(val != y), np.flatnonzero(train != y))
    if kind == "asymmetric":
        mapping = ASYMMETRIC_MAPS["fashion-mnist"]
        flipped = np.flatnonzero(val != y)
        assert all(val[i] == mapping[int(y[i])] for i in flipped)
