"""``aup plot`` tells the story (issue 25 item 2): the dense model as a point and a line, sizes in kB with
several ticks, a log-searched ``lr`` on a log axis, a legend for every colour, labels that do not overlap."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

pytest.importorskip("matplotlib")

from aup.views import plot  # noqa: E402
from aup.views.records import open_store  # noqa: E402

# (score, model_bytes, lr, constraint): trials 3 and 11 sit almost on top of each other, as in the report
TRIALS = {0: (0.95, 86_700, 0.0086, -0.01), 1: (0.88, 88_000, 0.012, 0.1), 2: (0.89, 120_000, 0.02, 0.1),
          3: (0.884, 42_408, 0.0014, 0.1), 4: (0.926, 110_000, 0.04, 0.05), 5: (0.969, 86_700, 0.012, -0.02),
          6: (0.951, 126_000, 0.0028, -0.01), 7: (0.904, 58_688, 0.011, 0.08), 8: (0.989, 63_192, 0.0041, -0.03),
          9: (0.973, 93_200, 0.0138, -0.02), 10: (0.96, 50_000, 0.003, -0.02), 11: (0.8845, 42_900, 0.0015, 0.1)}
BASELINE = {"baseline_score": 0.9933, "baseline_model_bytes": 162_632}


@pytest.fixture()
def figure_and_data(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    study = optuna.create_study(storage=url, study_name="qs", directions=["maximize", "minimize"])
    study.set_metric_names(["score", "model_bytes"])
    study.set_user_attr("experiment", {"name": "qs", "target": {"score": "max", "model_bytes": "min"},
                                       "parameter_config": [{"name": "lr", "type": "float", "range": [0.001, 0.05],
                                                             "log": True}]})
    for number, (score, size, lr, constraint) in TRIALS.items():
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, values=[score, size], params={"lr": lr},
            distributions={"lr": FloatDistribution(0.001, 0.05, log=True)},
            user_attrs={"score": score, "model_bytes": size, "feasible": constraint <= 0, **BASELINE},
            system_attrs={"constraints:score": constraint}))
    experiment, trials = open_store(url).load("qs")
    data = plot.plot_data(experiment, trials)
    figure = plot.matplotlib_figure(data)
    plot.save_png(figure, tmp_path / "qs.png")
    return figure, data


def test_dense_model_point_and_line(figure_and_data) -> None:
    figure, data = figure_and_data
    assert data.baseline == {"x": 162_632.0, "y": 0.9933}
    trade, history = figure.axes[0], figure.axes[1]
    stars = [c for c in trade.collections if [tuple(o) for o in c.get_offsets()] == [(162_632.0, 0.9933)]]
    assert len(stars) == 1
    for ax in (trade, history, figure.axes[2]):
        assert any(list(line.get_ydata()) == [0.9933, 0.9933] for line in ax.lines)  # the dashed dense line


def test_size_axis_reads_in_kb_with_several_ticks(figure_and_data) -> None:
    figure, _ = figure_and_data
    trade = figure.axes[0]
    low, high = trade.get_xlim()
    ticks = [t.get_text() for t, v in zip(trade.get_xticklabels(), trade.get_xticks()) if low <= v <= high]
    assert trade.get_xscale() == "log" and len(ticks) >= 4 and all(t.endswith(" kB") for t in ticks), ticks


def test_log_searched_lr_on_a_log_axis(figure_and_data) -> None:
    figure, data = figure_and_data
    assert data.log_params == frozenset({"lr"})
    lr_panel = next(ax for ax in figure.axes if ax.get_xlabel().startswith("lr"))
    assert lr_panel.get_xscale() == "log"  # the lr values span 30x: the old rule (100x) drew it linear


def test_every_colour_has_a_legend_entry(figure_and_data) -> None:
    figure, data = figure_and_data
    labels = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    assert "trial" in labels and f"Pareto front ({len(data.front)} trials)" in labels
    assert any(t.startswith("dense model (163 kB") for t in labels) and any("dense model's score" in t for t in labels)
    assert "infeasible trial (constraint violated)" in labels and "best so far" in labels


def test_front_is_the_feasible_front(figure_and_data) -> None:
    _, data = figure_and_data
    assert sorted(p["number"] for p in data.front) == [8, 10]  # 3 and 11 are smaller but infeasible


def test_trial_labels_do_not_overlap(figure_and_data) -> None:
    figure, data = figure_and_data
    trade = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    texts = [t for t in trade.texts if t.get_text().isdigit()]
    assert sorted(int(t.get_text()) for t in texts) == sorted(TRIALS)
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i, first in enumerate(boxes):
        for second in boxes[i + 1:]:
            assert not first.overlaps(second), (texts[i].get_text(), first, second)
