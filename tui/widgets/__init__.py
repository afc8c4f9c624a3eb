"""Widgets shared by the screens: chat turns and input, the footer, the loss chart."""
