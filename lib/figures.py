"""A run's figures as every reader sees them, rendered once: cost, turns and time, and the checks, for the
comments on GitHub, both notifiers and the logs; and the bounds every notifier cuts its texts to.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Tuple

from lib.models import format_cost, format_duration

#: What a notification shows of a long text, the same in every chat.
TITLE_CHARS = 300  # GitHub allows 256; more comes only from elsewhere
BRANCH_CHARS = 200
REASON_CHARS = 500
LOG_TAIL_LINES = 20
LOG_TAIL_CHARS = 1500


def figures(cost_usd: Optional[float], num_turns: Optional[int], duration_seconds: Optional[float],
            unknown: Optional[str] = "n/a") -> List[Tuple[str, str]]:
    """[("Cost", "$0.42"), ("Turns", "17"), ("Duration", "12m 5s")]; a figure not known is `unknown`,
    or left out when that is None."""
    found = [("Cost", format_cost(cost_usd) if cost_usd is not None else None),
             ("Turns", str(num_turns) if num_turns is not None else None),
             ("Duration", format_duration(duration_seconds) if duration_seconds is not None else None)]
    return [(name, value or unknown) for name, value in found if value is not None or unknown is not None]


def figures_line(cost_usd: Optional[float], num_turns: Optional[int], duration_seconds: Optional[float],
                 unknown: Optional[str] = "n/a") -> str:
    """"Cost: $0.42 · Turns: 17 · Duration: 12m 5s"."""
    return " · ".join(f"{name}: {value}" for name, value in figures(cost_usd, num_turns, duration_seconds, unknown))


def checks_line(results: Sequence[Mapping[str, Any]]) -> str:
    """"✅ tests 12.4 s · ❌ lint 0.8 s": the repository's checks of a run."""
    return " · ".join(f"{'✅' if r['passed'] else '❌'} {r['name']} {_seconds(r['duration_seconds'])}" for r in results)


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 60 else format_duration(value)
