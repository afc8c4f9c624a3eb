"""What lives on disk: checkpoints, settings, the user's folders, atomic writes."""
