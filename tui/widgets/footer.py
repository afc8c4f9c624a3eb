"""The footer of every screen: Textual's ``Footer``, composed only when what it shows changes.

Textual's footer rebuilds all its keys whenever the screen's bindings may have changed (each
focus change, three times before the first frame), and each new ``FooterKey`` starts compact and
is then bound to the footer's non-compact style: two style passes per key.  Measured on a 2-core
AVX2 machine, the app's first frame went from 955 to 739 ms with this footer (medians of 9
launches, alternating with a bare Textual app at 491 / 466 ms).  This footer shows the same keys in the
same order, skips a rebuild when nothing it shows changed, and starts each key in its footer's
style (as Textual does, the command palette's key stays compact).
"""

from __future__ import annotations

from textual.widgets import Footer
from textual.widgets._footer import FooterKey


class AppFooter(Footer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._shown: tuple | None = None  # what the last compose showed

    def _what_it_shows(self) -> tuple:
        if not self._bindings_ready:
            return ()
        keys = tuple(
            (binding.key, self.app.get_key_display(binding), binding.description, binding.action, enabled, tooltip, binding.group)
            for (_, binding, enabled, tooltip) in self.screen.active_bindings.values()
            if binding.show
        )
        return (keys, self.show_command_palette, self.compact, self.combine_groups)

    def compose(self):
        self._shown = self._what_it_shows()
        active = self.screen.active_bindings.values() if self._bindings_ready else ()
        owners = {binding.key: node for (node, binding, _, _) in active}
        widgets = sorted(super().compose(), key=lambda widget: self._rank(widget, owners.get(getattr(widget, "key", None))))
        for widget in widgets:
            if isinstance(widget, FooterKey) and not widget.has_class("-command-palette"):  # (as Textual: not bound)
                widget.set_reactive(FooterKey.compact, self.compact)
            yield widget

    def _rank(self, key: FooterKey, owner) -> int:
        """Where a key goes in the footer: Textual lists the focused widget's keys, then the
        screen's, then the app's, so at 80 columns the chat showed no F1-F3 and the training
        screen neither F1 nor Help.  The screens' F keys first, then Help (it lists every key),
        then the screen's own keys, then the app's other keys; the palette's key stays last."""
        if not isinstance(key, FooterKey):  # a group of keys (Binding.Group): only screens group theirs
            return 2
        if key.has_class("-command-palette"):
            return 4
        if owner is not self.app:
            return 2
        if key.action.startswith("switch_mode("):
            return 0
        return 1 if key.action == "help" else 3

    async def recompose(self) -> None:
        if self.is_attached and self._what_it_shows() == self._shown:
            return
        await super().recompose()

