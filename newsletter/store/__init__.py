"""All database access. No other package writes SQL."""

from newsletter.store.database import ClaimedDelivery, DaySummary, Store, SubscriberRecord

__all__ = ["ClaimedDelivery", "DaySummary", "Store", "SubscriberRecord"]
