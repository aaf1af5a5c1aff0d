"""Relevance: matching papers to a reader's interests by meaning, and learning from feedback.

embedding (sentence vectors), lexical (BM25), profile (a reader's vector from their words and
feedback), scoring (a day's selection for many readers at once). Pure functions over values and
arrays; the store keeps the vectors and the planner calls in here.
"""
