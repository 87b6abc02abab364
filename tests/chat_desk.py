"""`Desk`: an installation without runners, for answers from the chats: a state store, the GitHub
emulator, both chat stand-ins and a config tying them. `ask` asks a question as a runner asks it
(its comment, its entry, its notification in both chats); `read` reads the chats as a tick does.
Used by tests/test_chat_answers.py and bench/bench_chat.py.
"""

from __future__ import annotations

from pathlib import Path

from chat_standins import SLACK_CHANNEL_ID, SLACK_TOKEN, TELEGRAM_CHAT_ID, TELEGRAM_TOKEN
from github_emulator import REPO, TOKEN
from lib.answers import asked_in_chat, replies_to_question
from lib.chat_inbox import ChatInbox
from lib.comments import post_once
from lib.config import Config
from lib.events import Event
from lib.models import IssueState, IssueStatus, utc_now_iso
from lib.notifications import Notifications
from lib.orchestrator import IssueOrchestrator
from lib.state_manager import issue_key

MAINTAINER = "maintainer"
BOB = "U0BOB1234"  # a Slack member listed in slack.allowed_user_ids by default


class Desk:
    """An installation without runners: a state file, the GitHub emulator, both chat stand-ins and a
    config tying them. `ask` asks a question as a runner does; `read` reads the chats as a tick does."""

    def __init__(self, root: Path, github, telegram, slack, repos=(REPO,), telegram_ids=(111,), slack_ids=(BOB,),
                 store=None):
        self.github, self.telegram, self.slack, self.store = github, telegram, slack, store
        github.set_role(MAINTAINER, "maintain")
        for repo in repos[1:]:
            github.add_repo(repo)
        self.settings = {
            "github": {"token": TOKEN, "base_repo_path": str(root / "slots"), "api_url": github.url},
            "repositories": [{"repo": repo} for repo in repos],
            "telegram": {"bot_token": TELEGRAM_TOKEN, "chat_id": TELEGRAM_CHAT_ID,
                         "api_base_url": telegram.api_base_url, "allowed_user_ids": list(telegram_ids)},
            "slack": {"bot_token": SLACK_TOKEN, "channel_id": SLACK_CHANNEL_ID, "api_base_url": slack.api_base_url,
                      "allowed_user_ids": list(slack_ids)},
            # Not the bound under test: eight replies on a loaded 2-core box can take more than 2 s.
            "notification_timeout_seconds": 10, "state_file": "state/processing-state.json"}
        self.root = root
        self.reload()

    def reload(self, **changes) -> None:
        """Merge `changes` (section -> dict, or key -> value) into the settings, and load them again."""
        for key, value in changes.items():
            if isinstance(value, dict):
                self.settings[key].update(value)
            else:
                self.settings[key] = value
        self.config = Config.from_dict(self.settings, self.root)
        self.tick = IssueOrchestrator(self.config, state=self.store)  # None: the config's state file

    @property
    def state(self):
        return self.tick.state

    def ask(self, title: str = "Pick a colour", repo: str = REPO, question: str = "Red or blue?") -> IssueState:
        """An issue whose agent asked `question`: its comment, its entry, its notification in both chats."""
        number = self.github.add_issue(title, "Which colour?", repo=repo)
        comment = post_once(self.tick.github(repo), number, f"question:1:{number}", f"Question: {question}")
        entry = IssueState(number, IssueStatus.NEEDS_INPUT, f"issue-{number}", utc_now_iso(), session_id="s-1",
                           repo=repo, title=title, question=question, question_comment_id=comment["id"],
                           end_time=utc_now_iso())
        self.state.put(entry)
        sent = Notifications.from_config(self.config).notify(Event(kind="needs_input", repo=repo, issue_number=number,
                                                                   title=title, question=question))
        assert set(sent) == {"telegram", "slack"}, sent
        return self.state.update(issue_key(entry), chat_questions=asked_in_chat(entry, sent))

    def entry(self, asked: IssueState) -> IssueState:
        return self.state.get(issue_key(asked))

    def message_of(self, asked: IssueState, service: str) -> str:
        """The chat message (Telegram: its id; Slack: its ts) that asked the question of `asked`."""
        return next(q["id"] for q in self.entry(asked).chat_questions if q["service"] == service)

    def read(self) -> None:
        ChatInbox(self.config, self.state, self.tick.github, self.tick.trust).read()

    def comments(self, asked: IssueState):
        return [c["body"] for c in self.github.comments(asked.issue_number, repo=asked.repo)]

    def answers(self, asked: IssueState):
        """What resuming the session would read: the replies to its question, as the runner reads them (and
        the tick's reconcile asks whether there are any: lib/reconcile.py)."""
        entry = self.entry(asked)
        return replies_to_question(self.tick.trust(entry.repo), entry)

    def told(self, service: str):
        """What the bot said in `service` after the question notifications (plain, as shown)."""
        if service == "telegram":
            return [m["plain_text"] for m in self.telegram.messages if not m["plain_text"].startswith("⏳")]
        return [m["rendered"] for m in self.slack.messages if m["thread_ts"]]
