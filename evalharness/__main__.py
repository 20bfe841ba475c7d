"""Allow `python -m evalharness`."""

from evalharness.cli import main

raise SystemExit(main())
