"""Reports: static HTML (jinja2) for leaderboards, per-task and per-sample views, comparisons."""
