"""The Markdown body of a reply: Textual's ``Markdown`` with chat line breaks, no link opened,
and the streaming update of a paragraph or a code block laid out again only when its height
changes (as the literal view does, tui/widgets/turns.py).

Imported when the first reply is shown as Markdown, not before the first frame: Textual's
Markdown brings markdown-it, and its code blocks Pygments.
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.token import Token
from textual.content import Content
from textual.css.query import NoMatches
from textual.widgets import Label, Markdown
from textual.widgets.markdown import MarkdownFence

MarkdownParagraph = Markdown.BLOCKS["paragraph_open"]  # (not exported by textual.widgets.markdown)


def chat_parser() -> MarkdownIt:
    """Textual's "gfm-like" Markdown where a newline inside a paragraph is a line break (as in a
    chat: a reply's lines stay lines; CommonMark joins them into one)."""
    parser = MarkdownIt("gfm-like")
    parser.core.ruler.push("chat_line_breaks", _hard_breaks)
    return parser


def _hard_breaks(state) -> None:
    for token in state.tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type = "hardbreak"


def _update_in_place(widget, content: Content) -> None:
    """``widget.update(content)``, laid out again only when its height changes: a streaming
    block updated ~20 times a second otherwise lays out the whole screen each time."""
    width, height = widget.content_size
    widget.update(content, layout=False)
    if not width or widget.visual.get_height(widget.styles, width) != height:
        widget.refresh(layout=True)


class ChatParagraph(MarkdownParagraph):
    def set_content(self, content: Content) -> None:
        self._content = content
        if not self.display:  # the placeholder of ReplyMarkdown.prepare, given its text
            self.display = True
            self.update(content)
            return
        _update_in_place(self, content)


class ChatFence(MarkdownFence):
    def set_content(self, content: Content) -> None:
        self._content = content
        try:
            label = self.query_one("#code-content", Label)
        except NoMatches:
            return
        _update_in_place(label, content)


class ReplyMarkdown(Markdown):
    """A reply's Markdown: one parser made once (Textual makes one per update otherwise), used
    by one parse at a time (the turn's worker); links never opened (``open_links=False``: the
    turn says where one points)."""

    BLOCKS = {**Markdown.BLOCKS, "paragraph_open": ChatParagraph, "fence": ChatFence, "code_block": ChatFence}

    def __init__(self, **kwargs) -> None:
        parser = chat_parser()
        super().__init__(open_links=False, parser_factory=lambda: parser, **kwargs)

    async def prepare(self) -> None:
        """An empty paragraph, mounted before the reply's first piece comes: Markdown.append
        updates the document's last block in place when the new text's first block is of its
        kind (a paragraph: most replies), so the first piece needs no mount."""
        token = Token("paragraph_open", "p", 1)
        token.map = [0, 1]
        placeholder = ChatParagraph(self, token)
        placeholder.display = False  # no blank line under "thinking…"
        await self.mount(placeholder)
