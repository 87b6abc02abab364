"""What the agents cost: the `costs` report, and the spend ceiling (`limits.daily_usd`, `monthly_usd`).

Both read the run history (lib/ledger.py): one record per finished Claude invocation, with its own
cost (the CLI reports the session's running total; the runner keeps the difference), and one per
finished run, with its outcome. An invocation whose cost the CLI did not give is counted as
unknown, never as zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterable, List, Optional

from lib.config import Config
from lib.ledger import Record, RunHistory
from lib.models import UsageError, format_cost, format_duration, issue_ref, parse_iso

GROUPINGS = ("day", "issue", "repo")
DEFAULT_SINCE = "7d"
_DAYS_RE = re.compile(r"^(\d+)d$")


def parse_since(text: str, now: datetime) -> datetime:
    """`7d`: the last 7 days, from the start of the UTC day 6 days before today; `2026-11-01` (or an
    ISO time): from then, UTC unless it names a zone."""
    days = _DAYS_RE.match(text.strip())
    if days:
        start = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        return start - timedelta(days=max(int(days.group(1)) - 1, 0))
    try:
        since = parse_iso(text.strip())
    except ValueError:
        since = None
    if since is None:
        raise UsageError(f"--since {text!r}: give a number of days (7d) or a date (2026-11-01).")
    return since


@dataclass
class CostFigures:
    """What one group (a day, an issue, a repository) or the total cost."""

    key: str = ""
    cost_usd: float = 0.0  # of the invocations whose cost is known
    invocations: int = 0
    unknown_cost: int = 0  # invocations whose cost the CLI did not report
    num_turns: int = 0
    duration_seconds: float = 0.0
    outcomes: Dict[str, int] = field(default_factory=dict)  # status -> finished runs

    def add(self, record: Record) -> None:
        if record.get("type") == "outcome":
            status = str(record.get("status"))
            self.outcomes[status] = self.outcomes.get(status, 0) + 1
            return
        self.invocations += 1
        if record.get("cost_usd") is None:
            self.unknown_cost += 1
        else:
            self.cost_usd += record["cost_usd"]
        self.num_turns += record.get("num_turns") or 0
        self.duration_seconds += record.get("duration_seconds") or 0

    def to_dict(self, with_key: bool = True) -> Dict[str, Any]:
        data = {"key": self.key} if with_key else {}
        data.update(cost_usd=round(self.cost_usd, 6), invocations=self.invocations, unknown_cost=self.unknown_cost,
                    num_turns=self.num_turns, duration_seconds=round(self.duration_seconds, 1),
                    outcomes=dict(sorted(self.outcomes.items())))
        return data


def group_key(record: Record, by: str) -> str:
    if by == "day":
        return str(record["at"])[:10]  # `at` is UTC
    if by == "repo":
        return str(record.get("repo"))
    return issue_ref(record.get("repo"), record.get("issue"))


@dataclass
class CostReport:
    since: datetime
    until: datetime
    by: str
    repo: Optional[str]
    rows: List[CostFigures]
    total: CostFigures

    @classmethod
    def build(cls, records: Iterable[Record], *, since: datetime, until: datetime, by: str = "day",
              repo: Optional[str] = None) -> "CostReport":
        if by not in GROUPINGS:
            raise UsageError(f"--by {by!r}: use one of {', '.join(GROUPINGS)}.")
        groups: Dict[str, CostFigures] = {}
        total = CostFigures(key="total")
        for record in records:
            if repo is not None and str(record.get("repo", "")).casefold() != repo.casefold():
                continue
            key = group_key(record, by)
            groups.setdefault(key, CostFigures(key=key)).add(record)
            total.add(record)
        if by == "day":
            rows = [groups[key] for key in sorted(groups)]
        else:  # the most expensive first
            rows = sorted(groups.values(), key=lambda figures: (-figures.cost_usd, figures.key))
        return cls(since, until, by, repo, rows, total)

    def to_dict(self) -> Dict[str, Any]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), "by": self.by, "repo": self.repo,
                "rows": [row.to_dict() for row in self.rows], "total": self.total.to_dict(with_key=False)}

    def to_text(self) -> str:
        scope = self.repo or "every repository"
        lines = [f"Costs since {self.since.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC, by {self.by} ({scope})", ""]
        if not self.rows:
            return "\n".join(lines + ["No invocation or run recorded in the run history since then."])
        width = max(len(self.by), len("total"), *(len(row.key) for row in self.rows))
        header = f"{self.by:<{width}}  {'cost':>11}  {'invocations':>11}  {'turns':>6}  {'duration':>11}  outcomes"
        lines += [header, "-" * len(header)]
        lines += [_row_text(row, width) for row in self.rows]
        lines += ["-" * len(header), _row_text(self.total, width)]
        if self.total.unknown_cost:
            lines.append(f"unknown cost: {self.total.unknown_cost} invocation(s), not in the cost above")
        return "\n".join(lines)


def _row_text(row: CostFigures, width: int) -> str:
    outcomes = ", ".join(f"{status} {count}" for status, count in sorted(row.outcomes.items())) or "-"
    unknown = f" +{row.unknown_cost}?" if row.unknown_cost else ""
    cost = format_cost(row.cost_usd) + unknown
    return (f"{row.key:<{width}}  {cost:>11}  {row.invocations:>11}  {row.num_turns:>6}  "
            f"{format_duration(row.duration_seconds):>11}  {outcomes}")


def cost_report(config: Config, *, since: str = DEFAULT_SINCE, by: str = "day", repo: Optional[str] = None,
                now: Optional[datetime] = None) -> CostReport:
    """The `costs` report of this install's run history."""
    now = now or datetime.now(timezone.utc)
    start = parse_since(since, now)
    records = RunHistory.for_config(config).read(start)
    return CostReport.build(records, since=start, until=now, by=by, repo=config.repository(repo).repo if repo else None)


# ------------------------------------------------------------------------------------------------
# The spend ceiling
# ------------------------------------------------------------------------------------------------

PERIODS = {"day": "daily_usd", "month": "monthly_usd"}


def period_bounds(period: str, now: datetime) -> tuple:
    """(start, end) of the UTC day or month that holds `now`."""
    now = now.astimezone(timezone.utc)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, (start + timedelta(days=32)).replace(day=1)


@dataclass
class Ceiling:
    """One spend limit of one scope in the period that holds now."""

    repo: Optional[str]  # None: every repository together
    period: str  # "day" | "month"
    limit_usd: float
    spent_usd: float
    start: datetime
    end: datetime  # when the period turns

    @property
    def reached(self) -> bool:
        return self.spent_usd >= self.limit_usd

    @property
    def key(self) -> str:
        """Names the ceiling in this period: one notification per key."""
        return f"{self.repo or '*'} {self.period} {self.start:%Y-%m-%d}"

    @property
    def setting(self) -> str:
        where = "limits" if self.repo is None else f"the limits of {self.repo}"
        return f"{where}.{PERIODS[self.period]}"

    def sentence(self) -> str:
        spent = "today" if self.period == "day" else "this month"
        scope = "every repository" if self.repo is None else self.repo
        return (f"{self.setting} ({format_cost(self.limit_usd)}) is reached: {format_cost(self.spent_usd)} spent"
                f" {spent} (UTC); no new run of {scope} starts until {self.end:%Y-%m-%d %H:%M} UTC")


def ceilings(config: Config, history: RunHistory, now: Optional[datetime] = None) -> List[Ceiling]:
    """Every configured ceiling with what its scope spent in its period; the history is read only
    when a limit is configured, and only back to the start of the longest period."""
    now = now or datetime.now(timezone.utc)
    scopes = [(None, config.limits)] + [(r.repo, r.limits) for r in config.repositories]
    wanted = [(repo, period, getattr(limits, setting)) for repo, limits in scopes
              for period, setting in PERIODS.items() if getattr(limits, setting) is not None]
    if not wanted:
        return []
    earliest = min(period_bounds(period, now)[0] for _, period, _ in wanted)
    records = [record for record in history.read(earliest)
               if record.get("type") == "invocation" and record.get("cost_usd") is not None]
    found = []
    for repo, period, limit in wanted:
        start, end = period_bounds(period, now)
        spent = sum(record["cost_usd"] for record in records if parse_iso(record["at"]) >= start
                    and (repo is None or record.get("repo") == repo))
        found.append(Ceiling(repo, period, limit, spent, start, end))
    return found
