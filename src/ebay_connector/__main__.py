"""``python -m ebay_connector`` runs the CLI."""

import sys

from ebay_connector.cli import main

sys.exit(main())
