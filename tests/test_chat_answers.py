"""Answers and commands from Telegram and Slack: the real python-telegram-bot and slack_sdk against
the chat stand-ins, the real GitHubClient against the emulator, a real state file.

The fast tests run the tick's chat reading (lib/chat_inbox.py) on its own, with questions asked as a
runner asks them; the slow ones run whole ticks, runners and the stand-in claude (`world`).
"""

from __future__ import annotations

import json
import logging
import pytest

from chat_desk import BOB, MAINTAINER, Desk
from chat_standins import SLACK_TOKEN, TELEGRAM_TOKEN, SilentServer, slack_typed, telegram_user
from claude_standin import scenario
from github_emulator import MAX_COMMENT_CHARS, REPO, TOKEN
from lib.answers import GITHUB_COMMENT_CHARS, answer_text, chat_answer_comment
from lib.chat_inbox import OFFSET
from lib.checks import run_checks
from lib.comments import keyed
from lib.config import Config
from lib.events import Event
from lib.models import ConfigError, IssueStatus
from lib.notifications import Notifications
from lib.prompts import build_reply
from lib.slack_notifier import plain_text
from lib.state_manager import RedisStateStore, issue_key

OTHER = "octo/gadgets"
ALICE = telegram_user(111, "Alice", "alice")
EVE = telegram_user(999, "Eve", "eve")
MALLORY = "U0MALLORY"  # a Slack member who is not listed


@pytest.fixture
def desk(tmp_path, github_emulator, telegram_api, slack_api):
    return Desk(tmp_path, github_emulator, telegram_api, slack_api)


def test_no_open_question_no_chat_request(desk):
    asked = desk.ask()
    desk.state.update(issue_key(asked), status=IssueStatus.RUNNING)
    before = (len(desk.telegram.requests), len(desk.slack.requests))
    desk.telegram.user_message(ALICE, "/status")

    desk.read()

    assert (len(desk.telegram.requests), len(desk.slack.requests)) == before


def test_an_answer_in_each_chat_goes_on_its_own_issue_in_two_repositories(tmp_path, github_emulator, telegram_api,
                                                                          slack_api):
    desk = Desk(tmp_path, github_emulator, telegram_api, slack_api, repos=(REPO, OTHER))
    first = desk.ask("Pick a colour", repo=REPO, question="Red or blue?")
    second = desk.ask("Pick a size", repo=OTHER, question="Small or large?")
    assert first.issue_number == second.issue_number == 1  # the same number in two repositories
    reads = (telegram_api.count("getUpdates"), slack_api.count("conversations.replies"))
    telegram_api.user_message(ALICE, "Blue, please.", reply_to=int(desk.message_of(first, "telegram")))
    slack_api.user_reply(desk.message_of(second, "slack"), BOB, "Large.", name="Bob")

    desk.read()

    # One getUpdates; one conversations.replies per open thread (two questions, one thread each).
    assert (telegram_api.count("getUpdates") - reads[0], slack_api.count("conversations.replies") - reads[1]) == (1, 2)
    [_, on_first] = desk.comments(first)
    [_, on_second] = desk.comments(second)
    assert "Answer from Telegram" in on_first and "`Alice (@alice)`" in on_first and "> Blue, please." in on_first
    assert "Answer from Slack" in on_second and "`Bob`" in on_second and "> Large." in on_second
    assert build_reply(desk.answers(first)) == "Alice (@alice) (from Telegram) replied on the issue:\nBlue, please."
    assert build_reply(desk.answers(second)) == "Bob (from Slack) replied on the issue:\nLarge."
    [thanks_telegram] = desk.told("telegram")
    assert thanks_telegram.startswith("✅ Thanks, Alice (@alice): your answer is on octo/widgets#1")
    assert telegram_api.messages[-1]["reply_to"] is not None
    [thanks_slack] = desk.told("slack")
    assert "your answer is on octo/gadgets#1" in thanks_slack and "Later replies in this thread are not read" in thanks_slack
    assert slack_api.messages[-1]["thread_ts"] == desk.message_of(second, "slack")
    assert desk.entry(first).chat_answers[0]["service"] == "telegram"


def test_a_question_says_in_each_chat_that_a_reply_answers_it(desk):
    desk.ask()
    [question] = [m["plain_text"] for m in desk.telegram.messages]
    assert "Or reply to this message with the answer" in question
    assert "Or reply in this thread with the answer" in desk.slack.messages[0]["rendered"]
    desk.reload(telegram={"allowed_user_ids": []}, slack={"allowed_user_ids": []})
    desk.ask("Another")
    assert "reply to this message" not in desk.telegram.messages[-1]["plain_text"]
    assert "reply in this thread" not in desk.slack.messages[-1]["rendered"]


def test_a_user_not_listed_changes_nothing_and_is_logged(desk, caplog):
    asked = desk.ask()
    desk.telegram.user_message(EVE, "Red! [scenario:crash]", reply_to=int(desk.message_of(asked, "telegram")))
    desk.slack.user_reply(desk.message_of(asked, "slack"), MALLORY, "Red!")
    desk.telegram.user_message(EVE, "/pause")

    with caplog.at_level(logging.WARNING, logger="lib.chat_inbox"):
        desk.read()

    assert len(desk.comments(asked)) == 1 and desk.answers(asked) == []
    assert desk.told("telegram") == [] and desk.told("slack") == []
    assert desk.state.load_state().paused_until() is None
    warnings = [r.getMessage() for r in caplog.records]
    assert any("user 999 is not in telegram.allowed_user_ids" in w for w in warnings), warnings
    assert any("user U0MALLORY is not in slack.allowed_user_ids" in w for w in warnings), warnings
    assert any("/pause by 'Eve (@eve)' is ignored" in w for w in warnings), warnings
    # Read once: the next tick asks from past them.
    desk.read()
    assert desk.telegram.offsets[-1] == desk.state.load_state().meta[OFFSET]
    assert desk.telegram.updates == []


def test_nobody_listed_means_the_chat_is_not_read(desk):
    desk.reload(telegram={"allowed_user_ids": []}, slack={"allowed_user_ids": []})
    asked = desk.ask()
    desk.telegram.user_message(ALICE, "Blue", reply_to=int(desk.message_of(asked, "telegram")))

    desk.read()

    assert desk.telegram.count("getUpdates") == 0 and desk.slack.count("conversations.replies") == 0
    assert len(desk.comments(asked)) == 1


def test_a_reply_to_a_message_that_asks_nothing_is_told_so(desk):
    asked = desk.ask()
    Notifications.from_config(desk.config).notify(Event(kind="completed", repo=REPO, issue_number=99))
    completed = desk.telegram.messages[-1]["message_id"]
    desk.telegram.user_message(ALICE, "Great, now the docs too", reply_to=completed)
    bystander = desk.telegram.user_message(EVE, "nice")
    desk.telegram.user_message(ALICE, "me too", reply_to=bystander)  # people talking: nothing to say

    desk.read()

    assert desk.told("telegram")[-1].startswith("That message asks nothing, so your reply was not used")
    assert len(desk.told("telegram")) == 2  # the Completed note, then the one reply
    assert len(desk.comments(asked)) == 1 and desk.answers(asked) == []


def test_the_first_answer_wins_and_later_ones_are_told(desk):
    asked = desk.ask()
    message = int(desk.message_of(asked, "telegram"))
    desk.telegram.user_message(ALICE, "Blue.", reply_to=message)
    desk.slack.user_reply(desk.message_of(asked, "slack"), BOB, "Green.")

    desk.read()  # both in one tick: Telegram's is read first

    assert [a["body"] for a in desk.answers(asked)] == ["Blue."]
    assert "answered already, by Alice (@alice) on Telegram" in desk.told("slack")[-1]
    # A tick later the session runs again: the question is closed.
    desk.state.update(issue_key(asked), status=IssueStatus.RUNNING)
    desk.telegram.user_message(ALICE, "Actually green.", reply_to=message)
    desk.read()
    assert desk.telegram.count("getUpdates") == 1  # no question open: not read
    desk.ask("Another")  # a question elsewhere opens the chat again
    desk.read()
    assert "answered already and the session went on" in desk.told("telegram")[-1]
    assert [a["body"] for a in desk.answers(asked)] == ["Blue."]


def test_an_answer_on_github_first_wins_over_the_chat(desk):
    asked = desk.ask()
    desk.github.add_comment(asked.issue_number, "Blue, on GitHub.", user=MAINTAINER)
    desk.telegram.user_message(ALICE, "Green.", reply_to=int(desk.message_of(asked, "telegram")))

    desk.read()

    assert desk.told("telegram")[-1].startswith("The question of octo/widgets#1 was answered on GitHub already")
    assert [a["body"] for a in desk.answers(asked)] == ["Blue, on GitHub."]


def test_an_edit_read_with_its_message_is_the_answer_and_a_later_edit_is_told(desk):
    asked = desk.ask()
    message = desk.telegram.user_message(ALICE, "Bleu", reply_to=int(desk.message_of(asked, "telegram")))
    desk.telegram.edit_message(message, "Blue")

    desk.read()

    assert [a["body"] for a in desk.answers(asked)] == ["Blue"]
    assert len(desk.told("telegram")) == 1  # the thanks; the edit was folded into its message
    desk.telegram.edit_message(message, "Blue, and bold")
    desk.read()
    assert desk.told("telegram")[-1].startswith("Edits are not read")
    assert [a["body"] for a in desk.answers(asked)] == ["Blue"]


def test_a_slack_reply_edited_before_the_tick_read_it_is_taken_as_it_reads_now(desk):
    asked = desk.ask()
    thread = desk.message_of(asked, "slack")
    reply = desk.slack.user_reply(thread, BOB, "Bleu")
    desk.slack.edit_reply(thread, reply, "Blue")

    desk.read()

    assert [a["body"] for a in desk.answers(asked)] == ["Blue"]


def test_a_photo_is_not_an_answer(desk):
    asked = desk.ask()
    desk.telegram.user_message(ALICE, None, reply_to=int(desk.message_of(asked, "telegram")))

    desk.read()

    assert desk.told("telegram")[-1].startswith("Only text answers the question")
    assert desk.answers(asked) == []


def test_an_answer_longer_than_a_comment_is_cut_to_fit_and_says_so(desk):
    asked = desk.ask()
    typed = "&<> " * 9_900  # 39,600 characters: within Slack's 40,000; quoted on GitHub it would be ~170,000
    desk.slack.user_reply(desk.message_of(asked, "slack"), BOB, slack_typed(typed))

    desk.read()

    body = desk.comments(asked)[-1]
    assert len(body) <= MAX_COMMENT_CHARS and "The answer is cut here" in body
    [answer] = desk.answers(asked)
    assert typed.startswith(answer["body"].removesuffix(" …(cut)").rstrip())
    assert "It was cut to fit in a GitHub comment" in desk.told("slack")[-1]


def test_text_is_escaped_both_ways(desk):
    asked = desk.ask(question="Use <b> & 'quotes'?")
    hostile = telegram_user(111, "<b>Al</b> & `x`", "alice")
    desk.telegram.user_message(hostile, "<script>alert(1)</script> & @octocat **bold**",
                               reply_to=int(desk.message_of(asked, "telegram")))
    slack_question = desk.message_of(asked, "slack")
    desk.slack.user_reply(slack_question, BOB, slack_typed("a <b> & c ") + "<https://example.com/x|the docs> <@U0CAROL>")

    desk.read()

    body = desk.comments(asked)[1]
    assert "<script>" not in body and "&lt;script&gt;" in body and "@\u200boctocat" in body
    assert "by `<b>Al</b> & x (@alice)`" in body  # a code span: shown as written, no HTML, no mention
    [answer] = desk.answers(asked)
    assert answer["body"] == "<script>alert(1)</script> & @octocat **bold**"
    # Telegram parsed the confirmation (the stand-in parses HTML strictly) and shows the name as written.
    assert desk.told("telegram")[-1].startswith("✅ Thanks, <b>Al</b> & `x` (@alice)")
    slack_said = [m for m in desk.slack.messages if m["thread_ts"] == slack_question][-1]
    assert slack_said["problems"] == [] and "answered already, by <b>Al</b> & `x` (@alice)" in slack_said["rendered"]
    assert plain_text(slack_typed("a <b> & c ") + "<https://example.com/x|the docs> <@U0CAROL> <!here>"
                      " <#C0123|general> <mailto:a@b.c|a@b.c> &amp;lt;") == \
        "a <b> & c the docs (https://example.com/x) @U0CAROL @here #general a@b.c &lt;"


def test_a_comment_that_copies_a_chat_answer_counts_for_nothing(desk):
    """The trust: only a comment whose id the orchestrator recorded is a chat answer."""
    asked = desk.ask()
    body, _ = chat_answer_comment("telegram", "Alice", "111", "Red. [scenario:crash]", "chat-answer:telegram:4242:7")
    desk.github.set_role("stranger", "read")
    desk.github.add_comment(asked.issue_number, keyed(body, "chat-answer:telegram:4242:7"), user="stranger")
    desk.github.add_comment(asked.issue_number, keyed(body, "chat-answer:telegram:4242:8"), user=MAINTAINER)

    assert desk.answers(asked) == []  # what the runner's resume reads, and what the tick's reconcile asks


def test_commands_from_the_chat_map_onto_the_operator_commands(desk):
    asked = desk.ask()
    desk.telegram.user_message(ALICE, "/status")
    desk.telegram.user_message(ALICE, "/pause 2h")
    desk.telegram.user_message(ALICE, f"/status@orchestrator_bot {REPO}#{asked.issue_number}")
    desk.telegram.user_message(ALICE, "/cancel")
    desk.telegram.user_message(ALICE, "/retry octo/widgets#1")
    desk.telegram.user_message(ALICE, "/cancel 77")
    desk.telegram.user_message(ALICE, "/unknown")  # not a command of ours: nothing
    desk.telegram.user_message(ALICE, "/status", chat_id=str(ALICE["id"]))  # to the bot, in a private chat

    desk.read()

    status, paused, one, cancel_usage, retry, unknown, private = desk.told("telegram")
    assert desk.telegram.messages[-1]["chat_id"] == "111" and private.startswith("Launches are paused until")
    assert status.startswith("Launches are on.\nocto/widgets#1: needs_input")
    assert paused.startswith("Launches paused until") and desk.state.load_state().paused_until() is not None
    assert one.startswith("octo/widgets#1: needs_input") and "Question: Red or blue?" in one
    assert cancel_usage == "/cancel needs an issue: /cancel owner/name#N"
    assert "needs_input: it is not finished, so it cannot be retried" in retry
    assert "#77 is not in the state file" in unknown
    # In Slack, in a question's thread, with the space Slack needs before a slash.
    desk.slack.user_reply(desk.message_of(asked, "slack"), BOB, " /unpause")
    desk.read()
    assert desk.told("slack")[-1] == "Launches resumed: the next tick claims what waits."
    assert desk.state.load_state().paused_until() is None
    assert desk.answers(asked) == []  # a command is no answer


def test_a_revoked_token_is_one_line_and_github_answers_still_count(desk, caplog):
    asked = desk.ask()
    desk.ask("Another")  # two Slack threads to read, one line all the same
    desk.telegram.revoke()
    desk.slack.revoke()

    with caplog.at_level(logging.WARNING, logger="lib.chat_inbox"):
        desk.read()

    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "Telegram: the bot token was rejected (Unauthorized); answers and commands from Telegram are not read this"
        " tick (answers on GitHub work as ever)",
        "Slack: token_revoked; answers and commands from Slack are not read this tick (answers on GitHub work as"
        " ever)"], lines
    assert TELEGRAM_TOKEN not in caplog.text and SLACK_TOKEN not in caplog.text
    desk.github.add_comment(asked.issue_number, "Blue.", user=MAINTAINER)
    assert [a["body"] for a in desk.answers(asked)] == ["Blue."]


def test_a_slack_token_without_the_history_scope_says_which_it_needs(desk, caplog):
    desk.ask()
    desk.slack.scopes = {"chat:write"}

    with caplog.at_level(logging.WARNING, logger="lib.chat_inbox"):
        desk.read()

    assert "Slack: missing_scope (the bot token needs channels:history)" in caplog.text


def test_a_chat_that_does_not_answer_costs_the_bound_and_the_other_is_read(desk, caplog):
    asked = desk.ask()
    desk.slack.user_reply(desk.message_of(asked, "slack"), BOB, "Blue.")
    with SilentServer() as silent:
        desk.reload(telegram={"api_base_url": f"http://127.0.0.1:{silent.port}/bot"}, notification_timeout_seconds=2)
        with caplog.at_level(logging.WARNING, logger="lib.chat_inbox"):
            desk.read()

    assert "Telegram: no answer within 2 s; answers and commands from Telegram are not read" in caplog.text
    assert [a["body"] for a in desk.answers(asked)] == ["Blue."]
    assert OFFSET not in desk.state.load_state().meta


def test_github_down_leaves_the_answer_for_the_next_tick_and_posts_it_once(desk, caplog):
    asked = desk.ask()
    message = int(desk.message_of(asked, "telegram"))
    desk.telegram.user_message(ALICE, "/status")
    desk.telegram.user_message(ALICE, "Blue.", reply_to=message)
    desk.github.fail_next(1, 502, method="POST")  # the comment's POST (a POST is not retried)

    with caplog.at_level(logging.WARNING, logger="lib.chat_inbox"):
        desk.read()

    assert "could not be posted on GitHub now" in caplog.text and "read again next tick" in caplog.text
    assert desk.answers(asked) == []
    offset = desk.state.load_state().meta[OFFSET]
    assert offset == desk.telegram.updates[0]["update_id"] + 1  # past /status, not past the answer
    desk.read()
    assert desk.telegram.offsets[-1] == offset
    assert [a["body"] for a in desk.answers(asked)] == ["Blue."]
    assert len(desk.comments(asked)) == 2 and len([t for t in desk.told("telegram") if t.startswith("Launches")]) == 1


def test_the_offset_moves_past_each_update_once(desk):
    asked = desk.ask()
    desk.telegram.user_message(ALICE, "Blue.", reply_to=int(desk.message_of(asked, "telegram")))
    desk.telegram.user_message(EVE, "hello")

    desk.read()
    last = desk.telegram.updates[-1]["update_id"]
    desk.read()

    assert desk.state.load_state().meta[OFFSET] == last + 1
    assert desk.telegram.offsets == [None, last + 1]  # the second read confirmed them: Telegram forgot them
    assert desk.telegram.updates == [] and len(desk.comments(asked)) == 2


def test_the_redis_store_keeps_the_offset_and_the_answers_too(tmp_path, github_emulator, telegram_api, slack_api,
                                                               redis_server):
    store = RedisStateStore(redis_server.url, namespace="chat", default_repo=REPO)
    desk = Desk(tmp_path, github_emulator, telegram_api, slack_api, store=store)
    asked = desk.ask()
    desk.telegram.user_message(ALICE, "Blue.", reply_to=int(desk.message_of(asked, "telegram")))

    desk.read()
    desk.read()

    fresh = RedisStateStore(redis_server.url, namespace="chat", default_repo=REPO).load_state()
    assert fresh.meta[OFFSET] == desk.telegram.offsets[-1] and desk.telegram.updates == []
    assert [a["service"] for a in fresh.issues[issue_key(asked)].chat_answers] == ["telegram"]
    assert [a["body"] for a in desk.answers(asked)] == ["Blue."] and len(desk.comments(asked)) == 2


def test_a_chat_answer_is_read_back_exactly_and_always_fits(tmp_path):
    for text in ["plain", "<b> & &amp; &lt; > \"'", "@someone at @ the end @", "line\n\n  indented\n> quoted",
                 "`code` **bold** _it_ [link](x) <!-- hidden -->", "ü漢字🎉" * 3000]:
        body, left_out = chat_answer_comment("slack", "x", "U1", text, "chat-answer:slack:C1:1.2")
        assert left_out == 0 and answer_text(body) == text.strip()
    body, left_out = chat_answer_comment("slack", "x", "U1", "&" * 39_000, "chat-answer:slack:C1:1.2")
    assert left_out and len(keyed(body, "chat-answer:slack:C1:1.2")) <= GITHUB_COMMENT_CHARS
    assert answer_text(body) == "&" * (39_000 - left_out) + " …(cut)"


def test_allowed_user_ids_are_validated_one_line_each(tmp_path):
    settings = {"github": {"token": TOKEN, "repo": REPO, "base_repo_path": str(tmp_path)},
                "telegram": {"bot_token": TELEGRAM_TOKEN, "chat_id": 1, "allowed_user_ids": [111, "alice"]},
                "slack": {"bot_token": SLACK_TOKEN, "channel_id": "C1", "allowed_user_ids": "U0BOB1234"}}
    with pytest.raises(ConfigError) as caught:
        Config.from_dict(settings, tmp_path)
    assert caught.value.errors == [
        "telegram.allowed_user_ids: [1] must be a Telegram user id (a positive integer such as 123456789),"
        " got 'alice'",
        "slack.allowed_user_ids: must be a list of Slack member ids (such as U0123ABCD), got 'U0BOB1234'"]
    settings["telegram"]["allowed_user_ids"] = [111, 0]
    settings["slack"]["allowed_user_ids"] = ["U0BOB1234", "bob"]
    with pytest.raises(ConfigError) as caught:
        Config.from_dict(settings, tmp_path)
    assert [e.split(":")[0] for e in caught.value.errors] == ["telegram.allowed_user_ids", "slack.allowed_user_ids"]
    assert "[1] must be a Slack member id" in caught.value.errors[1]
    del settings["telegram"]["allowed_user_ids"], settings["slack"]["allowed_user_ids"]
    config = Config.from_dict(settings, tmp_path)
    assert config.telegram_allowed_user_ids == [] and config.slack_allowed_user_ids == []


def test_check_shows_who_may_answer(tmp_path, github_emulator, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({
        "github": {"token": TOKEN, "repo": REPO, "base_repo_path": str(tmp_path / "slots"), "api_url": github_emulator.url},
        "telegram": {"bot_token": TELEGRAM_TOKEN, "chat_id": 1, "allowed_user_ids": [111, 222]},
        "slack": {"allowed_user_ids": ["U0BOB1234"]}}))
    path.chmod(0o600)

    run_checks(path)

    out = capsys.readouterr().out
    assert "  ok  Telegram answers: from users 111, 222 (telegram.allowed_user_ids)" in out
    assert "warn  Slack answers: slack.allowed_user_ids is set, but slack is not configured" in out


# ------------------------------------------------------------------------------------------------
# Whole ticks
# ------------------------------------------------------------------------------------------------


def chats(world, telegram, slack, telegram_ids=(111,), slack_ids=(BOB,)):
    world.chat(telegram=telegram, slack=slack)
    world.write_config(telegram={"allowed_user_ids": list(telegram_ids)}, slack={"allowed_user_ids": list(slack_ids)})


def question_message(world, number, service, repo=None):
    return next(q["id"] for q in world.entry(number, repo)["chat_questions"] if q["service"] == service)


def test_answers_from_both_chats_resume_both_sessions_across_repositories(world, telegram_api, slack_api):
    chats(world, telegram_api, slack_api)
    world.add_repository(OTHER)
    first = world.add_issue("Pick a colour", "Which colour? " + scenario("question"))
    second = world.add_issue("Pick a size", "Which size? " + scenario("question"), repo=OTHER)
    world.tick()
    assert world.entry(first, REPO)["status"] == world.entry(second, OTHER)["status"] == "needs_input"
    sessions = {key: world.entry(n, key)["session_id"] for key, n in ((REPO, first), (OTHER, second))}
    reads = (telegram_api.count("getUpdates"), slack_api.count("conversations.replies"))
    assert reads == (0, 0)  # the tick that claimed them read no chat: no question was open yet

    telegram_api.user_message(ALICE, "Blue, please.", reply_to=int(question_message(world, first, "telegram", REPO)))
    slack_api.user_reply(question_message(world, second, "slack", OTHER), BOB, "Large.", name="Bob")
    resumed = world.tick()

    assert "2 resumed" in resumed.stdout, resumed.stdout + resumed.stderr
    assert telegram_api.count("getUpdates") - reads[0] == 1
    assert slack_api.count("conversations.replies") - reads[1] == 2
    prompts = {i["session_id"]: i["prompt"] for i in world.standin.invocations() if i["resume"]}
    assert "Alice (@alice) (from Telegram) replied on the issue:\nBlue, please." in prompts[sessions[REPO]]
    assert "Bob (from Slack) replied on the issue:\nLarge." in prompts[sessions[OTHER]]
    assert world.entry(first, REPO)["status"] == world.entry(second, OTHER)["status"] == "completed"
    assert any("Answer from Telegram" in body for body in world.comments(first, repo=REPO))
    assert any("Answer from Slack" in body for body in world.comments(second, repo=OTHER))
    assert any(m["plain_text"].startswith("✅ Thanks, Alice") for m in telegram_api.messages)
    # Nothing is open now: a tick makes no chat request.
    counts = (len(telegram_api.requests), len(slack_api.requests))
    world.tick()
    assert (len(telegram_api.requests), len(slack_api.requests)) == counts


def test_the_offset_survives_a_tick_killed_after_posting_the_answer(world, telegram_api, slack_api):
    chats(world, telegram_api, slack_api)
    number = world.add_issue("Pick a colour", "Which colour? " + scenario("question"))
    world.tick()
    telegram_api.user_message(ALICE, "Blue.", reply_to=int(question_message(world, number, "telegram")))

    killed = world.tick(env={"ORCHESTRATOR_FAULT": "chat-answer-posted"})

    assert killed.returncode == -9
    assert sum("Answer from Telegram" in body for body in world.comments(number)) == 1
    state = world.state()
    assert "telegram_offset" not in state.get("_meta", {}) and world.entry(number)["chat_answers"] == []
    world.tick()  # reads the update again: the comment is there already, so it is not posted twice
    assert sum("Answer from Telegram" in body for body in world.comments(number)) == 1
    assert world.entry(number)["status"] == "completed"
    assert [i["resume"] for i in world.standin.invocations()] == [False, True]
    [update] = telegram_api.updates  # Telegram keeps it until a getUpdates passes the offset past it
    assert telegram_api.offsets == [None, None]
    assert world.state()["_meta"]["telegram_offset"] == update["update_id"] + 1


def test_a_tick_killed_after_recording_an_answer_reads_it_no_more(world, telegram_api, slack_api):
    chats(world, telegram_api, slack_api)
    number = world.add_issue("Pick a colour", "Which colour? " + scenario("question"))
    world.tick()
    telegram_api.user_message(ALICE, "Blue.", reply_to=int(question_message(world, number, "telegram")))
    slack_api.user_reply(question_message(world, number, "slack"), BOB, "Green.")

    killed = world.tick(env={"ORCHESTRATOR_FAULT": "before-chat-replies"})

    assert killed.returncode == -9
    entry = world.entry(number)
    assert [a["service"] for a in entry["chat_answers"]] == ["telegram"]
    assert [q.get("seen") is not None for q in entry["chat_questions"] if q["service"] == "slack"] == [True]
    world.tick()
    assert telegram_api.offsets[-1] == world.state()["_meta"]["telegram_offset"]
    assert telegram_api.count("getUpdates") == 2 and telegram_api.updates == []
    assert sum("Answer from" in body for body in world.comments(number)) == 1
    assert world.entry(number)["status"] == "completed"
    # The replies of the killed tick were never sent (at most once), and none is sent twice.
    assert not any("Thanks" in m["plain_text"] or "answered already" in m["plain_text"] for m in telegram_api.messages)


def test_a_revoked_bot_token_leaves_the_answer_to_github(world, telegram_api, slack_api):
    chats(world, telegram_api, slack_api)
    number = world.add_issue("Pick a colour", "Which colour? " + scenario("question"))
    world.tick()
    telegram_api.revoke()
    slack_api.revoke()
    world.github.add_comment(number, "Blue.", user=MAINTAINER)

    resumed = world.tick()

    assert "1 resumed" in resumed.stdout and world.entry(number)["status"] == "completed"
    log = world.log_text()
    assert "Telegram: the bot token was rejected (Unauthorized); answers and commands from Telegram are not read" in log
    assert "Slack: token_revoked; answers and commands from Slack are not read" in log
