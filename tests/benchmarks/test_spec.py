"""Each benchmark declares what it reports on its own task module; the registry is what everything reads."""
import pytest

from halluc.benchmarks.build import build_task
from halluc.benchmarks.spec import benchmark_names, benchmark_spec
from halluc.errors import HallucError


def test_every_benchmark_declares_a_headline_among_its_metrics_first():
    for name in benchmark_names():
        spec = benchmark_spec(name)
        assert spec.metrics[0].key == spec.headline and spec.metric(spec.headline).better in ("higher", "lower")


def test_metric_labels_never_mean_two_things_in_one_table():
    labels = {}
    for name in benchmark_names():
        for metric in benchmark_spec(name).metrics:
            if metric.key != "n":
                assert labels.setdefault(metric.label, (name, metric.key)) == (name, metric.key), metric.label
    assert benchmark_spec("pope").metric("recall").label != benchmark_spec("chair").metric("recall").label


def test_summary_rows_live_on_the_benchmark():
    rows = [{"benchmark": "pope", "method": "none", "split": s, "f1": f, "n": 10} for s, f in
            (("random", 90.0), ("popular", 80.0), ("adversarial", 70.0))]
    (mean,) = benchmark_spec("pope").summary_rows(rows)
    assert mean["split"] == "mean" and mean["f1"] == pytest.approx(80.0) and mean["n"] == 30
    assert benchmark_spec("chair").summary_rows(rows) == []


def test_unknown_benchmark_names_the_choices():
    with pytest.raises(HallucError, match="unknown benchmark 'popee' \\(did you mean 'pope'\\?\\)"):
        build_task("popee")
