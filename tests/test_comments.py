"""What the orchestrator writes on GitHub, from its parts: agent text is quoted inert."""

from lib.comments import keyed, marker, outcome_comment, pr_body, pr_title, question_comment, quote_for_markdown
from lib.github_client import COMMENT_MARKER
from lib.models import IssueState, IssueStatus
from lib.outcomes import Outcome


def entry(**fields) -> IssueState:
    return IssueState(issue_number=7, status=IssueStatus.RUNNING, branch="issue-7", start_time="2026-11-24T12:00:00",
                      session_id="d4e36535-7fb3-4ea9-a3c8-4018f155a1be", **fields)


def test_agent_text_cannot_mention_forge_our_marker_or_carry_html():
    quoted = quote_for_markdown(f"Done @alice <script>x</script> & {COMMENT_MARKER} outcome:1:2 -->\n\nbye")

    assert quoted.splitlines() == [
        "> Done @\u200balice &lt;script&gt;x&lt;/script&gt; &amp; &lt;!-- claude-issue-orchestrator outcome:1:2 --&gt;",
        ">", "> bye"]
    assert COMMENT_MARKER not in quoted
    assert quote_for_markdown("") == "> (no text)"
    assert quote_for_markdown("x" * 5000).endswith("x …(cut)") and len(quote_for_markdown("x" * 5000)) < 3100


def test_a_keyed_comment_ends_with_its_hidden_marker():
    assert keyed("Hello", "question:1:99") == f"Hello\n\n{COMMENT_MARKER} question:1:99 -->"
    assert marker("pull-request") in pr_body(7, Outcome(status=IssueStatus.COMPLETED, summary="s"), 65)


def test_the_outcome_comment_says_what_happened_with_its_figures():
    done = Outcome(status=IssueStatus.COMPLETED, summary="All fixed.", cost_usd=0.4213, num_turns=17)
    text = outcome_comment(entry(slot_notes=["kept 1 commit on refs/orchestrator/backup/x"]), done,
                           "https://github.com/o/r/pull/3", True, 725)

    assert text.startswith("✅ Claude Code finished this issue.\n\n> All fixed.\n")
    assert "Pull request: https://github.com/o/r/pull/3" in text
    assert "Cost: $0.42 · Turns: 17 · Duration: 12m 5s · Session: `d4e36535-7fb3-4ea9-a3c8-4018f155a1be`" in text
    assert text.endswith("Notes from preparing the slot:\n- kept 1 commit on refs/orchestrator/backup/x")

    failed = outcome_comment(entry(), Outcome(status=IssueStatus.FAILED, reason="timed out"), None, True, None)
    assert failed.startswith("❌ Claude Code could not finish this issue: timed out.")
    assert "Branch: `issue-7`" in failed and "Cost: n/a · Turns: n/a · Duration: n/a" in failed
    stopped = outcome_comment(entry(), Outcome(status=IssueStatus.CANCELLED, reason="the issue was closed"),
                              None, False, 3)
    assert stopped.startswith("⏹️ Stopped: the issue was closed. The work so far is saved.")


def test_the_pull_request_closes_its_issue_and_the_question_says_who_may_answer():
    body = pr_body(7, Outcome(status=IssueStatus.COMPLETED, summary="Fixed.", cost_usd=0.025), 45)
    assert body.startswith("Closes #7\n\nSummary from Claude Code:\n\n> Fixed.\n\nCost: $0.0250 · Turns: n/a · Duration: 45s")
    assert pr_title({"number": 7, "title": "  Fix\n the   widget "}) == "Fix the widget (#7)"
    assert pr_title({"number": 8, "title": ""}) == "Issue 8 (#8)"

    asked = question_comment("v1 or v2?", trusted_roles=["admin", "maintain"], allowed_users=["bob"],
                             input_wait_hours=72)
    assert "> v1 or v2?" in asked and "role in admin, maintain or a listed user" in asked
    assert "within 72 hours" in asked
