"""Views over experiment results: list, show, compare, pareto, export, plot, dashboard."""
