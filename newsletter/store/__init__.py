"""All database access. No other package writes SQL."""

from newsletter.records import ClaimedDelivery, DaySummary, SubscriberRecord
from newsletter.store.database import Store

__all__ = ["ClaimedDelivery", "DaySummary", "Store", "SubscriberRecord"]
