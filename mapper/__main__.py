"""``python -m mapper <command>``: see :mod:`mapper.cli`."""

from mapper.cli import main

raise SystemExit(main())
