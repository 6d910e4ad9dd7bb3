"""tunefree.bench: learning-rate robustness sweeps, a resumable SQLite ledger and reports."""
