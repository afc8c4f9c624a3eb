"""Scores of a chat model that a person can read, on held-out conversations.

* **End-of-turn rate**: the share of replies to held-out openers (each conversation up to its
  first assistant turn) that end with the end-of-turn token within 64 new tokens, sampled with
  the app's default settings (``engine.store.settings.Sampling``).
* **Reply ranking**: for a held-out conversation cut before one of its assistant turns, that
  true turn against 5 assistant turns taken from other held-out conversations.  Each candidate
  is scored by pointwise mutual information per byte: how much the conversation raises its
  log-probability over the same turn after an empty conversation (one empty user turn), divided by its bytes (at this
  size raw likelihood prefers short, generic replies and ranks at chance).  Top-1 accuracy:
  chance is 1/6.

The assistant tokens' loss and bits per byte come from ``engine.evaluation.perplexity`` over the masked rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

EOT_MAX_NEW_TOKENS = 64
DISTRACTORS = 5


@dataclass(frozen=True)
class ChatScores:
    eot_rate: float | None  # share of replies that ended with the end of turn
    eot_replies: int
    reply_tokens: float | None  # their mean length in tokens (an empty reply "ends" too)
    ranking_top1: float | None  # share of items whose true reply ranked first
    ranking_items: int


def opener(messages: list[dict]) -> list[dict]:
    """A conversation up to (not including) its first assistant turn."""
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            return [{"role": x["role"], "content": x["content"]} for x in messages[:i]]
    return [{"role": x["role"], "content": x["content"]} for x in messages]


def end_of_turn_rate(chat, conversations: list[list[dict]], n: int, seed: int = 0) -> tuple[float | None, int, float | None]:
    """(rate, replies, mean tokens): replies sampled to the openers of the first ``n`` conversations."""
    from engine.store.settings import Sampling

    end = chat.stop_ids[0] if chat.is_chat and chat.stop_ids else None
    openers = [o for o in (opener(c) for c in conversations[:n]) if o and o[-1]["role"] == "user"]
    if end is None or not openers:
        return None, 0, None
    ended = tokens = 0
    for i, turns in enumerate(openers):
        sampling = Sampling(max_new_tokens=EOT_MAX_NEW_TOKENS, seed=seed + i)
        finished = _finish(chat.stream(chat.encode_chat(turns), sampling))
        ended += finished is not None and finished.stop_token_id == end
        tokens += finished.new_tokens if finished is not None else 0
    return ended / len(openers), len(openers), tokens / len(openers)


def _finish(events):
    from engine.events import GenerationFailed, GenerationFinished

    for event in events:
        if isinstance(event, GenerationFinished):
            return event
        if isinstance(event, GenerationFailed):
            from engine.errors import CheckpointError

            raise CheckpointError(event.error)
    return None


def ranking_items(conversations: list[list[dict]], n: int, seed: int = 0) -> list[tuple[list[dict], str, list[str]]]:
    """Up to ``n`` (context, true reply, distractors): each conversation cut before a random
    assistant turn that follows a user turn, with 5 assistant turns of other conversations."""
    rng = random.Random(seed)
    replies = [[i for i, m in enumerate(c) if m["role"] == "assistant" and i > 0 and m["content"].strip()] for c in conversations]
    usable = [k for k, r in enumerate(replies) if r]
    items = []
    for k in usable[:n]:
        i = rng.choice(replies[k])
        others = rng.sample([u for u in usable if u != k], min(DISTRACTORS, len(usable) - 1))
        distractors = [conversations[u][rng.choice(replies[u])]["content"] for u in others]
        if len(distractors) == DISTRACTORS:
            items.append((conversations[k][:i], conversations[k][i]["content"], distractors))
    return items


def reply_ranking(chat, conversations: list[list[dict]], n: int, seed: int = 0, batch_size: int = 8) -> tuple[float | None, int]:
    """(top-1 accuracy, items) of the PMI ranking over ``n`` held-out conversations."""
    items = ranking_items(conversations, n, seed)
    if not chat.is_chat or not items:
        return None, 0
    window = chat.n_positions
    end = chat.stop_ids[0]
    empty = chat.encode_chat([{"role": "user", "content": ""}])  # the same turn after an empty conversation
    sequences: list[tuple[list[int], int]] = []  # (ids, how many of the last ids are the reply)
    index: dict[tuple[int, int], int] = {}  # (item, candidate) -> the conditional sequence
    alone: dict[str, int] = {}  # candidate text -> the sequence after an empty conversation
    for k, (context, true, distractors) in enumerate(items):
        for c, text in enumerate([true, *distractors]):
            reply = chat.encode(text)[: window // 2] + [end]
            prompt, _ = chat.fit_chat(context, len(reply))
            prompt = prompt[-(window - len(reply)) :]
            index[(k, c)] = len(sequences)
            sequences.append((prompt + reply, len(reply)))
            if text not in alone:
                alone[text] = len(sequences)
                sequences.append((empty + reply, len(reply)))
    logp = _reply_log_probs(chat, sequences, batch_size)
    correct = 0
    for k, (_context, true, distractors) in enumerate(items):
        scores = []
        for c, text in enumerate([true, *distractors]):
            gain = logp[index[(k, c)]] - logp[alone[text]]
            scores.append(gain / max(1, len(text.encode("utf-8"))))
        correct += all(scores[0] > s for s in scores[1:])
    return correct / len(items), len(items)


def _reply_log_probs(chat, sequences: list[tuple[list[int], int]], batch_size: int) -> list[float]:
    """Summed log-probability of each sequence's last ``n`` ids given what comes before them."""
    import torch

    from engine.model import autocast

    model, device = chat.model, chat.device
    was_training = model.training
    model.eval()
    out = [0.0] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))  # similar lengths together
    try:
        with torch.inference_mode(), autocast(device, chat.dtype):
            for start in range(0, len(order), batch_size):
                group = order[start : start + batch_size]
                width = max(len(sequences[i][0]) for i in group)
                ids = torch.zeros((len(group), width), dtype=torch.long)
                attention = torch.zeros((len(group), width), dtype=torch.long)
                for row, i in enumerate(group):
                    seq = sequences[i][0]
                    ids[row, : len(seq)] = torch.tensor(seq)
                    attention[row, : len(seq)] = 1
                logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
                logp = logits.log_softmax(-1)
                for row, i in enumerate(group):
                    seq, n = sequences[i]
                    targets = torch.tensor(seq[len(seq) - n :], device=device)
                    picked = logp[row, len(seq) - n - 1 : len(seq) - 1].gather(1, targets.view(-1, 1))
                    out[i] = float(picked.sum())
    finally:
        model.train(was_training)
    return out


def chat_scores(chat, conversations: list[list[dict]], eot_n: int, ranking_n: int, seed: int = 0) -> ChatScores:
    """Both scores over held-out conversations (a list of messages lists)."""
    rate, replies, mean_tokens = end_of_turn_rate(chat, conversations, eot_n, seed)
    top1, items = reply_ranking(chat, conversations, ranking_n, seed)
    return ChatScores(eot_rate=rate, eot_replies=replies, reply_tokens=mean_tokens, ranking_top1=top1, ranking_items=items)
