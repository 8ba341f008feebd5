"""neurodecode."""
