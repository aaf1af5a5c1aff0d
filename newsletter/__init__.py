"""Trending-papers newsletter: fetch a day's trending papers, personalise, and mail them."""

__version__ = "0.1.0"
