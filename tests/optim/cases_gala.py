"""Case-table rows of GALA; see cases.py."""

CASES: list = []
