"""minigpt-tui's full-screen Textual app.  Reaches the engine only through its public API."""
