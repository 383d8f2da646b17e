"""What a resume after a killed runner must leave behind, checked the same way for every backend."""
from __future__ import annotations

from typing import Any, Sequence

from optuna.trial import TrialState


def assert_resumed_after_kill(before: Sequence[Any], after: Sequence[Any], complete: int) -> None:
    """``before``: the study's trials right after the runner was killed; ``after``: once ``aup resume``
    finished. Finished trials are kept as they were, running ones are marked interrupted and their
    parameters re-run once (a kill between ask and suggest leaves no parameters: nothing to re-run),
    and ``complete`` trials are complete in the end."""
    running = {t.number: t.params for t in before if t.state == TrialState.RUNNING}
    done = {t.number: t.params for t in before if t.state == TrialState.COMPLETE}
    finished = [t for t in after if t.state == TrialState.COMPLETE]
    assert len(finished) == complete
    for number, params in done.items():
        assert after[number].state == TrialState.COMPLETE and after[number].params == params
    for number, params in running.items():
        assert after[number].user_attrs["status_reason"] == "interrupted"
        if params:
            assert [t.params for t in finished if t.user_attrs.get("requeued_from") == number] == [params]
