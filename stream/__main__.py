"""`python -m stream` is the `segstream` command."""

from stream.cli import main

raise SystemExit(main())
