"""Prometheus metrics, read from the database at scrape time.

Reading the outbox rather than counting in memory means every web process reports the same,
complete figures, whichever worker did the sending.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def _labels(**values: str) -> str:
    escaped = (
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in values.items()
    )
    return "{" + ",".join(escaped) + "}"


def render_metrics(snapshot: dict[str, Any]) -> str:
    lines = [
        "# HELP newsletter_deliveries Deliveries in the outbox by state and reason.",
        "# TYPE newsletter_deliveries gauge",
    ]
    for status, reason, count in sorted(snapshot["deliveries"]):
        lines.append(f"newsletter_deliveries{_labels(status=status, reason=reason)} {count}")
    lines += [
        "# HELP newsletter_queue_depth Deliveries waiting to be sent: due now, or later.",
        "# TYPE newsletter_queue_depth gauge",
        f'newsletter_queue_depth{{due="now"}} {snapshot["queue_due"]}',
        f'newsletter_queue_depth{{due="later"}} {snapshot["queue_scheduled"]}',
    ]
    last_run = snapshot["last_run"]
    if last_run is not None:
        day, created, planned = last_run
        stamp = datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp()
        lines += [
            "# HELP newsletter_last_run_date The newest digest date planned (Unix time).",
            "# TYPE newsletter_last_run_date gauge",
            f"newsletter_last_run_date {stamp:.0f}",
        ]
        if planned is not None:
            lines += [
                "# HELP newsletter_plan_duration_seconds How long planning the newest run took.",
                "# TYPE newsletter_plan_duration_seconds gauge",
                f"newsletter_plan_duration_seconds {(planned - created).total_seconds():.3f}",
            ]
        first, last = snapshot["last_run_send_span"] or (None, None)
        if first is not None and last is not None:
            lines += [
                "# HELP newsletter_run_duration_seconds From planning to the last digest sent, "
                "for the newest run.",
                "# TYPE newsletter_run_duration_seconds gauge",
                f"newsletter_run_duration_seconds {(last - first).total_seconds():.3f}",
            ]
    return "\n".join(lines) + "\n"
