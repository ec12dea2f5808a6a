"""Aggregation of sampled chains across seeds into observables with error bars."""
