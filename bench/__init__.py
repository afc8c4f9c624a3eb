"""minigpt-tui benchmark: the engine against the reference tutorial recipe, side by side.

Run ``python -m bench [--quick] [--data DIR] [--budget-min N] [--out report.json]``; see bench/README.md.
"""
