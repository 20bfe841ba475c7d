"""The static HTML report (`evalharness report`): collect, charts, panels, data, site."""
