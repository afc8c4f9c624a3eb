"""minigpt-tui's engine: data, tokenizers, training, checkpoints and streaming generation.

Importing this package is cheap: torch and transformers load only when a job needs them,
so the Textual app can paint its first frame before the engine is ready.  The engine never
imports Textual; it reports progress as the dataclasses in :mod:`engine.events`.
"""

__version__ = "0.1.0"
