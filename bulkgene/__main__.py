"""``python -m bulkgene``: the same as the ``bulkgene`` command."""

from bulkgene.cli import main

main()
