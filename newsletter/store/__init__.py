"""All database access. No other package writes SQL.

`Store` is the root; its parts each hold one concern (papers.py, subscribers.py,
suppressions.py, outbox.py, reports.py). The records they return live in newsletter/records.py.
"""

from newsletter.records import ClaimedDelivery, DaySummary, SubscriberRecord
from newsletter.store.database import Store

__all__ = ["ClaimedDelivery", "DaySummary", "Store", "SubscriberRecord"]
