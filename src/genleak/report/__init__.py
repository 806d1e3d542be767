"""Results files, plots, tables (and later the HTML report)."""
