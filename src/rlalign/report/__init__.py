"""Run reports: PNG plots of metrics and a self-contained HTML page."""
