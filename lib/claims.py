"""A tick's second part: what is labeled `ready-for-claude`, and what is claimed of it.

* `poll`: every repository's labeled issues, each poll conditional (an unchanged one is a 304); a
  repository that fails is one error line and the others go on.
* Before any new issue, the followed pull requests (lib.pull_watch): merged or closed ends the
  following; trusted feedback, a conflict with the base or a failing check is a follow-up, claimed
  like an issue.
* Then the queue, across repositories: by priority rank, then age (lib.routing), within each
  repository's max_concurrent and the machine's max_agents, the spend ceilings (lib.costs) and a
  usage-limit pause. A label counts only when a trusted user applied it (asked only when a slot could
  take the issue; an untrusted verdict is remembered until the issue or the trust settings change).
* A claim is one state transaction (the entry, its slot, what its dispatch needs), then the labels,
  then the runner: a tick that dies between them leaves nothing a later tick cannot finish.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Dict, List, Optional, Set

from lib.config import label_specs
from lib.github_errors import GitHubError, RateLimitError
from lib.lifecycle import FOLLOW, RUN, IssueStatus
from lib.models import IssueState, fault_point, issue_ref, parse_iso, utc_now_iso
from lib.reconcile import why_withdrawn
from lib.routing import label_names, model_choice, queue_order, rank, routing_labels
from lib.state_manager import State, issue_key, key_text
from lib.tick import Tick

log = logging.getLogger("lib.orchestrator")


def poll_and_claim(tick: Tick) -> None:
    polled = poll(tick)
    tick.capped = spend_ceilings(tick)
    state = tick.state.load_state()
    waiting = [(repo, issue) for repo, issues in polled.items() for issue in issues]
    summary = tick.summary
    if (waiting or any(entry.following for entry in state.issues.values())) and tick.agents_refused():
        summary.queued.extend(issue_ref(repo, issue["number"]) for repo, issue in waiting)
        return
    if tick.config.follow_up.enabled and not state.paused_until():
        follow_pull_requests(tick, state)  # a follow-up finishes work already started: it goes first
        state = tick.state.load_state()
    for repo, issues in polled.items():
        labeled = {issue["number"] for issue in issues}
        _withdraw_waiting(tick, state, repo, labeled)
        _forget_untrusted_verdicts(tick, state, repo, labeled)
    paused_until = state.paused_until()
    if paused_until:
        if waiting:
            log.info("Launches paused until %s (usage limit); %d issue(s) wait",
                     paused_until.astimezone().strftime("%H:%M"), len(waiting))
            summary.queued.extend(issue_ref(repo, issue["number"]) for repo, issue in waiting)
        return
    now = datetime.now(timezone.utc)
    queue = []
    for repo, issue in waiting:
        known = state.issues.get((repo, issue["number"]))
        if known and known.is_active:
            continue  # claimed earlier; the label swap did not land yet
        not_before = parse_iso(known.not_before) if known else None
        if (not_before and not_before > now) or repo in tick.capped:
            summary.queued.append(issue_ref(repo, issue["number"]))
            continue
        queue.append((repo, issue, known))
    _claim_in_order(tick, queue, state)
    if summary.queued:
        log.info("%d issue(s) wait for a free slot or their retry time: %s", len(summary.queued),
                 ", ".join(summary.queued))


def poll(tick: Tick) -> Dict[str, List[dict]]:
    """Every repository's issues labeled ready, each poll conditional."""
    polled = {}
    for repository in tick.config.repositories:
        try:
            _ensure_labels(tick, repository.repo)
            polled[repository.repo] = tick.github(repository.repo).list_issues_with_label(tick.config.labels.ready)
        except RateLimitError:
            raise
        except GitHubError as exc:
            tick.summary.errors.append(f"{repository.repo}: {exc}")
            log.error("%s: could not poll: %s", repository.repo, exc)
    return polled


def _ensure_labels(tick: Tick, repo: str) -> None:
    """Create the lifecycle labels once per repository and set of names (remembered in the meta)."""
    specs = label_specs(tick.config)
    ensured = tick.state.load_state().meta.get("labels_ensured")
    if tick.dry_run or (isinstance(ensured, dict) and ensured.get(repo) == sorted(specs)):
        return
    created = tick.github(repo).ensure_labels(specs)
    if created:
        log.info("Created labels in %s: %s", repo, ", ".join(created))
    with tick.state.transaction() as state:
        if not isinstance(state.meta.get("labels_ensured"), dict):
            state.meta["labels_ensured"] = {}
        state.meta["labels_ensured"][repo] = sorted(specs)


def spend_ceilings(tick: Tick) -> Set[str]:
    """The repositories whose new runs (follow-ups too) wait: their spend ceiling, or the global one, is
    reached in its UTC day or month. Each reached ceiling is announced once per period."""
    if not (tick.config.limits.configured or any(r.limits.configured for r in tick.config.repositories)):
        return set()  # no ceiling: the run history is not even loaded
    from lib.costs import ceilings  # what a ceiling needs loads only with one
    from lib.ledger import RunHistory

    found = ceilings(tick.config, RunHistory.for_config(tick.config, tick.state))
    every = {repository.repo for repository in tick.config.repositories}
    reached = [ceiling for ceiling in found if ceiling.reached]
    capped: Set[str] = set()
    for ceiling in reached:
        capped |= every if ceiling.repo is None else {ceiling.repo}
        log.warning("Spend ceiling: %s", ceiling.sentence())
    if tick.dry_run:
        return capped
    announced = tick.state.load_state().meta.get("spend_announced") or []
    fresh = [ceiling for ceiling in reached if ceiling.key not in announced]
    # Keys of an earlier period go: the next time that ceiling is reached is announced again.
    kept = [key for key in announced if key in {ceiling.key for ceiling in found}] + [c.key for c in fresh]
    if kept != announced:
        with tick.state.transaction() as state:
            state.meta["spend_announced"] = kept
    if fresh:
        from lib.events import Event
        from lib.notifications import Notifications

        notifications = Notifications.from_config(tick.config)
        for ceiling in fresh:
            notifications.notify(Event(kind="spend_limit", repo=ceiling.repo or ", ".join(sorted(every)),
                                       reason=ceiling.sentence(), until=ceiling.end.isoformat()))
    return capped


def _claim_in_order(tick: Tick, queue: list, state: State) -> None:
    """Claim by rank, then age, within each repository's cap and the machine's max_agents. Who applied
    the routing labels is asked only when a slot could take the issue."""
    config, summary = tick.config, tick.summary
    has_room = any(tick.room(state, config.repository(repo)) for repo, _, _ in queue)
    trusted = {(repo, issue["number"]): _trusted_routing(tick, repo, issue) if has_room else set()
               for repo, issue, _ in queue}
    ranked = queue_order((repo, issue, rank(issue, config.labels, trusted[(repo, issue["number"])]))
                         for repo, issue, _ in queue)
    known_by_key = {(repo, issue["number"]): known for repo, issue, known in queue}
    for repo, issue, _ in ranked:
        key = (repo, issue["number"])
        ref = issue_ref(*key)
        repository = config.repository(repo)
        if not tick.room(state, repository):
            # Checked before trust: a full house must not cost one events request per queued issue.
            summary.queued.append(ref)
            continue
        known = known_by_key[key]
        # A requeued issue got its label back from us; its first claim passed the trust check.
        requeued = known is not None and known.status == IssueStatus.WAITING
        if not requeued and not _labeled_by_trusted_user(tick, repo, issue, state):
            summary.skipped.append(ref)
            continue
        choice = model_choice(issue, config.labels, trusted[key])
        if choice.refused:
            _refuse_model_label(tick, repo, issue, choice.refused)
            continue
        if claim(tick, repository, issue, choice.model) is not None:
            summary.launched.append(ref)
            state = tick.state.load_state()


def claim(tick: Tick, repository, issue: dict, model: Optional[str]) -> Optional[IssueState]:
    """The state entry first (one transaction), then the labels, then the runner."""
    number, repo = issue["number"], repository.repo
    ref = issue_ref(repo, number)
    if tick.dry_run:
        slot = tick.state.load_state().free_slot(repo, limit=repository.max_concurrent)
        log.info("[dry-run] would claim issue %s (%s) for slot %s", ref, issue.get("title", ""), slot)
        return None
    with tick.state.transaction() as state:
        previous = state.issues.get((repo, number))
        if (previous is not None and previous.is_active) or not tick.room(state, repository):
            return None
        entry = tick.claim(state, IssueState(
            issue_number=number, status=IssueStatus.PENDING, branch=f"issue-{number}", start_time=utc_now_iso(),
            slot=tick.slot(state, repository), repo=repo, title=issue.get("title") or "", model=model,
            attempt=previous.attempt + 1 if previous else 1,
            requeues=previous.requeues if previous and previous.status == IssueStatus.WAITING else 0), RUN)
    fault_point("after-claim")
    log.info("Issue %s claimed for slot %s (attempt %s%s): %s", ref, entry.slot, entry.attempt,
             f", model {model}" if model else "", entry.title)
    tick.show(repo, number, IssueStatus.PENDING)
    fault_point("after-label-swap")
    tick.spawn(entry, RUN, [], claimed=True)
    return entry


def follow_pull_requests(tick: Tick, state: State) -> None:
    """The followed pull requests, each repository's surveyed at once (lib.pull_watch)."""
    followed = [e for e in state.issues.values() if e.following and e.pr_number and e.is_finished]
    if not followed:
        return
    from lib.comments import post_once
    from lib.pull_watch import look_at_each  # a tick with no followed pull request never loads these
    repository, summary = tick.config.repository, tick.summary  # a repository no longer configured: an error line
    for entry, news in look_at_each(followed, lambda repo: tick.github(repository(repo).repo), tick.trust,
                                    tick.config.follow_up, tick.dry_run):
        ref = issue_ref(entry.repo, entry.issue_number)
        if isinstance(news, str):
            summary.errors.append(f"{ref}: {news}")
            log.error("Issue %s: could not look at its pull request: %s", ref, news)
        elif tick.dry_run:
            log.info("[dry-run] issue %s: %s", ref, news.ended or (news.work and "a follow-up") or "nothing new")
        elif news.ended:
            log.info("Issue %s: its pull request was %s; following it ends", ref, news.ended)
            tick.state.update(issue_key(entry), status=news.ended, following=False, **news.changes)
        elif news.bound:
            post_once(tick.github(entry.repo), entry.pr_number, "follow-bound",
                      f"Claude Code follows this pull request no more: {news.bound}.")
            tick.state.update(issue_key(entry), following=False, **news.changes)
        elif news.work and entry.repo not in tick.capped and tick.room(tick.state.load_state(),
                                                                       repository(entry.repo)):
            _claim_follow_up(tick, entry, repository(entry.repo), news)
        elif news.work:
            summary.queued.append(ref)  # nothing is stored: the next tick finds the same work
        else:
            if news.notice:  # e.g. a conflict past its bound: a human is asked, once
                post_once(tick.github(entry.repo), entry.pr_number, *news.notice)
            if news.changes:
                tick.state.update(issue_key(entry), **news.changes)


def _claim_follow_up(tick: Tick, entry: IssueState, repository, news) -> None:
    """A follow-up is claimed like an issue: one transaction, the labels, the runner."""
    with tick.state.transaction() as state:
        current = state.issues[issue_key(entry)]
        if current.is_active or not tick.room(state, repository):
            return
        current.slot, current.start_time, current.follow_work = tick.slot(state, repository), utc_now_iso(), news.work
        for name, value in news.changes.items():
            setattr(current, name, value)
        current.end_time = current.error = current.runner_pid = None
        current = tick.claim(state, current, FOLLOW)
    log.info("Issue %s: a follow-up on its pull request (%s) claimed slot %s", issue_ref(entry.repo, entry.issue_number),
             news.work["kind"], current.slot)
    tick.show(entry.repo, entry.issue_number, IssueStatus.PENDING)
    tick.spawn(current, FOLLOW, tick.summary.followed_up, claimed=True)


def _trusted_routing(tick: Tick, repo: str, issue: dict) -> set:
    """The issue's routing labels (priority, model) that a trusted user applied."""
    found = set()
    for name in routing_labels(issue, tick.config.labels):
        labeler = tick.github(repo).last_labeler(issue["number"], name)
        if labeler and tick.trust(repo)(labeler):
            found.add(name)
        else:
            log.warning("Issue %s: the %s label is ignored: %s applied it, who is not trusted",
                        issue_ref(repo, issue["number"]), name, labeler or "an unknown user")
    return found


def _refuse_model_label(tick: Tick, repo: str, issue: dict, label: str) -> None:
    """A model label that names no valid model: the issue waits, and says why once."""
    ref = issue_ref(repo, issue["number"])
    tick.summary.skipped.append(ref)
    log.warning("Issue %s: skipped: the label %r names no valid model", ref, label)
    if not tick.dry_run:
        from lib.comments import post_once, refused_model_comment  # a tick that comments loads what it writes

        post_once(tick.github(repo), issue["number"], f"model-label:{label}",
                  refused_model_comment(label, tick.config.labels.model_prefix))


def _withdraw_waiting(tick: Tick, state: State, repo: str, labeled: set) -> None:
    """A requeued issue that was closed or lost its ready label while it waited is given up."""
    labels = tick.config.labels
    for entry in list(state.issues.values()):
        if entry.repo != repo or entry.status != IssueStatus.WAITING or entry.issue_number in labeled:
            continue
        issue = tick.github(repo).get_issue_cached(entry.issue_number)
        if issue.get("state") != "closed" and labels.working in label_names(issue):
            if not tick.dry_run:  # our requeue could not swap the labels back: finish that swap
                tick.show(repo, entry.issue_number, IssueStatus.WAITING)
            continue
        why = why_withdrawn(issue, labels.ready)
        ref = issue_ref(repo, entry.issue_number)
        tick.summary.cancelled.append(ref)
        log.info("Issue %s no longer waits for a launch: %s", ref, why)
        if not tick.dry_run:
            tick.state.update(issue_key(entry), status=IssueStatus.CANCELLED, not_before=None,
                              error=f"withdrawn while queued: {why}", end_time=utc_now_iso())


def _forget_untrusted_verdicts(tick: Tick, state: State, repo: str, labeled: set) -> None:
    """Verdicts on issues no longer labeled ready are of no use: the state file stays small."""
    mine = {key for key in state.meta.get("untrusted", {}) if key.rpartition("#")[0] == repo}
    stale = mine - {key_text((repo, number)) for number in labeled}
    if tick.dry_run or not stale:
        return
    with tick.state.transaction() as fresh:
        verdicts = fresh.meta.get("untrusted", {})
        fresh.meta["untrusted"] = {key: value for key, value in verdicts.items() if key not in stale}


def _labeled_by_trusted_user(tick: Tick, repo: str, issue: dict, state: State) -> bool:
    number, config = issue["number"], tick.config
    key = key_text((repo, number))
    # An issue found untrusted is not asked about (nor logged) again until it changes (someone labels it
    # anew) or the trust settings do.
    verdict_key = f"{issue.get('updated_at')} {sorted(config.trusted_roles)} {sorted(config.allowed_users)}"
    if state.meta.get("untrusted", {}).get(key) == verdict_key:
        return False
    labeler = tick.github(repo).last_labeler(number, config.labels.ready)
    if labeler and tick.trust(repo)(labeler):
        return True
    log.warning("Issue %s: skipped: the %s label was applied by %s, whose role is not in github.trusted_roles"
                " and who is not in github.allowed_users", issue_ref(repo, number), config.labels.ready,
                labeler or "an unknown user")
    if not tick.dry_run:
        with tick.state.transaction() as fresh:
            fresh.meta.setdefault("untrusted", {})[key] = verdict_key
    return False
