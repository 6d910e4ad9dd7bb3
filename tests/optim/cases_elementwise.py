"""Case-table rows of the elementwise optimizers (SMES, AGD, RSGDM); see cases.py."""

CASES: list = []
