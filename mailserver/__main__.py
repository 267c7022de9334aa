"""`python -m mailserver` is the `hygie` command."""

from mailserver.cli import main

main()
