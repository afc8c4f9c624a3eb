"""App state outside the widgets: the active model, the training run it started (mixins and plain state)."""
