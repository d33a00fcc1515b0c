"""Evaluation: datasets of cases, the checks run on what a feature answered, and the runs that gate a change."""
