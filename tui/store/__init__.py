"""The app's own storage: saved conversations in SQLite."""
