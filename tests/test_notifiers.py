"""Notifications end to end: the real python-telegram-bot and slack_sdk against loopback stand-ins."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from chat_standins import (SLACK_CHANNEL_ID, SLACK_TOKEN, TELEGRAM_CHAT_ID, TELEGRAM_TOKEN, closed_port,
                           parse_telegram_html, utf16_len)
from lib.events import Event
from lib.models import format_cost, format_duration
from lib.notifications import Notifications
from lib.slack_notifier import format_blocks
from lib.telegram_notifier import format_message, truncate_html, visible_length

ROOT = Path(__file__).resolve().parent.parent
REPO = "octo/widgets"
ISSUE_URL = "https://github.com/octo/widgets/issues/12"
PR_URL = "https://github.com/octo/widgets/pull/13"
WRONG_TELEGRAM_TOKEN = "987654321:AAwrong-token_for-the-stand-in-0000000"
WRONG_SLACK_TOKEN = "xoxb-9999-8888-wrongtokenZYXWVU"
HOSTILE_TITLE = "Fix <script>alert('x')</script> & <b>bold</b> *_[link](x) 🎉👩‍💻 &amp; </i>"

# PTB 22 warns that RetryAfter.retry_after will become a timedelta; the notifier takes both.
RETRY_AFTER_DEPRECATION = "ignore:.*`retry_after`:DeprecationWarning"


def chat_config(telegram_url=None, slack_url=None, telegram_token=TELEGRAM_TOKEN, slack_token=SLACK_TOKEN,
                telegram_chat=TELEGRAM_CHAT_ID, slack_channel=SLACK_CHANNEL_ID):
    """What lib.config.Config offers the dispatcher; a service without a URL is not configured."""
    return SimpleNamespace(
        github_repo=REPO,
        telegram_bot_token=telegram_token if telegram_url else None,
        telegram_chat_id=telegram_chat if telegram_url else None,
        telegram_api_base_url=telegram_url,
        slack_bot_token=slack_token if slack_url else None,
        slack_channel_id=slack_channel if slack_url else None,
        slack_api_base_url=slack_url,
    )


EXTRAS = {
    "started": {},
    "completed": dict(duration_seconds=725, cost_usd=0.4213, num_turns=17, pr_url=PR_URL),
    "needs_input": dict(question="Should the widget store its state in SQLite or in Postgres?"),
    "error": dict(reason="claude exited with status 1", duration_seconds=65,
                  log_tail="\n".join(f"log line {i}" for i in range(1, 41))),
    "resumed": {},
    "paused": dict(until="2024-01-15T15:00:00+00:00", reason="usage limit"),
    "cancelled": dict(reason="the issue was closed", duration_seconds=30),
}
#: What a reader must see in each kind of message, beyond the issue, slot and branch.
EXPECTED = {
    "started": ["🚀", "Started"],
    "completed": ["✅", "Completed", "12m 5s", "$0.42", "17", PR_URL],
    "needs_input": ["⏳", "Needs input", EXTRAS["needs_input"]["question"]],
    "error": ["❌", "Error", "claude exited with status 1", "1m 5s", "log line 21", "log line 40"],
    "resumed": ["▶️", "Resumed"],
    "paused": ["⏸️", "Paused", "2024-01-15T15:00:00+00:00"],
    "cancelled": ["⏹️", "Cancelled", "the issue was closed"],
}


def make_event(kind, **overrides):
    fields = dict(kind=kind, repo=REPO, issue_number=12, title="Add a widget", url=ISSUE_URL,
                  slot=1, branch="issue-12")
    fields.update(EXTRAS.get(kind, {}))
    fields.update(overrides)
    return Event(**fields)


def warnings_logged(caplog):
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


# ------------------------------------------------------------------------------------------------
# Formatting
# ------------------------------------------------------------------------------------------------


def test_duration_and_cost_read_like_a_human_wrote_them():
    assert [format_duration(s) for s in (0, 45, 725, 3725)] == ["0s", "45s", "12m 5s", "1h 2m 5s"]
    assert format_cost(0.4213) == "$0.42"


def test_unknown_event_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown notification kind"):
        Event(kind="finished", repo=REPO)


def test_truncated_html_still_parses_at_any_cut():
    html = format_message(make_event("needs_input", title=HOSTILE_TITLE, question="a<b & c>d é 🎉 " * 400))
    for limit in (20, 57, 58, 59, 100, 333, 1000, 4096):
        cut = truncate_html(html, limit)
        text, _ = parse_telegram_html(cut)  # raises if a tag or an entity was split
        assert utf16_len(text) == visible_length(cut) <= limit
    assert truncate_html(html, 4096).endswith("…</blockquote>")  # the question is cut, not the header


# ------------------------------------------------------------------------------------------------
# Delivery through the real libraries
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(EXTRAS))
def test_every_event_reaches_both_services_with_its_fields(kind, telegram_api, slack_api, caplog):
    notifications = Notifications.from_config(chat_config(telegram_api.api_base_url, slack_api.api_base_url))
    assert notifications.names == ["Telegram", "Slack"]

    notifications.notify(make_event(kind))

    assert warnings_logged(caplog) == []
    [telegram], [slack] = telegram_api.messages, slack_api.messages
    emoji = EXPECTED[kind][0]
    assert telegram["parse_mode"] == "HTML" and telegram["plain_text"].startswith(emoji)
    assert slack["text"].startswith(emoji) and slack["rendered"].startswith(emoji)
    for shown in (telegram["plain_text"], slack["rendered"]):
        for expected in EXPECTED[kind] + ["octo/widgets#12", "Add a widget", "Slot", "issue-12"]:
            assert expected in shown, (expected, shown)
    if kind == "error":  # the end of the log, not its start
        assert "log line 20\n" not in telegram["plain_text"] and "log line 20\n" not in slack["rendered"]
    telegram_links = [e["url"] for e in telegram["entities"] if e["type"] == "text_link"]
    assert telegram_links[0] == ISSUE_URL
    assert slack["blocks"][0]["text"]["text"].endswith(f"<{ISSUE_URL}|octo/widgets#12>")
    if kind == "completed":
        assert PR_URL in telegram_links and f"<{PR_URL}|" in str(slack["blocks"])
    assert slack["problems"] == []


@pytest.mark.parametrize("long_part", ["question", "title"])
def test_hostile_title_and_long_body_are_delivered_and_parse(long_part, telegram_api, slack_api, caplog):
    body = ("Steps: run `make` & check <output> **now** " * 120)[:5000]
    if long_part == "title":
        event = make_event("needs_input", title=HOSTILE_TITLE + body)
    else:
        event = make_event("needs_input", title=HOSTILE_TITLE, question=body)
    notifications = Notifications.from_config(chat_config(telegram_api.api_base_url, slack_api.api_base_url))

    notifications.notify(event)

    assert warnings_logged(caplog) == []
    [telegram], [slack] = telegram_api.messages, slack_api.messages
    # The stand-ins parsed and accepted them: Telegram's 4096 limit, Slack's 3000 per text.
    assert utf16_len(telegram["plain_text"]) <= 4096
    long_text = event.title if long_part == "title" else event.question
    for shown in (telegram["plain_text"], slack["rendered"]):
        assert HOSTILE_TITLE in shown and long_text[:150] in shown and long_text not in shown
        assert "…" in shown  # a cut is marked
    assert slack["problems"] == []


def test_a_5000_character_log_keeps_its_last_lines(telegram_api, slack_api):
    log = "\n".join(f"step {i}: " + "x<&>" * 30 for i in range(1, 200)) + "\nFATAL: out of disk"
    notifications = Notifications.from_config(chat_config(telegram_api.api_base_url, slack_api.api_base_url))

    notifications.notify(make_event("error", reason="out of disk", log_tail=log))

    [telegram], [slack] = telegram_api.messages, slack_api.messages
    assert telegram["plain_text"].endswith("FATAL: out of disk")
    assert "FATAL: out of disk\n```" in slack["rendered"] and "step 1:" not in slack["rendered"]


@pytest.mark.filterwarnings(RETRY_AFTER_DEPRECATION)
@pytest.mark.slow  # waits out a real timeout
def test_a_short_rate_limit_is_waited_once_then_sent(telegram_api, slack_api, caplog):
    telegram_api.rate_limit_next(1)
    slack_api.rate_limit_next(1)
    notifications = Notifications.from_config(chat_config(telegram_api.api_base_url, slack_api.api_base_url))

    notifications.notify(make_event("started"))

    assert warnings_logged(caplog) == []
    assert telegram_api.requests == [("sendMessage", 429), ("sendMessage", 200)]
    assert slack_api.requests == [("chat.postMessage", 429), ("chat.postMessage", 200)]
    assert len(telegram_api.messages) == len(slack_api.messages) == 1


@pytest.mark.filterwarnings(RETRY_AFTER_DEPRECATION)
def test_a_long_rate_limit_drops_the_message_with_one_warning(telegram_api, slack_api, caplog):
    telegram_api.rate_limit_next(60)
    slack_api.rate_limit_next(60)
    notifications = Notifications.from_config(
        chat_config(telegram_api.api_base_url, slack_api.api_base_url), timeout=5
    )

    notifications.notify(make_event("completed"))

    assert sorted(r.getMessage() for r in warnings_logged(caplog)) == [
        "Completed notification for octo/widgets#12 not sent: Slack: rate limited for 60 s; message dropped",
        "Completed notification for octo/widgets#12 not sent: Telegram: rate limited for 60 s; message dropped",
    ]
    assert telegram_api.messages == [] and slack_api.messages == []
    assert len(telegram_api.requests) == len(slack_api.requests) == 1


def test_wrong_tokens_cost_one_warning_each_and_never_reach_a_log(telegram_api, slack_api, caplog):
    notifications = Notifications.from_config(chat_config(
        telegram_api.api_base_url, slack_api.api_base_url,
        telegram_token=WRONG_TELEGRAM_TOKEN, slack_token=WRONG_SLACK_TOKEN,
    ))
    # Everything at DEBUG, the libraries' request loggers included, set after the notifiers quieted
    # them: the redacting filter alone must keep the tokens out.
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "telegram", "slack_sdk", "lib.slack_notifier.sdk"):
        caplog.set_level(logging.DEBUG, logger=name)

    notifications.notify(make_event("started"))

    assert sorted(r.getMessage() for r in warnings_logged(caplog)) == [
        "Started notification for octo/widgets#12 not sent: Slack: invalid_auth",
        "Started notification for octo/widgets#12 not sent: Telegram: the bot token was rejected (Unauthorized)",
    ]
    assert any(r.name == "httpx" and "/bot***/sendMessage" in r.getMessage() for r in caplog.records)
    assert any(r.name == "lib.slack_notifier.sdk" for r in caplog.records)
    for record in caplog.records:
        for token in (WRONG_TELEGRAM_TOKEN, WRONG_SLACK_TOKEN):
            assert token not in record.getMessage() and token not in (record.exc_text or "")
    assert WRONG_TELEGRAM_TOKEN not in caplog.text and WRONG_SLACK_TOKEN not in caplog.text


def test_check_sends_one_test_message_and_reports_in_words(telegram_api, slack_api):
    good = Notifications.from_config(chat_config(telegram_api.api_base_url, slack_api.api_base_url))
    assert good.test_all() == [("Telegram", None), ("Slack", None)]
    assert telegram_api.messages[0]["plain_text"].startswith("🔔 Test · octo/widgets")
    assert slack_api.messages[0]["rendered"].startswith("🔔 *Test* · octo/widgets")

    wrong_place = Notifications.from_config(chat_config(
        telegram_api.api_base_url, slack_api.api_base_url, telegram_chat="777", slack_channel="C0NOWHERE",
    ))
    assert wrong_place.test_all() == [("Telegram", "Telegram: chat not found"), ("Slack", "Slack: channel_not_found")]


def test_unreachable_services_do_not_hold_up_the_run(caplog):
    port = closed_port()
    notifications = Notifications.from_config(
        chat_config(f"http://127.0.0.1:{port}/bot", f"http://127.0.0.1:{port}/api/"), timeout=3
    )
    started = time.monotonic()

    notifications.notify(make_event("error", reason="boom"))

    assert time.monotonic() - started < 15  # sanity only: a refused connection fails at once
    messages = sorted(r.getMessage() for r in warnings_logged(caplog))
    assert len(messages) == 2
    assert "Slack: cannot reach the API" in messages[0] and "Telegram: cannot reach the API" in messages[1]


@pytest.mark.slow  # waits out a real timeout
def test_a_hung_service_is_given_up_within_the_timeout(silent_server, caplog):
    url = f"http://127.0.0.1:{silent_server.port}"
    notifications = Notifications.from_config(chat_config(f"{url}/bot", f"{url}/api/"), timeout=2)
    started = time.monotonic()

    notifications.notify(make_event("started"))

    assert time.monotonic() - started < 15  # sanity only
    assert sorted(r.getMessage() for r in warnings_logged(caplog)) == [
        "Started notification for octo/widgets#12 not sent: Slack: no answer within 2 s",
        "Started notification for octo/widgets#12 not sent: Telegram: no answer within 2 s",
    ]


# ------------------------------------------------------------------------------------------------
# Configuration and cost of an idle tick
# ------------------------------------------------------------------------------------------------


def test_only_configured_notifiers_are_built(slack_api):
    assert Notifications.from_config(chat_config(slack_url=slack_api.api_base_url)).names == ["Slack"]
    nobody = Notifications.from_config(chat_config())
    assert nobody.names == [] and nobody.test_all() == []
    nobody.notify(make_event("started"))


def test_an_idle_tick_imports_no_chat_library():
    code = (
        "import sys, types\n"
        "from lib.notifications import Event, Notifications\n"
        "Notifications.from_config(types.SimpleNamespace(github_repo='o/r')).notify(Event('started', 'o/r', 1))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('telegram', 'slack_sdk', 'httpx')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------
# The stand-ins answer like the real APIs
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, parse_mode, status, description", [
    ("x" * 4097, None, 400, "Bad Request: message is too long"),
    ("<b>" + "x" * 4096 + "</b>", "HTML", 200, None),  # the limit counts the text after parsing
    ("hi <script>x</script>", "HTML", 400, "Bad Request: can't parse entities: Unsupported start tag \"script\""),
    ("a & b", "HTML", 400, "Bad Request: can't parse entities: Unsupported HTML entity or unescaped \"&\""),
    ("a &nbsp; b", "HTML", 400, "Bad Request: can't parse entities: Unsupported HTML entity"),
    ("1 < 2", "HTML", 400, "Bad Request: can't parse entities: Unclosed start tag"),
    ("x <y> z", "HTML", 400, "Bad Request: can't parse entities: Unsupported start tag \"y\" at byte offset 2"),
    ("<b>open", "HTML", 400, "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\""),
    ("<b><i>x</b></i>", "HTML", 400, "Bad Request: can't parse entities: Unmatched end tag"),
    ("<b>1 &lt; 2 &amp;&amp; 3 &gt; 2 &#127881;</b>", "HTML", 200, None),
])
def test_telegram_stand_in_parses_like_telegram(telegram_api, text, parse_mode, status, description):
    data = {"chat_id": TELEGRAM_CHAT_ID, "text": text, **({"parse_mode": parse_mode} if parse_mode else {})}
    answer = httpx.post(f"{telegram_api.api_base_url}{TELEGRAM_TOKEN}/sendMessage", data=data)
    assert answer.status_code == status
    if description:
        assert answer.json()["ok"] is False and answer.json()["error_code"] == status
        assert answer.json()["description"].startswith(description)
    else:
        assert answer.json()["result"]["text"] in ("x" * 4096, "1 < 2 && 3 > 2 🎉")


@pytest.mark.parametrize("token, chat_id, status, description", [
    (WRONG_TELEGRAM_TOKEN, TELEGRAM_CHAT_ID, 401, "Unauthorized"),
    ("not-a-token", TELEGRAM_CHAT_ID, 404, "Not Found"),
    (TELEGRAM_TOKEN, "777", 400, "Bad Request: chat not found"),
])
def test_telegram_stand_in_rejects_wrong_tokens_and_chats(telegram_api, token, chat_id, status, description):
    answer = httpx.post(f"{telegram_api.api_base_url}{token}/sendMessage", data={"chat_id": chat_id, "text": "hi"})
    assert (answer.status_code, answer.json()) == (
        status, {"ok": False, "error_code": status, "description": description}
    )


def test_slack_stand_in_validates_blocks_like_slack(slack_api):
    client = WebClient(token=SLACK_TOKEN, base_url=slack_api.api_base_url, retry_handlers=[])
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "ok"}}
    cases = [
        (dict(text="t", blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]),
         "invalid_blocks", "must be less than 3001 characters [json-pointer:/blocks/0/text/text]"),
        (dict(text="t", blocks=[section] * 51),
         "invalid_blocks", "no more than 50 items allowed [json-pointer:/blocks]"),
        (dict(channel="C0NOWHERE", text="t"), "channel_not_found", None),
    ]
    for kwargs, error, detail in cases:
        with pytest.raises(SlackApiError) as raised:
            client.chat_postMessage(**{"channel": SLACK_CHANNEL_ID, **kwargs})
        assert raised.value.response.status_code == 200 and raised.value.response["error"] == error
        assert detail is None or raised.value.response["errors"] == [detail]
    with pytest.warns(UserWarning, match="`text` argument is missing"), pytest.raises(SlackApiError) as raised:
        client.chat_postMessage(channel=SLACK_CHANNEL_ID, blocks=[section])
    assert raised.value.response["error"] == "no_text"
    with pytest.raises(SlackApiError) as raised:
        WebClient(token=WRONG_SLACK_TOKEN, base_url=slack_api.api_base_url).chat_postMessage(
            channel=SLACK_CHANNEL_ID, text="t")
    assert raised.value.response["error"] == "invalid_auth"
    assert slack_api.messages == []


def test_slack_formatting_escapes_control_characters():
    text, blocks = format_blocks(make_event("needs_input", title="<@U123> & <!here>", question="x > y"))
    assert "&lt;@U123&gt; &amp; &lt;!here&gt;" in text
    assert blocks[1]["text"] == {"type": "plain_text", "text": "&lt;@U123&gt; &amp; &lt;!here&gt;", "emoji": True}
    assert {"type": "plain_text", "text": "x &gt; y", "emoji": True} in [b.get("text") for b in blocks]
