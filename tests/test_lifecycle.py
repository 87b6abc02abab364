"""The lifecycle's one table: every stored status has its row, the runner has a step for each status
it can be in, architecture.md shows the table as it is, and both state stores refuse a transition the
table does not have (leaving the state as it was)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lib.lifecycle import FINISHED_STATUSES, LIVE_STATUSES, TRANSITIONS, BadTransition, IssueStatus, check_transition
from lib.models import IssueState
from lib.runner import STEPS
from lib.state_manager import RedisStateStore, StateManager

S = IssueStatus
STORED = set(IssueStatus) - {S.LOST, S.UNKNOWN}
ARCHITECTURE = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"


def entry(number: int, status: IssueStatus) -> IssueState:
    return IssueState(number, status, f"issue-{number}", "2026-12-01T10:00:00+00:00", repo="octo/widgets")


def test_every_stored_status_has_its_row_and_is_reached_from_a_claim():
    assert set(TRANSITIONS) == STORED | {None}
    assert all(targets <= STORED for targets in TRANSITIONS.values()), "the monitor's statuses are never stored"
    reached, frontier = set(), {None}
    while frontier:
        frontier = {target for status in frontier for target in TRANSITIONS[status]} - reached
        reached |= frontier
    assert reached == STORED


def test_every_issue_can_end_and_start_again():
    for status in LIVE_STATUSES | {S.NEEDS_INPUT}:
        assert {S.COMPLETED, S.FAILED, S.CANCELLED} <= TRANSITIONS[status], status
    for status in FINISHED_STATUSES:
        assert S.PENDING in TRANSITIONS[status] and S.WAITING in TRANSITIONS[status], status


def test_the_runner_has_a_step_for_every_status_a_runner_is_in():
    assert set(STEPS) == STORED - {S.PENDING, S.MERGED, S.CLOSED}, "pending, merged and closed are the tick's"


def test_a_bad_transition_is_one_sentence_that_names_the_table():
    check_transition(S.RUNNING, S.RUNNING)  # staying is always allowed
    check_transition(None, S.PENDING)
    with pytest.raises(BadTransition, match=r"^issue octo/widgets#4 cannot go from completed to running \(lib/lifecycle.py"):
        check_transition(S.COMPLETED, S.RUNNING, "issue octo/widgets#4")
    with pytest.raises(BadTransition, match="from nothing to running"):
        check_transition(None, S.RUNNING)


def test_architecture_md_shows_the_table_as_it_is():
    """Each row of the doc's table: its statuses (before any parenthesis) -> the statuses they may become."""
    section = ARCHITECTURE.read_text(encoding="utf-8").split("## The lifecycle")[1].split("###")[0]
    rows = {}
    for line in section.splitlines()[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| ") and not cells[0].startswith(("status", "---")):
            for status in re.sub(r"\(.*?\)", "", cells[0]).split(","):
                rows[S(status.strip())] = {S(target.split("(")[0].strip()) for target in cells[1].split(",")}
    assert rows == {status: set(TRANSITIONS[status]) for status in STORED}


def test_the_file_store_refuses_a_bad_transition_and_keeps_the_file(tmp_path):
    store = StateManager(tmp_path / "processing-state.json", default_repo="octo/widgets")
    store.put(entry(4, S.COMPLETED))
    before = (tmp_path / "processing-state.json").read_bytes()
    with pytest.raises(BadTransition, match="completed to running"):
        with store.transaction() as state:
            state.issues[("octo/widgets", 4)].status = S.RUNNING
    assert (tmp_path / "processing-state.json").read_bytes() == before
    assert store.update(4, status=S.PENDING).status == S.PENDING  # a claim: allowed
    assert json.loads((tmp_path / "processing-state.json").read_text())["4"]["status"] == "pending"


def test_the_redis_store_refuses_a_bad_transition_and_keeps_the_entry(redis_server):
    store = RedisStateStore(redis_server.url, namespace="life", default_repo="octo/widgets")
    store.put(entry(4, S.WAITING))
    with pytest.raises(BadTransition, match="waiting to validating"):
        store.update(4, status=S.VALIDATING)
    assert store.get(4).status == S.WAITING
    assert store.update(4, status=S.PENDING).status == S.PENDING
