"""Statistics: confidence intervals, paired tests, judge agreement and run-vs-run comparison."""
