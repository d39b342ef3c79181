"""Command-line interface: ``bnconvert SUBCOMMAND``.  Each subcommand is its own module."""
