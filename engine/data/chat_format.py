"""The chat format a checkpoint carries: special tokens for the turns and a Jinja chat template.

A conversation is a list of ``{"role", "content"}`` messages (the OpenAI / Hugging Face
convention; roles ``system``, ``user``, ``assistant``).  It renders as

    <|endoftext|><|user|>hi, how are you?<|end|><|assistant|>good, you?<|end|>

with nothing between the markers and the text, so each turn's text tokenizes on its own exactly
as inside the whole string (special tokens split the text first).  That lets training render
conversations a batch at a time from per-turn token ids (``render``, fast) while
``tokenizer.apply_chat_template`` renders the same ids from the template saved with the
checkpoint (tests/test_chat.py checks it over hundreds of conversations).  Training takes the
loss on the assistant's text and its ``<|end|>`` only (the template marks them with
``{% generation %}``, for ``return_assistant_tokens_mask``); generation stops at ``<|end|>``.

Torch-free: imported by the data pipeline and the CLI before any model exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import DataError

BOS = "<|endoftext|>"  # the GPT-2 family's one special token: document separator, here each conversation's start
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
TURN_TOKENS = (SYSTEM, USER, ASSISTANT, END)
ROLES = ("system", "user", "assistant")
ROLE_TOKEN = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + message['role'] + ': use system, user or assistant') }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|>{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{% else %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def has_own_format(tokenizer) -> bool:
    """Whether the tokenizer carries this module's format (its template and turn tokens)."""
    return getattr(tokenizer, "chat_template", None) == CHAT_TEMPLATE and all(
        tokenizer.convert_tokens_to_ids(t) not in (None, tokenizer.unk_token_id) for t in TURN_TOKENS
    )


def add_chat_format(tokenizer) -> bool:
    """Give ``tokenizer`` the turn tokens and the template, unless it has a template of its own
    (a pretrained chat model keeps its format).  True when tokens were added (the model's
    embeddings must then grow to ``len(tokenizer)``)."""
    if getattr(tokenizer, "chat_template", None):
        return False
    before = len(tokenizer)
    # tokens already in the vocabulary (a BPE trained with them) are only marked special
    tokenizer.add_special_tokens({"additional_special_tokens": list(TURN_TOKENS)}, replace_extra_special_tokens=False)
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token
    tokenizer.chat_template = CHAT_TEMPLATE
    return len(tokenizer) != before


def stop_token_ids(tokenizer) -> list[int]:
    """The ids that end a reply: the template's end of turn (when the tokenizer has one), then eos."""
    ids = []
    end = tokenizer.convert_tokens_to_ids(END) if END in tokenizer.get_vocab() else None
    if end is not None:
        ids.append(end)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def check_messages(messages, where: str, need_reply: bool = True) -> list[dict]:
    """A row's ``messages``: a non-empty list of {role, content} with a known role and text
    content, and (``need_reply``: to train on) an assistant message, else DataError naming
    ``where`` (the file and row)."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"{where}: message {i + 1} must have 'role' and 'content'")
        if m["role"] not in ROLES:
            raise DataError(f"{where}: message {i + 1} has role {m['role']!r}: use system, user or assistant")
        if not isinstance(m["content"], str):
            raise DataError(f"{where}: message {i + 1}'s content must be text")
        out.append({"role": m["role"], "content": m["content"]})
    if need_reply and not any(m["role"] == "assistant" for m in out):
        raise DataError(f"{where}: no assistant message (nothing to learn from)")
    return out


@dataclass
class Rendered:
    """One conversation as token ids, which of them carry the loss, and where each turn starts."""

    ids: list[int]
    mask: list[int]  # 1: the assistant's text and its <|end|> (trained on); 0: the rest
    starts: list[int]  # index in ``ids`` where each turn begins (after the leading bos)


class Renderer:
    """Renders conversations with this module's format from per-turn token ids (``render``), a
    batch at a time: the same ids as ``apply_chat_template`` on the whole string."""

    def __init__(self, tokenizer):
        if not has_own_format(tokenizer):
            raise ValueError("the tokenizer does not carry minigpt-tui's chat format")
        self.tokenizer = tokenizer
        self.start = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]  # the template's {{ bos_token }}
        self.role = {role: tokenizer.convert_tokens_to_ids(tok) for role, tok in ROLE_TOKEN.items()}
        self.end = tokenizer.convert_tokens_to_ids(END)

    def render_many(self, conversations: list[list[dict]], add_generation_prompt: bool = False) -> list[Rendered]:
        texts = [m["content"] for conv in conversations for m in conv]
        encoded = iter(self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])
        out = []
        for conv in conversations:
            ids, mask, starts = list(self.start), [0] * len(self.start), []
            for m in conv:
                body = next(encoded)
                starts.append(len(ids))
                trained = 1 if m["role"] == "assistant" else 0
                ids.append(self.role[m["role"]])
                ids.extend(body)
                ids.append(self.end)
                mask.append(0)
                mask.extend([trained] * (len(body) + 1))
            if add_generation_prompt:
                ids.append(self.role["assistant"])
                mask.append(0)
            out.append(Rendered(ids, mask, starts))
        return out


def template_render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> Rendered:
    """Any tokenizer's own template (a pretrained chat model's), through ``apply_chat_template``;
    the loss mask from its ``{% generation %}`` markers (a template without them cannot say
    which tokens are the assistant's: DataError)."""
    out = tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True,
        return_assistant_tokens_mask=not add_generation_prompt,
    )
    ids = list(out["input_ids"])
    mask = list(out.get("assistant_masks") or [0] * len(ids))
    if not add_generation_prompt and not any(mask):
        raise DataError("the model's chat template does not mark the assistant's tokens ({% generation %}): cannot mask the loss")
    return Rendered(ids, mask, [])
