"""`python -m graphconv`: the command line."""

from .cli import main

raise SystemExit(main())
