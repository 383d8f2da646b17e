"""aup.views.recommend: the pure choice of the recommended trial."""
from __future__ import annotations

from aup.constraints import parse_constraints
from aup.views.recommend import Recommendation, recommend
from aup.views.rows import TrialRow

OBJECTIVES, DIRECTIONS = ["score", "model_bytes"], ["maximize", "minimize"]


def row(number: int, score: float | None, size: float | None = None, state: str = "COMPLETE", **attrs: float) -> TrialRow:
    values = None if score is None else [score, size]
    return TrialRow(number, state, values, {}, {"baseline_score": 0.99, **attrs}, objective_names=OBJECTIVES)


def test_best_feasible_by_the_ranking_objective_is_on_the_front() -> None:
    trials = [row(0, 0.985, 500), row(1, 0.985, 400), row(2, 0.99, 900), row(3, 0.90, 100)]
    constraints = parse_constraints({"score": ">= baseline_score - 0.01"})
    chosen = recommend(trials, OBJECTIVES, DIRECTIONS, constraints, "model_bytes")
    assert chosen == Recommendation(1, True, chosen.line) and chosen.line.startswith("recommended: trial 1 ")
    tied = recommend(trials, OBJECTIVES, DIRECTIONS, constraints)  # by score: 2; ties would go to model_bytes
    assert tied.trial == 2
    assert recommend(trials[:2], OBJECTIVES, DIRECTIONS, constraints).trial == 1  # equal score: smaller wins


def test_least_violating_is_measured_relative_to_each_bound() -> None:
    constraints = parse_constraints({"score": ">= 0.9", "model_bytes": "<= 1000"})
    # trial 0 misses the score by 10 % of its bound, trial 1 the size by 20 %: 0 is closer, though 200 > 0.09
    trials = [row(0, 0.81, 900), row(1, 0.95, 1200)]
    chosen = recommend(trials, OBJECTIVES, DIRECTIONS, constraints)
    assert chosen.trial == 0 and not chosen.feasible
    assert chosen.line == "no trial met score >= 0.9; closest: trial 0, score 0.81"


def test_a_missing_metric_is_farthest_and_running_trials_do_not_count() -> None:
    constraints = parse_constraints({"latency_ms": "<= 2"})
    trials = [row(0, 0.9, 10), row(1, 0.8, 10, latency_ms=3.0), row(2, None, state="RUNNING")]
    assert recommend(trials, OBJECTIVES, DIRECTIONS, constraints).trial == 1


def test_no_completed_trial_is_said() -> None:
    trials = [row(0, None, state="FAIL"), row(1, None, state="FAIL"), row(2, None, state="PRUNED")]
    chosen = recommend(trials, OBJECTIVES, DIRECTIONS)
    assert chosen == Recommendation(None, False, "nothing to recommend: no trial completed (2 failed, 1 stopped early)")
    assert recommend([], OBJECTIVES, DIRECTIONS).line == "nothing to recommend: no trial ran"


def test_show_uses_the_stored_answer_once_ended_and_a_live_one_while_running() -> None:
    from aup.views.recommend import for_study
    from aup.views.rows import StudyRecord

    config = {"constraints": {"score": ">= baseline_score - 0.01"}, "recommend": "model_bytes"}
    trials = [row(0, 0.985, 500), row(1, 0.985, 400)]
    stored = {"trial": 0, "feasible": True, "line": "recommended: trial 0 (as the run said)"}
    ended = StudyRecord("e", 1, DIRECTIONS, OBJECTIVES, {"experiment": config, "status": "finished",
                                                          "recommendation": stored})
    assert for_study(ended, trials) == Recommendation(0, True, stored["line"])
    running = StudyRecord("e", 1, DIRECTIONS, OBJECTIVES, {"experiment": config, "status": "running"})
    live = for_study(running, trials)
    assert live.trial == 1 and live.line.startswith("so far, recommended: trial 1 ")
