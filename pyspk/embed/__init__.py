"""Embedding extraction: encoder forward over features, jobs, ark/scp tables."""
