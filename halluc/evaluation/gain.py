"""Is the gain real? Threshold-free metrics, vanilla's calibration frontier and flips, per run.

Most POPE gains of contrastive decoding are a one-directional shift of the yes/no balance, or the
adaptive plausibility cutoff turning sampling into near-greedy decoding (Yin, Si & Wang 2025, "The
Mirage of Performance Gains", arXiv 2504.10020). This module tells such a gain from a real one, for
every yes/no split of a run (POPE, RePOPE, MME, AMBER's discriminative part, HallusionBench), from the
answers and the yes/no evidence each sample line records (`halluc.engine.yes_no`):

- AUROC and average precision (scikit-learn) of the pre-cutoff margin log p(yes) − log p(no) against
  the truth ("yes" the positive class). Any monotone shift of the margins (a threshold, a yes-bias)
  leaves them unchanged; the margins after the cutoff are often ±inf (one answer word cut), so the
  cutoff's own effect is reported apart: the share of samples it decided (`cut_share`) and the
  AUROC of the decoded margins (`auroc_decoded`, ties and all).
- Vanilla's calibration frontier: sort vanilla's samples by margin and answer yes to the top k, for every
  k at a change of margin (ties move together; between two reachable points the curve is linear): the F1
  and accuracy that moving one threshold reaches at every yes ratio. A method's gain over the frontier is
  its F1 (accuracy) minus the frontier's at the method's own yes ratio.
- Flips against vanilla on the same samples: right → wrong and wrong → right, and McNemar's exact
  p-value (scipy's binomial test on the discordant pairs). An unparsed answer is wrong.
- Captions (CHAIR, AMBER's generative part): hallucinated objects removed and added per caption, and true
  objects lost, against vanilla's caption of the same image.

Intervals: a paired bootstrap over samples (each resample draws the same samples for vanilla and the
method), percentile 95%. F1 here is POPE's (yes positive, parsed answers; accuracy and yes ratio over all
answers), for every benchmark, so that frontier and method are measured alike. A method whose ΔF1
interval excludes 0 while the ΔAUROC and frontier-gain intervals both include 0 is a **balance shift**.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from halluc.benchmarks.spec import companion_tasks
from halluc.engine.yes_no import margin
from halluc.errors import HallucError
from halluc.evaluation.intervals import task_from_config
from halluc.evaluation.run import read_outputs

BASELINE = "none"
FRONTIER_POINTS = 200  # the frontier curve kept for the report's figure
# the statistics that get a paired-bootstrap interval
YES_NO_STATS = ("delta_f1", "delta_accuracy", "delta_auroc", "frontier_f1", "frontier_accuracy", "net_flips")
CAPTION_STATS = ("removed", "added", "true_lost", "net_hallucinated")
BALANCE_SHIFT = "balance shift"
POOLED = "all"
# statistic -> (label, unit, which way is better) for the report's tables and the long format
GAIN_LABELS = {
    "f1": ("F1 (yes positive)", "%", "higher"), "accuracy": ("accuracy", "%", "higher"),
    "yes_ratio": ("yes ratio", "%", None), "n": ("n", "", None), "auroc": ("AUROC", "%", "higher"),
    "ap": ("average precision", "%", "higher"), "auroc_decoded": ("AUROC after the cutoff", "%", "higher"),
    "cut_share": ("answers decided by the cutoff", "%", None), "delta_f1": ("ΔF1", "points", "higher"),
    "delta_accuracy": ("Δ accuracy", "points", "higher"), "delta_auroc": ("ΔAUROC", "points", "higher"),
    "delta_ap": ("Δ average precision", "points", "higher"),
    "frontier_f1": ("F1 gain over vanilla's frontier", "points", "higher"),
    "frontier_accuracy": ("accuracy gain over vanilla's frontier", "points", "higher"),
    "right_to_wrong": ("flips right → wrong", "", "lower"), "wrong_to_right": ("flips wrong → right", "", "higher"),
    "net_flips": ("net flips (wrong → right minus right → wrong)", "", "higher"),
    "mcnemar_p": ("McNemar exact p", "", None),
    "removed": ("hallucinated objects removed per caption", "", "higher"),
    "added": ("hallucinated objects added per caption", "", "lower"),
    "true_lost": ("true objects lost per caption", "", "lower"),
    "net_hallucinated": ("net hallucinated objects per caption (added − removed)", "", "lower"),
    "captions_changed": ("captions whose hallucinations changed", "", None),
}  # the split name of the statistics over every yes/no split's samples together


@dataclass(frozen=True)
class Answers:
    """One method's yes/no answers on one split, aligned with vanilla's samples."""

    answer: np.ndarray   # (n,) 1.0 yes, 0.0 no, nan unanswered / unparsed
    truth: np.ndarray    # (n,) bool: the right answer is yes
    margin: np.ndarray   # (n,) pre-cutoff yes − no margin, nan without evidence
    decoded: np.ndarray  # (n,) margin of the decoded distribution (±inf where the cutoff removed a word)

    def pick(self, index: np.ndarray) -> Answers:
        return Answers(self.answer[index], self.truth[index], self.margin[index], self.decoded[index])

    @property
    def right(self) -> np.ndarray:
        return self.answer == self.truth.astype(float)  # nan (unparsed) is never right


# ---------------------------------------------------------------- the metrics

def yes_no_scores(answer: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """POPE's F1 (yes positive, over parsed answers), accuracy and yes ratio (over all answers), in %."""
    if not len(answer):
        return {"f1": 0.0, "accuracy": 0.0, "yes_ratio": 0.0}
    return {k: float(v[0]) for k, v in yes_no_many(answer[None], truth[None]).items()}


def auroc(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """Area under the ROC curve (%) of `scores` against `truth` (scikit-learn); samples without a score are
    left out, ±inf ranks above / below every finite score; None with a single class."""
    from sklearn.metrics import roc_auc_score

    kept = _rankable(scores, truth)
    return None if kept is None else 100.0 * float(roc_auc_score(kept[1], kept[0]))


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """Average precision (%) of `scores` for the yes class (scikit-learn); None with a single class."""
    from sklearn.metrics import average_precision_score

    kept = _rankable(scores, truth)
    return None if kept is None else 100.0 * float(average_precision_score(kept[1], kept[0]))


def auroc_resampled(scores: np.ndarray, truth: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """AUROC (%) of each resample `scores[picks]` against `truth[picks]`: (n,) finite scores, (n,) truth, (B, n)
    sample indices -> (B,); nan with one class. By the rank-sum identity AUC = (Σ ranks of positives −
    P(P+1)/2) / (P·N) with tied ranks averaged; a resample's average rank of a tie group is the count of
    picked samples below it + (its own count + 1)/2, so no resample is sorted (half-integers: exact sums)."""
    _, group = np.unique(scores, return_inverse=True)  # (n,) tie group, in ascending score order
    groups, (draws, n) = int(group.max()) + 1, picks.shape
    flat = (group[picks] + groups * np.arange(draws)[:, None]).ravel()  # (B·n,) a group per resample
    counts = np.bincount(flat, minlength=draws * groups).reshape(draws, groups)  # (B, G)
    positives = np.bincount(flat, weights=truth[picks].ravel(), minlength=draws * groups).reshape(draws, groups)
    ranks = np.cumsum(counts, 1) - counts + (counts + 1) / 2  # (B, G) each group's average rank
    count = truth[picks].sum(1)  # (B,) positives
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * (((ranks * positives).sum(1) - count * (count + 1) / 2) / (count * (n - count)))


def _rankable(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    keep = ~np.isnan(scores)
    scores, truth = finite_ranks(scores[keep]), truth[keep]
    if truth.all() or not truth.any():
        return None
    return scores, truth


def finite_ranks(scores: np.ndarray) -> np.ndarray:
    """The same order with +inf one above the largest finite score and −inf one below the smallest."""
    finite = scores[np.isfinite(scores)]
    top, bottom = (finite.max() + 1, finite.min() - 1) if finite.size else (1.0, -1.0)
    return np.where(scores == np.inf, top, np.where(scores == -np.inf, bottom, scores))


@dataclass(frozen=True)
class Frontier:
    """Vanilla's threshold curve: at yes ratio `yes_ratio[i]` (%), F1 `f1[i]` and accuracy `accuracy[i]` (%)."""

    yes_ratio: np.ndarray
    f1: np.ndarray
    accuracy: np.ndarray

    def at(self, yes_ratio: float) -> tuple[float, float]:
        """(F1, accuracy) of the frontier at a yes ratio (%), linear between reachable points."""
        return (float(np.interp(yes_ratio, self.yes_ratio, self.f1)),
                float(np.interp(yes_ratio, self.yes_ratio, self.accuracy)))

    def points(self, most: int = FRONTIER_POINTS) -> list[list[float]]:
        step = max(1, math.ceil(len(self.yes_ratio) / most))
        keep = sorted(set(range(0, len(self.yes_ratio), step)) | {len(self.yes_ratio) - 1})
        return [[round(float(self.yes_ratio[i]), 4), round(float(self.f1[i]), 4), round(float(self.accuracy[i]), 4)]
                for i in keep]


def frontier(scores: np.ndarray, truth: np.ndarray) -> Frontier:
    """The F1 and accuracy of "yes when the score is above t", for every threshold t, by yes ratio."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], truth[order].astype(float)
    n, positives = len(scores), float(truth.sum())
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True)) + 1  # a tie group moves as one
    k = np.concatenate([[0], ends]).astype(float)
    tp = np.concatenate([[0.0], np.cumsum(hits)[ends - 1]])
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(k + positives > 0, 200.0 * tp / (k + positives), 0.0)
    accuracy = 100.0 * (tp + (n - positives) - (k - tp)) / n
    return Frontier(100.0 * k / n, f1, accuracy)


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of the discordant pairs against p = 1/2 (scipy)."""
    from scipy.stats import binomtest

    discordant = right_to_wrong + wrong_to_right
    return 1.0 if discordant == 0 else float(binomtest(right_to_wrong, discordant, 0.5).pvalue)


# ---------------------------------------------------------------- one split: vanilla against a method

def compare(vanilla: Answers, method: Answers) -> dict[str, float | None]:
    """Every statistic of `method` against `vanilla` on the same samples (no intervals)."""
    mine, theirs = yes_no_scores(method.answer, method.truth), yes_no_scores(vanilla.answer, vanilla.truth)
    both = ~np.isnan(method.margin) & ~np.isnan(vanilla.margin)
    own_auroc, base_auroc = auroc(method.margin[both], method.truth[both]), auroc(vanilla.margin[both],
                                                                                  vanilla.truth[both])
    own_ap, base_ap = (average_precision(method.margin[both], method.truth[both]),
                       average_precision(vanilla.margin[both], vanilla.truth[both]))
    front = frontier(vanilla.margin[both], vanilla.truth[both]) if both.any() else None
    reach = front.at(mine["yes_ratio"]) if front is not None else (None, None)
    to_wrong = int(np.sum(vanilla.right & ~method.right))
    to_right = int(np.sum(~vanilla.right & method.right))
    return {**mine, "n": len(method.answer), "auroc": auroc(method.margin, method.truth),
            "ap": average_precision(method.margin, method.truth),
            "auroc_decoded": auroc(method.decoded, method.truth), "cut_share": _cut_share(method.decoded),
            "delta_f1": mine["f1"] - theirs["f1"], "delta_accuracy": mine["accuracy"] - theirs["accuracy"],
            "delta_auroc": _minus(own_auroc, base_auroc), "delta_ap": _minus(own_ap, base_ap),
            "frontier_f1": _minus(mine["f1"], reach[0]), "frontier_accuracy": _minus(mine["accuracy"], reach[1]),
            "right_to_wrong": to_wrong, "wrong_to_right": to_right, "net_flips": to_right - to_wrong,
            "mcnemar_p": mcnemar_exact(to_wrong, to_right)}


def _cut_share(decoded: np.ndarray) -> float | None:
    known = decoded[~np.isnan(decoded)]
    return 100.0 * float(np.mean(np.isinf(known))) if known.size else None


def _minus(a, b):
    return None if a is None or b is None else a - b


@dataclass(frozen=True)
class VanillaDraws:
    """Vanilla's side of every resample: computed once per split, shared by each method compared with it."""

    scores: dict[str, np.ndarray]  # `yes_no_many` of vanilla's answers, (B,) each
    right: np.ndarray  # (B, n) vanilla's answer right
    auroc: np.ndarray | None  # (B,) vanilla's AUROC, when every margin is known (else None)
    fronts: list[Frontier] | None  # vanilla's frontier on each resample, when every margin is known


def vanilla_draws(vanilla: Answers, picks: np.ndarray) -> VanillaDraws:
    known = not np.isnan(vanilla.margin).any()
    return VanillaDraws(yes_no_many(vanilla.answer[picks], vanilla.truth[picks]), vanilla.right[picks],
                        auroc_resampled(finite_ranks(vanilla.margin), vanilla.truth, picks) if known else None,
                        [frontier(vanilla.margin[i], vanilla.truth[i]) for i in picks] if known else None)


def yes_no_many(answer: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """`yes_no_scores` of each row of (B, n) answers against (B, n) truth: (B,) each, the same arithmetic."""
    yes, no = answer == 1, answer == 0
    tp, fp, fn = (yes & truth).sum(1), (yes & ~truth).sum(1), (no & truth).sum(1)
    n, parsed = answer.shape[1], 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(parsed > 0, 100.0 * 2 * tp / parsed, 0.0)
    return {"f1": f1, "accuracy": 100.0 * (tp + (no & ~truth).sum(1)) / n, "yes_ratio": 100.0 * yes.sum(1) / n}


def bootstrap(vanilla: Answers, method: Answers, picks: np.ndarray,
              shared: VanillaDraws | None = None) -> dict[str, np.ndarray]:
    """Each statistic of `compare` on every resample: picks (B, n) sample indices (`shared`: vanilla's side)."""
    shared = shared if shared is not None else vanilla_draws(vanilla, picks)
    mine, theirs = yes_no_many(method.answer[picks], method.truth[picks]), shared.scores
    if shared.fronts is not None and not np.isnan(method.margin).any():  # every sample ranked: the shared path
        d_auroc = auroc_resampled(finite_ranks(method.margin), vanilla.truth, picks) - shared.auroc
        reach = np.array([front.at(y) for front, y in zip(shared.fronts, mine["yes_ratio"])]).reshape(-1, 2)
    else:
        d_auroc = _slow_delta_auroc(vanilla, method, picks)
        reach = np.array([_reach(vanilla.pick(i), method.pick(i), y) for i, y in zip(picks, mine["yes_ratio"])])
    right = method.right[picks]
    flips = (~shared.right & right).sum(1) - (shared.right & ~right).sum(1)
    return {"delta_auroc": np.asarray(d_auroc, dtype=float), "delta_f1": mine["f1"] - theirs["f1"],
            "delta_accuracy": mine["accuracy"] - theirs["accuracy"], "frontier_f1": mine["f1"] - reach[:, 0],
            "frontier_accuracy": mine["accuracy"] - reach[:, 1], "net_flips": flips.astype(float)}


def _reach(vanilla: Answers, method: Answers, yes_ratio: float) -> tuple[float, float]:
    """Vanilla's frontier (F1, accuracy) at `yes_ratio` on the samples both rank; nan when there are none."""
    keep = ~np.isnan(vanilla.margin) & ~np.isnan(method.margin)
    return frontier(vanilla.margin[keep], vanilla.truth[keep]).at(yes_ratio) if keep.any() else (np.nan, np.nan)


def _slow_delta_auroc(vanilla: Answers, method: Answers, picks: np.ndarray) -> np.ndarray:
    values = []
    for index in picks:
        v, m = vanilla.pick(index), method.pick(index)
        keep = ~np.isnan(v.margin) & ~np.isnan(m.margin)
        values.append(_minus(auroc(m.margin[keep], m.truth[keep]), auroc(v.margin[keep], v.truth[keep])))
    return np.asarray([np.nan if x is None else x for x in values], dtype=float)


def percentile_interval(values: np.ndarray) -> list[float] | None:
    """The 95% percentile interval (the same order statistics as the report's other intervals)."""
    kept = np.sort(values[~np.isnan(values)])
    if not kept.size:
        return None
    last = len(kept) - 1
    return [float(kept[int(0.025 * last)]), float(kept[int(0.975 * last)])]


def verdict(stats: Mapping, intervals: Mapping) -> tuple[str, str]:
    """("balance shift" / "survives" / "loss" / "", one-line reason) from the ΔF1, ΔAUROC and frontier intervals.

    balance shift: ΔF1's interval excludes 0, and neither ΔAUROC's nor the frontier gain's shows a gain (both
    include 0, or the ranking got worse): vanilla gets the same F1 by moving its yes/no threshold.
    survives: ΔF1 > 0 and ΔAUROC's or the frontier gain's interval lies above 0. loss: ΔF1 < 0 otherwise."""
    f1, auc, front = (intervals.get(k) for k in ("delta_f1", "delta_auroc", "frontier_f1"))
    if f1 is None:
        return "", "no intervals (bootstrap 0)"
    if not _excludes_zero(f1):
        return "", f"ΔF1 {_show(stats['delta_f1'], f1)} includes 0: no F1 change to explain"
    auc_text, front_text = _show(stats.get("delta_auroc"), auc), _show(stats.get("frontier_f1"), front)
    better = [i for i in (auc, front) if i is not None and i[0] > 0]
    if auc is None or front is None:
        return ("survives" if stats["delta_f1"] > 0 else "loss"), f"ΔF1 {_show(stats['delta_f1'], f1)}; no evidence"
    if stats["delta_f1"] > 0 and better:
        return "survives", f"ΔF1 {_show(stats['delta_f1'], f1)}; ΔAUROC {auc_text}; gain over the frontier {front_text}"
    if not _excludes_zero(auc) and not _excludes_zero(front) or stats["delta_f1"] > 0:
        ranking = "include 0" if not _excludes_zero(auc) else "show no gain (the ranking got worse)"
        return BALANCE_SHIFT, (f"ΔF1 {_show(stats['delta_f1'], f1)} excludes 0, but ΔAUROC {auc_text} and the gain "
                               f"over vanilla's frontier {front_text} {ranking}: vanilla gets there by moving its "
                               "yes/no threshold")
    return "loss", f"ΔF1 {_show(stats['delta_f1'], f1)}; ΔAUROC {auc_text}; gain over the frontier {front_text}"


def _excludes_zero(interval) -> bool:
    return interval is not None and (interval[0] > 0 or interval[1] < 0)


def _show(value, interval) -> str:
    if value is None:
        return "n/a"
    return _signed(value) + (f" [{_signed(interval[0])}, {_signed(interval[1])}]" if interval else "")


def _signed(value: float) -> str:
    return f"{round(value, 1) + 0.0:+.1f}"  # a rounded zero without its sign


def yes_no_rows(split: str, answers: Mapping[str, Answers], n: int = 1000, seed: int = 0) -> list[dict]:
    """One row per method of the split (vanilla's carries the frontier curve), with intervals and verdicts."""
    vanilla = answers[BASELINE]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(vanilla.answer), size=(n, len(vanilla.answer))) if n else None
    known = ~np.isnan(vanilla.margin)
    curve = frontier(vanilla.margin[known], vanilla.truth[known]).points() if known.any() else []
    shared = vanilla_draws(vanilla, picks) if picks is not None else None
    rows = []
    for label, method in answers.items():
        stats = compare(vanilla, method)
        if label == BASELINE:
            rows.append({"split": split, "method": label, **_only(stats, ("f1", "accuracy", "yes_ratio", "n", "auroc",
                                                                           "ap", "auroc_decoded", "cut_share")),
                         "frontier": curve, "intervals": {}, "verdict": "", "reason": ""})
            continue
        drawn = bootstrap(vanilla, method, picks, shared) if picks is not None else {}
        intervals = {k: percentile_interval(v) for k, v in drawn.items()}
        word, reason = verdict(stats, intervals)
        rows.append({"split": split, "method": label, **stats, "intervals": intervals, "verdict": word,
                     "reason": reason})
    return rows


def _only(stats: Mapping, keys: Sequence[str]) -> dict:
    return {k: stats[k] for k in keys}


# ---------------------------------------------------------------- captions

def caption_rows(split: str, objects: Mapping[str, list[tuple[Counter, Counter]]], n: int = 1000,
                 seed: int = 0) -> list[dict]:
    """Per method against vanilla's caption of the same image: hallucinated objects removed and added and true
    objects lost, per caption (means), with paired-bootstrap intervals."""
    vanilla = objects[BASELINE]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(vanilla), size=(n, len(vanilla))) if n else None
    rows = []
    for label, mine in objects.items():
        if label == BASELINE:
            continue
        per = np.array([[sum((h_v - h_m).values()), sum((h_m - h_v).values()), sum((t_v - t_m).values())]
                        for (h_v, t_v), (h_m, t_m) in zip(vanilla, mine)], dtype=float).reshape(-1, 3)  # (n, 3)
        stats = {"removed": per[:, 0].mean(), "added": per[:, 1].mean(), "true_lost": per[:, 2].mean()}
        stats["net_hallucinated"] = stats["added"] - stats["removed"]
        intervals = {}
        if picks is not None:
            drawn = per[picks].mean(1)  # (B, 3)
            columns = {"removed": drawn[:, 0], "added": drawn[:, 1], "true_lost": drawn[:, 2],
                       "net_hallucinated": drawn[:, 1] - drawn[:, 0]}
            intervals = {k: percentile_interval(v) for k, v in columns.items()}
        changed = int(np.sum(per[:, :2].sum(1) > 0))
        rows.append({"split": split, "method": label, "kind": "captions", "n": len(mine), **stats,
                     "captions_changed": changed, "intervals": intervals})
    return rows


# ---------------------------------------------------------------- a run directory

def run_gain(run_dir: Path, config: Mapping, n: int = 1000, seed: int = 0) -> list[dict]:
    """Every yes/no and caption split of the run in `run_dir`: rows of `yes_no_rows` and `caption_rows`,
    each with the run's model, benchmark and protocol. [] without vanilla or when the benchmark files are gone."""
    labels = {m["label"]: m["key"] for m in config.get("methods", [])}
    if BASELINE not in labels or len(labels) < 2:
        return []
    try:
        task = task_from_config(config)
    except HallucError:
        return []
    rows = []
    for each in [task, *companion_tasks(task)]:
        pooled: list[dict[str, Answers]] = []
        for split in each.splits():
            samples = each.samples(split)[: config.get("limit")]
            if not samples:
                continue
            outputs = {label: read_outputs(Path(run_dir), key, split) for label, key in labels.items()}
            if split in each.yes_no_splits():
                answers = {label: _answers(each, split, samples, lines) for label, lines in outputs.items()}
                pooled.append(answers)
                rows += [{"benchmark": each.name, **r} for r in yes_no_rows(split, answers, n, seed)]
            if split in each.caption_splits():
                objects = {label: each.caption_objects(split, samples, _texts(samples, lines))
                           for label, lines in outputs.items()}
                rows += [{"benchmark": each.name, **r} for r in caption_rows(split, objects, n, seed)]
        if len(pooled) > 1:  # every yes/no split's samples together (the terminal's column, the figure)
            together = {label: _concatenate([p[label] for p in pooled]) for label in pooled[0]}
            rows += [{"benchmark": each.name, **r} for r in yes_no_rows(POOLED, together, n, seed)]
    protocol, model = config.get("protocol"), config.get("model")
    return [{"model": model, "protocol": protocol, **r} for r in rows]


def _concatenate(parts: Sequence[Answers]) -> Answers:
    return Answers(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("answer", "truth", "margin", "decoded")))


def pooled_split(rows: Sequence[Mapping], benchmark: str) -> str | None:
    """The split the summary uses: "all" when the benchmark has several yes/no splits, else its only one."""
    splits = list(dict.fromkeys(r["split"] for r in rows if r["benchmark"] == benchmark and "delta_f1" in r
                                or r["benchmark"] == benchmark and r["method"] == BASELINE and "frontier" in r))
    return POOLED if POOLED in splits else (splits[0] if splits else None)


def _number(value) -> float:
    return np.nan if value is None else value


def _texts(samples, lines: Mapping[str, dict]) -> dict:
    return {s.id: lines[s.id]["text"] if s.id in lines else None for s in samples}


def _answers(task, split: str, samples, lines: Mapping[str, dict]) -> Answers:
    pairs = task.yes_no(split, samples, _texts(samples, lines))
    evidence = [lines.get(s.id, {}).get("yes_no") for s in samples]
    return Answers(np.array([np.nan if a is None else float(a) for a, _ in pairs]),
                   np.array([bool(t) for _, t in pairs]),
                   np.array([_number(margin(e, "pre")) for e in evidence], dtype=float),
                   np.array([_number(margin(e, "decoded")) for e in evidence], dtype=float))
