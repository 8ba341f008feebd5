"""``python -m neurodecode`` runs the command line."""

from .cli import app

app()
