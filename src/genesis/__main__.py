"""``python -m genesis`` runs the command line."""

from genesis.cli import app

app()
