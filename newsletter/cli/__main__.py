"""`python -m newsletter.cli`."""

from newsletter.cli.main import main

main()
