"""The cron tick: reconcile state, poll GitHub, claim issues, spawn detached runners, exit.

A tick never waits for an agent (unless asked to with --wait): every slow step (clone, setup.sh,
Claude itself, push, pull request) happens in a runner process per issue, started in its own
session so it outlives the tick. Ticks on one machine are serialized by a non-blocking flock.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Dict, List, Optional, Set

from lib.answers import replies_to_question
from lib.chat_inbox import ChatInbox
from lib.comments import post_once, refused_model_comment
from lib.config import Config, label_specs
from lib.executors import executor_for
from lib.costs import ceilings
from lib.events import Event
from lib.files import exclusive_lock, writable
from lib.github_client import GitHubClient, GitHubError, RateLimitError, Trust
from lib.labels import show_status
from lib.ledger import RunHistory
from lib.models import IssueState, OrchestratorError, IssueStatus, fault_point, parse_iso, utc_now_iso
from lib.notifications import Notifications
from lib.processes import end_session_processes, live_process, process_alive, terminate_tree
from lib.pull_watch import look_at_each
from lib.repo_manager import NETWORK_TIMEOUT
from lib.retention import prune_if_due
from lib.routing import label_names, model_choice, queue_order, rank, routing_labels
from lib.lifecycle import FINALIZE, FOLLOW, RESUME, RUN
from lib.sandbox import unavailable
from lib.state_manager import State, StateStore, key_text, issue_key

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED = 0, 1

#: A runner past its agent's timeout by this much is considered hung and is ended by the tick.
RUNNER_HANG_GRACE_SECONDS = 300


@dataclass
class TickSummary:
    """What one tick did; its exit code comes from here."""

    # Issues as their logs name them: "#N", or "owner/name#N" with several repositories.
    launched: List[str] = field(default_factory=list)
    finalizing: List[str] = field(default_factory=list)
    cancelled: List[str] = field(default_factory=list)
    resumed: List[str] = field(default_factory=list)
    followed_up: List[str] = field(default_factory=list)  # follow-ups started on pull requests
    queued: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    lock_held: bool = False
    rate_limited_until: Optional[datetime] = None

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.errors else EXIT_OK

    def line(self) -> str:
        if self.lock_held:
            return "Another tick is running (orchestrator.lock is held); nothing to do."
        parts = [f"{len(self.launched)} launched"]
        for name in ("followed_up", "resumed", "finalizing", "cancelled", "queued", "skipped"):
            count = len(getattr(self, name))
            if count:
                parts.append(f"{count} {name.replace('_', ' ')}")
        if self.rate_limited_until:
            parts.append(f"rate limited until {self.rate_limited_until.astimezone():%H:%M}")
        parts.append(f"{len(self.errors)} error{'s' if len(self.errors) != 1 else ''}")
        return "Tick done: " + ", ".join(parts)


class IssueOrchestrator:
    """One tick of the orchestrator. `IssueOrchestrator(config).run()` as cron calls it."""

    def __init__(self, config: Config, *, state: Optional[StateStore] = None, dry_run: bool = False):
        self.config = config
        self.dry_run = dry_run
        self.state = state or StateStore.for_config(config)
        self.executor = executor_for(config, self.state)
        self.history = RunHistory.for_config(config, self.state)
        self._clients: Dict[str, GitHubClient] = {}
        self._trust: Dict[str, Trust] = {}
        self.capped: Set[str] = set()  # repositories whose spend ceiling is reached: no new run this tick
        self._no_sandbox: Optional[str] = None  # why no agent may start here, once asked

    def github(self, repo: str) -> GitHubClient:
        """One client per repository; they share one poll cache file (its entries are per URL)."""
        if repo not in self._clients:
            self._clients[repo] = GitHubClient(self.config.github_token, repo, self.config.api_url,
                                               poll_cache_file=None if self.dry_run else self.config.poll_cache_file)
        return self._clients[repo]

    def trust(self, repo: str) -> Trust:
        """Roles are per repository: a maintainer of one may be nobody in another."""
        if repo not in self._trust:
            self._trust[repo] = Trust(self.github(repo), self.config.trusted_roles, self.config.allowed_users)
        return self._trust[repo]

    def ref(self, repo: Optional[str], number: int) -> str:
        """How logs name an issue: `#N` with one repository, `owner/name#N` with several."""
        return f"{repo}#{number}" if self.config.multi_repo else f"#{number}"

    # ------------------------------------------------------------------------------------------
    # The tick
    # ------------------------------------------------------------------------------------------

    def run(self) -> TickSummary:
        summary = TickSummary()
        with exclusive_lock(self.config.lock_file, wait=False, note_pid=True) as acquired:
            if not acquired:
                summary.lock_held = True
                log.info(summary.line())
                return summary
            if not self.dry_run:
                # Runners write their logs there: without it no run could be followed or judged.
                ok, why = writable(self.config.log_dir)
                if not ok:
                    raise OrchestratorError(f"Cannot write the log folder (log_dir): {why}")
                self.state.verify()
                self.executor.check()  # a broker that is down: one line now, and nothing half claimed
            try:
                if not self.dry_run:  # answers from Telegram and Slack go on the issues before reconcile looks
                    ChatInbox(self.config, self.state, self.github, self.trust).read()
                self.reconcile(summary)
                self.poll_and_claim(summary)
            except RateLimitError as exc:  # the token's limit: every repository waits for it
                summary.rate_limited_until = exc.reset_at  # the summary line says it, once
            if not self.dry_run:
                prune_if_due(self.config, self.state)  # at most once a day; a failure is a warning
        log.info(summary.line())
        return summary

    # --- reconcile ----------------------------------------------------------------------------

    def reconcile(self, summary: TickSummary) -> None:
        """Bring every active entry in line with reality before claiming anything new."""
        for entry in self.state.load_state().active():
            try:
                self._reconcile_entry(entry, summary)
            except RateLimitError:
                raise
            except (GitHubError, OSError) as exc:
                summary.errors.append(f"{self.ref(entry.repo, entry.issue_number)}: {exc}")
                log.error("Issue %s: could not reconcile: %s", self.ref(entry.repo, entry.issue_number), exc)

    def _reconcile_entry(self, entry: IssueState, summary: TickSummary) -> None:
        ref = self.ref(entry.repo, entry.issue_number)
        runner_alive = self.executor.alive(entry)

        if entry.status == IssueStatus.PENDING and not runner_alive and self._never_started(entry):
            # Claims and spawns happen under the tick lock we hold now: the claiming tick died.
            log.warning("Issue %s was claimed but its runner never started; starting it now", ref)
            self._spawn(entry, RUN, summary.launched)
            return

        issue = self.github(entry.repo).get_issue_cached(entry.issue_number)
        labels = set(label_names(issue))
        # A runner that died right after swapping in its outcome label took `working` off itself.
        finished_by_us = bool(labels & {self.config.labels.completed, self.config.labels.failed})
        if issue.get("state") == "closed" or (self.config.labels.working not in labels and not finished_by_us):
            why = _why_withdrawn(issue, self.config.labels.working)
            self._cancel(entry, why, runner_alive, summary)
            return

        if entry.status == IssueStatus.NEEDS_INPUT:
            self._reconcile_waiting_for_input(entry, summary)
            return

        claude = self.config.repository(entry.repo).claude
        if runner_alive:
            if self.executor.local and entry.runner_create_time and time.time() - entry.runner_create_time > self._runner_age_limit(claude):
                log.error("Issue %s: runner %s is past every timeout; ending it", ref, entry.runner_pid)
                self._end_processes(entry)
                self._spawn(entry, FINALIZE, summary.finalizing,
                            reason=f"timed out after {claude.timeout_seconds:g} s"
                                   " (claude.timeout_seconds); the runner hung")
            return

        # The runner is gone (killed, crashed, machine restarted) but the entry still says active.
        self._end_processes(entry)
        log.warning("Issue %s: runner %s is gone; finalizing from its stream log", ref,
                    entry.runner_pid if self.executor.local else f"on {entry.host}")
        self._spawn(entry, FINALIZE, summary.finalizing, reason="lost")

    def _never_started(self, entry: IssueState) -> bool:
        """No runner took the claim: its tick died before the dispatch, or no task was delivered."""
        return entry.runner_pid is None if self.executor.local else entry.host is None

    def _runner_age_limit(self, claude) -> float:
        """How long a runner may live: every run it may make (a retry after a crash, a fresh session
        after a lost one) with its git network calls, setup.sh and Claude's own timeout."""
        one_run = 2 * NETWORK_TIMEOUT + self.config.setup_timeout_seconds + claude.timeout_seconds
        return one_run * (claude.max_retries + 2) + RUNNER_HANG_GRACE_SECONDS

    def _reconcile_waiting_for_input(self, entry: IssueState, summary: TickSummary) -> None:
        """A question is open: resume on a trusted reply, or give up after input_wait_hours."""
        ref = self.ref(entry.repo, entry.issue_number)
        asked = parse_iso(entry.end_time or entry.updated_at)
        waited = (datetime.now(timezone.utc) - asked).total_seconds() if asked else 0
        reply = self._trusted_reply(entry)
        paused_until = self.state.load_state().paused_until() if reply else None
        if paused_until:
            log.info("Issue %s: a trusted reply waits until launches resume at %s", ref,
                     paused_until.astimezone().strftime("%H:%M"))
        elif reply and self.agents_refused(summary):
            log.info("Issue %s: a trusted reply waits until the sandbox can start", ref)
        elif reply:
            log.info("Issue %s: a trusted reply came; resuming session %s", ref, entry.session_id)
            self._spawn(entry, RESUME, summary.resumed)
        elif waited > self.config.claude.input_wait_hours * 3600:
            self._spawn(entry, FINALIZE, summary.finalizing,
                        reason=f"no answer came within {self.config.claude.input_wait_hours:g} hours"
                               " (claude.input_wait_hours)")

    def _trusted_reply(self, entry: IssueState) -> bool:
        return bool(replies_to_question(self.trust(entry.repo), entry))  # a chat answer is posted there too

    def _cancel(self, entry: IssueState, why: str, runner_alive: bool, summary: TickSummary) -> None:
        """A human stopped the work: end the agent; the runner (or a finalize runner) saves the work."""
        ref = self.ref(entry.repo, entry.issue_number)
        summary.cancelled.append(ref)
        if self.dry_run:
            log.info("[dry-run] would stop issue %s: %s", ref, why)
            return
        log.info("Issue %s: stopping its agent: %s", ref, why)
        if runner_alive:
            # The runner polls this flag every check_interval, stops Claude and finalizes as cancelled.
            self.state.update(issue_key(entry), cancel_reason=why)
            if self.executor.local:  # a runner on another host reads the flag from the shared state
                self._signal_runner(entry)
        else:
            self._end_processes(entry)
            self.state.update(issue_key(entry), cancel_reason=why)
            self._spawn(entry, FINALIZE, [], reason="cancelled")

    @staticmethod
    def _signal_runner(entry: IssueState) -> None:
        runner = live_process(entry.runner_pid, entry.runner_create_time)
        if runner is not None:
            runner.send_signal(signal.SIGTERM)

    def _end_processes(self, entry: IssueState) -> None:
        """End whatever is left of a run: its Claude process tree and a hung runner. (In the Celery mode
        pids name processes of another host: the runner's host ends its own agent, see celery_app.)"""
        if self.dry_run or not self.executor.local:
            return
        grace = self.config.claude.kill_grace_seconds
        # The runner first: were Claude ended first, a live runner would take that for a crash and retry.
        for pid, created in ((entry.runner_pid, entry.runner_create_time),
                             (entry.claude_pid, entry.claude_create_time)):
            if process_alive(pid, created):
                terminate_tree(pid, grace_seconds=grace, create_time=created)
        if entry.session_id:  # tools of a Claude that died by SIGKILL outlive it, reparented away
            end_session_processes(entry.session_id, grace)

    # --- poll and claim -----------------------------------------------------------------------

    def ensure_labels(self, repo: str) -> None:
        """Create the lifecycle labels once per repository and set of names (remembered in the meta)."""
        specs = label_specs(self.config)
        ensured = self.state.load_state().meta.get("labels_ensured")
        if self.dry_run or (isinstance(ensured, dict) and ensured.get(repo) == sorted(specs)):
            return
        created = self.github(repo).ensure_labels(specs)
        if created:
            log.info("Created labels in %s: %s", repo, ", ".join(created))
        with self.state.transaction() as state:
            if not isinstance(state.meta.get("labels_ensured"), dict):
                state.meta["labels_ensured"] = {}
            state.meta["labels_ensured"][repo] = sorted(specs)

    def poll(self, summary: TickSummary) -> Dict[str, List[dict]]:
        """Every repository's issues labeled ready, each poll conditional; a repository that fails is
        one error line and the others go on."""
        polled = {}
        for repository in self.config.repositories:
            try:
                self.ensure_labels(repository.repo)
                polled[repository.repo] = self.github(repository.repo).list_issues_with_label(self.config.labels.ready)
            except RateLimitError:
                raise
            except GitHubError as exc:
                summary.errors.append(f"{repository.repo}: {exc}")
                log.error("%s: could not poll: %s", repository.repo, exc)
        return polled

    def poll_and_claim(self, summary: TickSummary) -> None:
        polled = self.poll(summary)
        self.capped = self.spend_ceilings()
        state = self.state.load_state()
        waiting = [(repo, issue) for repo, issues in polled.items() for issue in issues]
        followed = any(entry.following for entry in state.issues.values())
        if (waiting or followed) and self.agents_refused(summary):
            summary.queued.extend(self.ref(repo, issue["number"]) for repo, issue in waiting)
            return
        if self.config.follow_up.enabled and not state.paused_until():
            # A follow-up finishes work already started: it goes before any new issue.
            self.follow_pull_requests(state, summary)
            state = self.state.load_state()
        for repo, issues in polled.items():
            labeled = {issue["number"] for issue in issues}
            self._withdraw_waiting(state, repo, labeled, summary)
            self._forget_untrusted_verdicts(state, repo, labeled)
        paused_until = state.paused_until()
        if paused_until:
            if waiting:
                log.info("Launches paused until %s (usage limit); %d issue(s) wait",
                         paused_until.astimezone().strftime("%H:%M"), len(waiting))
                summary.queued.extend(self.ref(repo, issue["number"]) for repo, issue in waiting)
            return
        now = datetime.now(timezone.utc)
        queue = []
        for repo, issue in waiting:
            known = state.issues.get((repo, issue["number"]))
            if known and known.is_active:
                continue  # claimed earlier; the label swap did not land yet
            not_before = parse_iso(known.not_before) if known else None
            if (not_before and not_before > now) or repo in self.capped:
                summary.queued.append(self.ref(repo, issue["number"]))
                continue
            queue.append((repo, issue, known))
        self._claim_in_order(queue, state, summary)
        if summary.queued:
            log.info("%d issue(s) wait for a free slot or their retry time: %s", len(summary.queued),
                     ", ".join(summary.queued))

    def agents_refused(self, summary: TickSummary) -> bool:
        """Fail closed: where no sandbox can be built no agent starts; the tick says why once (with the
        fix) and counts it as its error. Asked at most once a tick, and only when an agent would start."""
        if self._no_sandbox is None:
            self._no_sandbox = unavailable(self.config.sandbox) or ""
            if self._no_sandbox:
                log.error("No agent starts: %s", self._no_sandbox)
                summary.errors.append(self._no_sandbox)
        return bool(self._no_sandbox)

    def _claim_in_order(self, queue: list, state: State, summary: TickSummary) -> None:
        """Claim by rank, then age, within each repository's cap and the machine's max_agents. Who
        applied the routing labels is asked only when a slot could take the issue."""
        has_room = any(self._room(state, self.config.repository(repo)) for repo, _, _ in queue)
        trusted = {(repo, issue["number"]): self._trusted_routing(repo, issue) if has_room else set()
                   for repo, issue, _ in queue}
        ranked = queue_order((repo, issue, rank(issue, self.config.labels, trusted[(repo, issue["number"])]))
                             for repo, issue, _ in queue)
        known_by_key = {(repo, issue["number"]): known for repo, issue, known in queue}
        for repo, issue, _ in ranked:
            key = (repo, issue["number"])
            ref = self.ref(*key)
            repository = self.config.repository(repo)
            if not self._room(state, repository):
                # Checked before trust: a full house must not cost one events request per queued issue.
                summary.queued.append(ref)
                continue
            known = known_by_key[key]
            # A requeued issue got its label back from us; its first claim passed the trust check.
            requeued = known is not None and known.status == IssueStatus.WAITING
            if not requeued and not self._labeled_by_trusted_user(repo, issue, state):
                summary.skipped.append(ref)
                continue
            choice = model_choice(issue, self.config.labels, trusted[key])
            if choice.refused:
                self._refuse_model_label(repo, issue, choice.refused, summary)
                continue
            if self._claim(repository, issue, choice.model) is not None:
                summary.launched.append(ref)
                state = self.state.load_state()

    def follow_pull_requests(self, state: State, summary: TickSummary) -> None:
        """The followed pull requests, each repository's surveyed at once (lib/pull_watch.py): merged or
        closed ends the following; new trusted feedback, a conflict with the base or a failing check
        starts a follow-up in a free slot (else it waits for the next tick)."""
        followed = [e for e in state.issues.values() if e.following and e.pr_number and e.is_finished]
        repository = self.config.repository  # an entry of a repository no longer configured is an error line
        for entry, news in look_at_each(followed, lambda repo: self.github(repository(repo).repo), self.trust,
                                        self.config.follow_up, self.dry_run):
            ref = self.ref(entry.repo, entry.issue_number)
            if isinstance(news, str):
                summary.errors.append(f"{ref}: {news}")
                log.error("Issue %s: could not look at its pull request: %s", ref, news)
            elif self.dry_run:
                log.info("[dry-run] issue %s: %s", ref, news.ended or (news.work and "a follow-up") or "nothing new")
            elif news.ended:
                log.info("Issue %s: its pull request was %s; following it ends", ref, news.ended)
                self.state.update(issue_key(entry), status=news.ended, following=False, **news.changes)
            elif news.bound:
                post_once(self.github(entry.repo), entry.pr_number, "follow-bound",
                          f"Claude Code follows this pull request no more: {news.bound}.")
                self.state.update(issue_key(entry), following=False, **news.changes)
            elif news.work and entry.repo not in self.capped and self._room(self.state.load_state(),
                                                                             repository(entry.repo)):
                self._claim_follow_up(entry, repository(entry.repo), news, summary)
            elif news.work:
                summary.queued.append(ref)  # nothing is stored: the next tick finds the same work
            else:
                if news.notice:  # e.g. a conflict past its bound: a human is asked, once
                    post_once(self.github(entry.repo), entry.pr_number, *news.notice)
                if news.changes:
                    self.state.update(issue_key(entry), **news.changes)

    def spend_ceilings(self) -> Set[str]:
        """The repositories whose new runs (follow-ups too) wait: their spend ceiling, or the global
        one, is reached in its UTC day or month. Each reached ceiling is announced once per period."""
        found = ceilings(self.config, self.history)
        if not found:
            return set()
        every = {repository.repo for repository in self.config.repositories}
        reached = [ceiling for ceiling in found if ceiling.reached]
        capped: Set[str] = set()
        for ceiling in reached:
            capped |= every if ceiling.repo is None else {ceiling.repo}
            log.warning("Spend ceiling: %s", ceiling.sentence())
        if self.dry_run:
            return capped
        announced = self.state.load_state().meta.get("spend_announced") or []
        fresh = [ceiling for ceiling in reached if ceiling.key not in announced]
        # Keys of an earlier period go: the next time that ceiling is reached is announced again.
        kept = [key for key in announced if key in {ceiling.key for ceiling in found}] + [c.key for c in fresh]
        if kept != announced:
            with self.state.transaction() as state:
                state.meta["spend_announced"] = kept
        if fresh:
            notifications = Notifications.from_config(self.config)
            for ceiling in fresh:
                notifications.notify(Event(kind="spend_limit", repo=ceiling.repo or ", ".join(sorted(every)),
                                           reason=ceiling.sentence(), until=ceiling.end.isoformat()))
        return capped

    def _claim_follow_up(self, entry: IssueState, repository, news, summary: TickSummary) -> None:
        with self.state.transaction() as state:
            current = state.issues[issue_key(entry)]
            if current.is_active or not self._room(state, repository):
                return
            slot = self._slot(state, repository)
            current.status, current.slot, current.start_time = IssueStatus.PENDING, slot, utc_now_iso()
            current.follow_work = news.work
            for name, value in news.changes.items():
                setattr(current, name, value)
            current.end_time = current.error = current.runner_pid = None
            current.updated_at = utc_now_iso()
        ref = self.ref(entry.repo, entry.issue_number)
        log.info("Issue %s: a follow-up on its pull request (%s) claimed slot %s", ref, news.work["kind"], slot)
        self.show(entry.repo, entry.issue_number, IssueStatus.PENDING)
        self._spawn(current, FOLLOW, summary.followed_up)

    def _room(self, state: State, repository) -> bool:
        """A slot of this repository is free and the machine (or, in the Celery mode, every host
        together) runs fewer than max_agents."""
        if len(state.active()) >= self.config.max_agents:
            return False
        if self.executor.local:
            return state.free_slot(repository.repo, limit=repository.max_concurrent) is not None
        return len(state.active(repository.repo)) < repository.max_concurrent

    def _slot(self, state: State, repository) -> Optional[int]:
        """The slot a claim takes here; None in the Celery mode: the worker that takes the task picks
        a slot of its own host."""
        return state.free_slot(repository.repo, limit=repository.max_concurrent) if self.executor.local else None

    def _trusted_routing(self, repo: str, issue: dict) -> set:
        """The issue's routing labels (priority, model) that a trusted user applied."""
        found = set()
        for name in routing_labels(issue, self.config.labels):
            labeler = self.github(repo).last_labeler(issue["number"], name)
            if labeler and self.trust(repo)(labeler):
                found.add(name)
            else:
                log.warning("Issue %s: the %s label is ignored: %s applied it, who is not trusted",
                            self.ref(repo, issue["number"]), name, labeler or "an unknown user")
        return found

    def _refuse_model_label(self, repo: str, issue: dict, label: str, summary: TickSummary) -> None:
        """A model label that names no valid model: the issue waits, and says why once."""
        ref = self.ref(repo, issue["number"])
        summary.skipped.append(ref)
        log.warning("Issue %s: skipped: the label %r names no valid model", ref, label)
        if self.dry_run:
            return
        post_once(self.github(repo), issue["number"], f"model-label:{label}", refused_model_comment(
            label, self.config.labels.model_prefix))

    def _withdraw_waiting(self, state: State, repo: str, labeled: set, summary: TickSummary) -> None:
        """A requeued issue that was closed or lost its ready label while it waited is given up."""
        labels = self.config.labels
        for entry in list(state.issues.values()):
            if entry.repo != repo or entry.status != IssueStatus.WAITING or entry.issue_number in labeled:
                continue
            issue = self.github(repo).get_issue_cached(entry.issue_number)
            if issue.get("state") != "closed" and labels.working in label_names(issue):
                if not self.dry_run:  # our requeue could not swap the labels back: finish that swap
                    self.show(repo, entry.issue_number, IssueStatus.WAITING)
                continue
            why = _why_withdrawn(issue, labels.ready)
            ref = self.ref(repo, entry.issue_number)
            summary.cancelled.append(ref)
            log.info("Issue %s no longer waits for a launch: %s", ref, why)
            if not self.dry_run:
                self.state.update(issue_key(entry), status=IssueStatus.CANCELLED, not_before=None,
                                  error=f"withdrawn while queued: {why}", end_time=utc_now_iso())

    def _forget_untrusted_verdicts(self, state: State, repo: str, labeled: set) -> None:
        """Verdicts on issues no longer labeled ready are of no use: the state file stays small."""
        mine = {key for key in state.meta.get("untrusted", {}) if key.rpartition("#")[0] == repo}
        stale = mine - {key_text((repo, number)) for number in labeled}
        if self.dry_run or not stale:
            return
        with self.state.transaction() as fresh:
            verdicts = fresh.meta.get("untrusted", {})
            fresh.meta["untrusted"] = {key: value for key, value in verdicts.items() if key not in stale}

    def _labeled_by_trusted_user(self, repo: str, issue: dict, state: State) -> bool:
        number = issue["number"]
        key = key_text((repo, number))
        # An issue found untrusted is not asked about (nor logged) again until it changes (someone
        # labels it anew) or the trust settings do.
        verdict_key = f"{issue.get('updated_at')} {sorted(self.config.trusted_roles)} " \
                      f"{sorted(self.config.allowed_users)}"
        if state.meta.get("untrusted", {}).get(key) == verdict_key:
            return False
        labeler = self.github(repo).last_labeler(number, self.config.labels.ready)
        if labeler and self.trust(repo)(labeler):
            return True
        log.warning("Issue %s: skipped: the %s label was applied by %s, whose role is not in"
                    " github.trusted_roles and who is not in github.allowed_users",
                    self.ref(repo, number), self.config.labels.ready, labeler or "an unknown user")
        if not self.dry_run:
            with self.state.transaction() as fresh:
                fresh.meta.setdefault("untrusted", {})[key] = verdict_key
        return False

    def _claim(self, repository, issue: dict, model: Optional[str]) -> Optional[IssueState]:
        """State entry first, then labels, then the runner: a crash between steps is recoverable."""
        number, repo = issue["number"], repository.repo
        ref = self.ref(repo, number)
        if self.dry_run:
            slot = self.state.load_state().free_slot(repo, limit=repository.max_concurrent)
            log.info("[dry-run] would claim issue %s (%s) for slot %s", ref, issue.get("title", ""), slot)
            return None
        with self.state.transaction() as state:
            previous = state.issues.get((repo, number))
            if previous is not None and previous.is_active:
                return None
            if not self._room(state, repository):
                return None
            slot = self._slot(state, repository)
            entry = IssueState(
                issue_number=number,
                status=IssueStatus.PENDING,
                branch=f"issue-{number}",
                start_time=utc_now_iso(),
                slot=slot,
                repo=repo,
                title=issue.get("title") or "",
                model=model,
                attempt=previous.attempt + 1 if previous else 1,
                requeues=previous.requeues if previous and previous.status == IssueStatus.WAITING else 0,
                updated_at=utc_now_iso(),
            )
            state.add(entry)
        fault_point("after-claim")
        log.info("Issue %s claimed for slot %s (attempt %s%s): %s", ref, slot, entry.attempt,
                 f", model {model}" if model else "", entry.title)
        self.show(repo, number, IssueStatus.PENDING)
        fault_point("after-label-swap")
        self._spawn(entry, RUN, [])
        return entry

    def show(self, repo: str, number: int, status: IssueStatus) -> None:
        """The labels of `status` on the issue (lib.labels)."""
        try:
            show_status(self.github(repo), self.config.labels, number, status)
        except GitHubError as exc:
            # The runner sets the labels again when it starts; the state entry already holds the claim.
            log.warning("Issue %s: could not update labels: %s", self.ref(repo, number), exc)

    # --- runners ------------------------------------------------------------------------------

    def _spawn(self, entry: IssueState, mode: str, bucket: List[str], reason: Optional[str] = None) -> None:
        ref = self.ref(entry.repo, entry.issue_number)
        bucket.append(ref)
        if self.dry_run:
            log.info("[dry-run] would start a %s runner for issue %s", mode, ref)
            return
        recorded = self.executor.dispatch(entry, mode, reason)
        if recorded:
            with self.state.transaction() as state:
                current = state.issues.get(issue_key(entry))
                if current is not None:
                    for name, value in recorded.items():
                        setattr(current, name, value)
                    current.updated_at = utc_now_iso()
        fault_point("after-spawn")
        log.info("Issue %s: %s runner started (%s)", ref, mode,
                 f"pid {recorded['runner_pid']}" if recorded else "a Celery task")

    def wait_for_runners(self, poll_seconds: float = 0.25, out=None) -> None:
        """Block until no runner of the issues active at the start lives, printing each status change (--wait)."""
        out = out or sys.stdout
        watched = sorted(issue_key(entry) for entry in self.state.load_state().active())
        last_status: Dict[tuple, str] = {}
        while True:
            self.executor.reap()
            issues = self.state.load()
            live_runner = False
            for key in watched:
                entry = issues.get(key)
                if entry is None:
                    continue
                if last_status.get(key) != entry.status:
                    last_status[key] = entry.status
                    detail = f": {entry.error}" if entry.error and not entry.is_active else ""
                    pr = f" {entry.pr_url}" if entry.pr_url else ""
                    print(f"{self.ref(*key)}: {entry.status}{detail}{pr}", file=out, flush=True)
                # A runner still ending (its notifications) is waited for, whatever the entry says already.
                live_runner = live_runner or self.executor.alive(entry)
            if not live_runner and not self.executor.children:
                return
            time.sleep(poll_seconds)


def _why_withdrawn(issue: dict, label: str) -> str:
    """Why a human took an issue out of our hands: it was closed, or `label` came off."""
    return "the issue was closed" if issue.get("state") == "closed" else f"the {label} label was removed"


if __name__ == "__main__":  # `python -m lib.orchestrator`, as the seed README runs it
    from lib.cli import main

    sys.exit(main(prog="python -m lib.orchestrator"))
