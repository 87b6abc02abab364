"""A question's answers: trusted replies on GitHub, and answers from a chat posted there by us.

An answer taken from Telegram or Slack (lib/chat_inbox.py) is posted on the issue, which stays the
record: a comment of the orchestrator's own that says who answered and from where, keyed with the
hidden marker (so it is posted once, and never read as a person's reply). Its id goes into the state
entry's `chat_answers`, and only an id there makes a comment a chat answer. A stranger who writes the
same text, marker included, gets nowhere: their comment's id is in no state entry (only the
orchestrator writes the state), and a comment that holds the marker is nobody's reply.

The resume reads a chat answer back from its comment, as the person wrote it, and hands it to the
session in the same prompt and within the same limits as a reply on GitHub (lib/prompts.build_reply).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from lib.comments import keyed, quote_for_markdown
from lib.github_client import Trust
from lib.models import IssueState, IssueStatus

SERVICE_NAMES = {"telegram": "Telegram", "slack": "Slack"}
#: GitHub refuses a comment body longer than this many characters.
GITHUB_COMMENT_CHARS = 65_536
#: Chat questions and chat answers an entry keeps (the newest).
KEPT_QUESTIONS, KEPT_ANSWERS = 10, 20
NAME_CHARS = 100


def asked_in_chat(entry: IssueState, sent: Mapping[str, Tuple[str, str]]) -> List[Dict[str, Any]]:
    """The entry's chat questions with the messages that just asked its open question: `sent` is
    what Notifications.notify returned, service -> (chat, message id)."""
    asked = [{"service": service, "chat": chat, "id": message_id, "question": entry.question_comment_id}
             for service, (chat, message_id) in sorted(sent.items())]
    return [*entry.chat_questions, *asked][-KEPT_QUESTIONS:]


def is_open(entry: IssueState, question: Mapping[str, Any]) -> bool:
    """The chat message `question` asked the question the entry still waits an answer for."""
    return entry.status == IssueStatus.NEEDS_INPUT and question.get("question") == entry.question_comment_id \
        and entry.question_comment_id is not None


def chat_answer_to_open_question(entry: IssueState) -> Optional[Dict[str, Any]]:
    """The chat answer taken for the open question, if one was (comment ids grow: it is after the question)."""
    return next((answer for answer in reversed(entry.chat_answers)
                 if entry.question_comment_id is not None and answer["comment"] > entry.question_comment_id), None)


def answered(entry: IssueState, comment: Mapping[str, Any], service: str, who: str) -> List[Dict[str, Any]]:
    """The entry's chat answers with `comment`, the one just posted."""
    return [*entry.chat_answers, {"comment": comment["id"], "service": service, "who": who}][-KEPT_ANSWERS:]


def chat_answer_comment(service: str, who: str, user: str, text: str, key: str) -> Tuple[str, int]:
    """The comment that carries an answer from a chat (to be posted keyed with `key`), and how many of
    the answer's characters it leaves out to fit in a GitHub comment (0: none). `who` and `text` are
    the person's: the name goes into a code span (no Markdown, HTML or mention there), the text into
    an inert quote."""
    name = " ".join(re.sub(r"[`\x00-\x1f\x7f]", " ", who).split())[:NAME_CHARS] or "someone"
    service_name = SERVICE_NAMES[service]
    head = f"💬 **Answer from {service_name}**, by `{name}` ({service_name} user {user}):"
    text = text.strip()
    limit = len(text)
    while True:
        note = "" if limit >= len(text) else (
            f"\n\n_The answer is cut here: {len(text) - limit:,} of its {len(text):,} characters are left out,"
            f" to fit in a GitHub comment ({GITHUB_COMMENT_CHARS:,} characters at most)._")
        body = f"{head}\n\n{quote_for_markdown(text, limit=limit)}{note}"
        size = len(keyed(body, key))
        if size <= GITHUB_COMMENT_CHARS:
            return body, len(text) - limit
        # Escaping makes the quote longer than the text: shrink in proportion until it fits.
        limit = min(limit - 1, int(limit * (GITHUB_COMMENT_CHARS - 500) / size))


def answer_text(body: str) -> str:
    """The answer a chat-answer comment quotes, as the person wrote it (undoing quote_for_markdown)."""
    lines = [line[2:] if line.startswith("> ") else line[1:] for line in body.split("\n") if line.startswith(">")]
    text = "\n".join(lines).replace("@\u200b", "@")
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def replies_to_question(trust: Trust, entry: IssueState) -> List[Dict[str, Any]]:
    """The answers to the entry's open question, oldest first: trusted comments after it on GitHub,
    and the chat answers we posted there, each as a comment lib/prompts reads."""
    if entry.question_comment_id is None:
        return []
    asked_on = entry.question_number or entry.issue_number  # a follow-up asks on its pull request
    return _readable(trust.human_comments(asked_on, after_id=entry.question_comment_id,
                                          ours=[answer["comment"] for answer in entry.chat_answers]), entry)


def trusted_thread(trust: Trust, number: int, entry: IssueState) -> List[Dict[str, Any]]:
    """Every trusted comment on the issue, chat answers included: a fresh session's whole thread."""
    return _readable(trust.human_comments(number, ours=[answer["comment"] for answer in entry.chat_answers]), entry)


def _readable(comments: List[Dict[str, Any]], entry: IssueState) -> List[Dict[str, Any]]:
    """Chat answers as their author wrote them, named as the chat names them; other comments as they are."""
    by_id = {answer["comment"]: answer for answer in entry.chat_answers}
    readable = []
    for comment in comments:
        answer = by_id.get(comment["id"])
        if answer is None:
            readable.append(comment)
            continue
        readable.append({**comment, "body": answer_text(comment.get("body") or ""),
                         "author": f"{answer['who']} (from {SERVICE_NAMES.get(answer['service'], 'a chat')})"})
    return readable
