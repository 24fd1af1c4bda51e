"""Is the gain real? The threshold-free metrics, vanilla's frontier, flips and verdicts, each against a
hand-worked example; and the report's section, long format and terminal column."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from halluc.evaluation.gain import (
    BALANCE_SHIFT,
    Answers,
    auroc,
    auroc_resampled,
    average_precision,
    bootstrap,
    caption_rows,
    compare,
    frontier,
    mcnemar_exact,
    verdict,
    yes_no_rows,
    yes_no_scores,
)

NAN = float("nan")


def answers(answer, truth, margin, decoded=None) -> Answers:
    margin = np.asarray(margin, dtype=float)
    return Answers(np.asarray(answer, dtype=float), np.asarray(truth, dtype=bool), margin,
                   margin if decoded is None else np.asarray(decoded, dtype=float))


def test_auroc_by_hand():
    # positives 0.9 and 0.4, negatives 0.8 and 0.3: of the 4 (positive, negative) pairs, 3 are ordered right
    assert auroc(np.array([0.9, 0.8, 0.4, 0.3]), np.array([True, False, True, False])) == pytest.approx(75.0)
    # a tie counts half: (1 vs 1) 0.5 + (1 vs 0) 1 over 2 pairs
    assert auroc(np.array([1.0, 1.0, 0.0]), np.array([True, False, False])) == pytest.approx(75.0)
    # ±inf (an answer word cut) ranks above / below every finite margin; nan (no evidence) is left out
    assert auroc(np.array([np.inf, 0.0, -np.inf, 1.0, NAN]), np.array([True, False, False, True, False])) == 100.0
    assert auroc(np.array([1.0, 2.0]), np.array([True, True])) is None  # one class: undefined


def test_resampled_auroc_equals_scikit_learn_on_each_resample():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, size=40).astype(float)  # many ties
    truth = rng.random(40) < 0.4
    picks = rng.integers(0, 40, size=(50, 40))
    expected = [auroc(scores[p], truth[p]) for p in picks]
    assert auroc_resampled(scores, truth, picks) == pytest.approx(expected)
    one_class = auroc_resampled(scores, truth, np.full((1, 40), int(np.flatnonzero(truth)[0])))
    assert np.isnan(one_class).all()  # a resample of positives only: undefined


@pytest.mark.parametrize("unranked", [False, True])
def test_bootstrap_equals_comparing_each_resample(unranked):
    """Every resampled statistic is `compare` on that resample (the shared and the per-resample paths)."""
    rng = np.random.default_rng(2)
    truth = rng.random(60) < 0.5
    base = answers(rng.integers(0, 2, 60), truth, rng.integers(-3, 4, 60))
    margin = rng.normal(size=60).round(1)
    if unranked:
        margin[[3, 17]] = NAN  # some answers without evidence: left out of the rankings
    method = answers(np.where(rng.random(60) < 0.1, NAN, rng.integers(0, 2, 60)), truth, margin)
    picks = rng.integers(0, 60, size=(30, 60))
    drawn = bootstrap(base, method, picks)
    for b, index in enumerate(picks):
        want = compare(base.pick(index), method.pick(index))
        for key in ("delta_f1", "delta_accuracy", "frontier_f1", "frontier_accuracy", "net_flips", "delta_auroc"):
            assert drawn[key][b] == pytest.approx(want[key], abs=1e-9), (key, b)


def test_average_precision_by_hand():
    # ranked: yes(0.9) no(0.8) yes(0.4) no(0.3): precision at each positive 1/1 and 2/3 -> mean 5/6
    assert average_precision(np.array([0.9, 0.8, 0.4, 0.3]), np.array([True, False, True, False])) == \
        pytest.approx(100 * 5 / 6)


def test_frontier_by_hand():
    # margins 3, 2, 2, 1, 0 with truths yes, yes, no, no, yes (P = 3): answering yes to the top k gives
    # k=0: F1 0, acc 2/5; k=1: TP 1 -> F1 2/(1+3); k=3 (the tie moves as one): TP 2 -> F1 4/6, acc 3/5;
    # k=4: TP 2 -> F1 4/7, acc 2/5; k=5: TP 3 -> F1 6/8, acc 3/5
    front = frontier(np.array([3.0, 2.0, 2.0, 1.0, 0.0]), np.array([True, True, False, False, True]))
    assert front.yes_ratio.tolist() == [0, 20, 60, 80, 100]
    assert front.f1 == pytest.approx([0, 50, 200 / 3, 400 / 7, 75])
    assert front.accuracy == pytest.approx([40, 60, 60, 40, 60])
    # between two reachable points the curve is linear: yes ratio 40 lies halfway between 20 and 60
    assert front.at(40.0) == pytest.approx(((50 + 200 / 3) / 2, 60.0))


def test_mcnemar_exact_by_hand():
    # 1 right->wrong, 5 wrong->right: two-sided binomial P(X <= 1 | n=6, 1/2) * 2 = 2 * 7/64
    assert mcnemar_exact(1, 5) == pytest.approx(14 / 64)
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(3, 3) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0


def test_scores_and_flips_by_hand():
    # truth yes yes no no; vanilla says yes no yes no; the method yes yes no (unparsed)
    vanilla = answers([1, 0, 1, 0], [1, 1, 0, 0], [2.0, -1.0, 1.0, -2.0])
    method = answers([1, 1, 0, NAN], [1, 1, 0, 0], [2.0, 1.5, -1.0, -3.0])
    assert yes_no_scores(method.answer, method.truth) == pytest.approx(
        {"f1": 100.0, "accuracy": 75.0, "yes_ratio": 50.0})  # the unparsed answer counts wrong, not in F1
    stats = compare(vanilla, method)
    assert (stats["right_to_wrong"], stats["wrong_to_right"], stats["net_flips"]) == (1, 2, 1)
    assert stats["delta_auroc"] == pytest.approx(100.0 - 75.0)


def shifted_world(n: int = 400, delta: float = 1.5, seed: int = 0):
    """Vanilla answers yes when its margin > 0; a 'method' that only adds delta to every margin."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < 0.5
    margin = rng.normal(0, 1, n) + np.where(truth, 1.0, -1.0) - 1.0  # leans to No: shifting up helps F1
    vanilla = answers((margin > 0).astype(float), truth, margin)
    moved = margin + delta
    return vanilla, answers((moved > 0).astype(float), truth, moved)


def test_a_pure_shift_has_delta_auroc_exactly_zero_and_no_gain_over_the_frontier():
    vanilla, shifted = shifted_world()
    rows = {r["method"]: r for r in yes_no_rows("random", {"none": vanilla, "logit-shift": shifted}, n=300)}
    row = rows["logit-shift"]
    assert row["delta_auroc"] == 0.0 and row["intervals"]["delta_auroc"] == [0.0, 0.0]
    assert row["frontier_f1"] == pytest.approx(0.0, abs=1e-9)
    low, high = row["intervals"]["frontier_f1"]
    assert low <= 0 <= high
    assert row["intervals"]["delta_f1"][0] > 0  # the F1 gain is real as F1 goes, and only a balance shift
    assert row["verdict"] == BALANCE_SHIFT and "threshold" in row["reason"]
    assert rows["none"]["frontier"][0][:2] == [0.0, 0.0] and rows["none"]["frontier"][-1][0] == 100.0


def test_a_better_ranking_survives():
    vanilla, _ = shifted_world()
    rng = np.random.default_rng(1)
    sharper = vanilla.margin + np.where(vanilla.truth, 2.0, -2.0) + rng.normal(0, 0.1, len(vanilla.margin))
    method = answers((sharper > 0).astype(float), vanilla.truth, sharper)
    row = next(r for r in yes_no_rows("random", {"none": vanilla, "m": method}, n=300) if r["method"] == "m")
    assert row["verdict"] == "survives" and row["intervals"]["delta_auroc"][0] > 0


def test_verdicts_without_intervals_or_change():
    assert verdict({"delta_f1": 1.0}, {})[0] == ""
    word, reason = verdict({"delta_f1": 0.5, "delta_auroc": 0.1, "frontier_f1": 0.0},
                           {"delta_f1": [-0.5, 1.5], "delta_auroc": [-1, 1], "frontier_f1": [-1, 1]})
    assert word == "" and "includes 0" in reason


def test_caption_flips_by_hand():
    vanilla = [(Counter({"fork": 1, "cup": 1}), Counter({"dog": 1, "cat": 1})), (Counter(), Counter({"car": 1}))]
    method = [(Counter({"cup": 1}), Counter({"dog": 1})), (Counter({"knife": 1}), Counter({"car": 1}))]
    (row,) = caption_rows("val", {"none": vanilla, "m": method}, n=50)
    # caption 1: fork removed, cat lost; caption 2: knife added
    assert (row["removed"], row["added"], row["true_lost"]) == (0.5, 0.5, 0.5)
    assert row["net_hallucinated"] == 0.0 and row["captions_changed"] == 2
    assert set(row["intervals"]) == {"removed", "added", "true_lost", "net_hallucinated"}


# ---------------------------------------------------------------- in the report

def gain_run(seed: int = 0, sampled: bool = False):
    """A made-up POPE run whose 'logit-shift' is a pure shift of vanilla's margins, with its gain rows."""
    from dataclasses import replace

    from tests.benchmarks.fake_runs import fake_run

    run = fake_run(None, "toy", "pope", ("none", "logit-shift"), seed=seed)
    vanilla, shifted = shifted_world(seed=seed)
    gain = [{"model": "toy", "protocol": "llava", "benchmark": "pope", **r}
            for r in yes_no_rows("all", {"none": vanilla, "logit-shift": shifted}, n=200)]
    rows = [{**r, "seed": seed} for r in run.rows]
    config = {**run.config, "seed": seed, "decoding": {"do_sample": sampled}}
    return replace(run, rows=rows, config=config, gain=gain, path=None)


def test_the_report_labels_a_balance_shift_everywhere():
    from halluc.reports.html import render_html
    from halluc.reports.model import build_report
    from halluc.reports.render import render_csv, render_json, render_terminal

    report = build_report([gain_run()], bootstrap=200)
    terminal = render_terminal(report)
    assert "gain real?" in terminal and "balance shift" in terminal
    page = render_html(report)
    assert "Is the gain real?" in page and "Vanilla&#x27;s calibration frontier" in page
    assert "logit-shift*" in page  # the figure's label of the point: * balance shift
    csv = render_csv(report)
    assert "gain:delta_auroc" in csv and "gain:verdict" in csv and "gain:mcnemar_p" in csv
    import json

    data = json.loads(render_json(report))
    shift = next(g for g in data["gain"] if g["method"] == "logit-shift")
    assert shift["verdict"] == BALANCE_SHIFT and shift["delta_auroc"] == 0.0


def test_a_sampled_method_against_greedy_vanilla_is_refused_in_one_line():
    from dataclasses import replace

    from halluc.errors import HallucError
    from halluc.reports.model import build_report

    greedy, sampled = gain_run(), gain_run(sampled=True)
    vanilla_only = replace(greedy, rows=[r for r in greedy.rows if r["method"] == "none"], gain=[])
    method_only = replace(sampled, rows=[r for r in sampled.rows if r["method"] != "none"], gain=[])
    with pytest.raises(HallucError, match="was sampled but its vanilla was greedy") as caught:
        build_report([vanilla_only, method_only])
    assert "\n" not in str(caught.value)


def test_several_seeds_give_mean_and_sd():
    from halluc.reports.model import build_report
    from halluc.reports.render import render_terminal

    runs = [gain_run(seed=s, sampled=True) for s in (0, 1, 2)]
    report = build_report(runs)
    shift = next(r for r in report.rows if r["method"] == "logit-shift" and r["split"] == "mean")
    values = [next(r["f1"] for r in run.rows if r["method"] == "logit-shift" and r["split"] == "mean") for run in runs]
    assert shift["f1"] == pytest.approx(np.mean(values)) and shift["seeds"] == [0, 1, 2]
    assert shift["seed_sd"]["f1"] == pytest.approx(np.std(values, ddof=1))
    low, high = shift["intervals"]["f1"]
    vanilla = next(r["f1"] for r in report.rows if r["method"] == "none" and r["split"] == "mean")
    assert low < shift["f1"] - vanilla < high
    assert f"± {np.std(values, ddof=1):.1f}" in render_terminal(report)
    (gain,) = [g for g in report.gain if g["method"] == "logit-shift"]
    assert gain["seeds"] == [0, 1, 2] and gain["verdict"] in (BALANCE_SHIFT, "survives", "loss", "")


def test_a_gain_with_a_worse_ranking_and_no_frontier_gain_is_a_balance_shift():
    word, reason = verdict({"delta_f1": 2.5, "delta_auroc": -0.6, "frontier_f1": 0.0},
                           {"delta_f1": [0.3, 4.9], "delta_auroc": [-1.3, -0.1], "frontier_f1": [0.0, 0.0]})
    assert word == BALANCE_SHIFT and "ranking got worse" in reason
    word, _ = verdict({"delta_f1": -12.0, "delta_auroc": -7.0, "frontier_f1": -8.0},
                      {"delta_f1": [-15, -8], "delta_auroc": [-9, -5], "frontier_f1": [-11, -4]})
    assert word == "loss"
