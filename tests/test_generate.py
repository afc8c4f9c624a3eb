import copy
import threading

import pytest

from engine.errors import UsageError
from engine.events import GenerationFinished, GenerationStarted, TokenGenerated
from engine.generate import ChatModel, GenerationJob
from engine.settings import Sampling


@pytest.fixture(scope="module")
def chat(tiny_checkpoint):
    return ChatModel.from_checkpoint(tiny_checkpoint, device="cpu")


def with_eos(chat, token_id):
    """The same model with another end token (None: no end token, so only the length stops it)."""
    tok = copy.deepcopy(chat.tokenizer)
    tok.eos_token = None if token_id is None else tok.convert_ids_to_tokens(token_id)
    assert tok.eos_token_id == token_id
    return ChatModel(model=chat.model, tokenizer=tok, name=chat.name, device=chat.device)


def run(chat, prompt, sampling, stop=None):
    return list(chat.stream(prompt, sampling, stop))


def test_streams_tokens_without_echoing_the_prompt(chat):
    prompt = "And God said unto Moses"
    events = run(chat, prompt, Sampling(max_new_tokens=20, seed=3))
    assert isinstance(events[0], GenerationStarted)
    tokens = [e for e in events if isinstance(e, TokenGenerated)]
    done = events[-1]
    assert isinstance(done, GenerationFinished)
    assert len(tokens) >= 1 and done.new_tokens <= 20
    assert "".join(t.text for t in tokens) == done.text
    assert not done.text.startswith(prompt)
    assert done.stop_reason in ("eos", "length")
    assert done.time_to_first_token_s is not None


def test_seed_makes_replies_repeatable(chat):
    s = Sampling(max_new_tokens=16, seed=42, temperature=1.0)
    assert chat.generate_text("In the beginning", s) == chat.generate_text("In the beginning", s)


def test_greedy_is_deterministic_without_seed(chat):
    s = Sampling(max_new_tokens=12, temperature=0)
    assert chat.generate_text("The LORD", s) == chat.generate_text("The LORD", s)


def test_prompt_longer_than_context_is_cut_from_the_left(chat):
    long_prompt = "and the king said " * 400  # far more than the 64 positions of the tiny model
    events = run(chat, long_prompt, Sampling(max_new_tokens=100, seed=1))
    started = events[0]
    assert started.truncated_tokens > 0 and started.prompt_tokens <= chat.n_positions
    done = events[-1]
    assert isinstance(done, GenerationFinished)
    assert done.stop_reason in ("eos", "length")


def test_reply_longer_than_the_window_slides_it(chat):
    """Without an end token the reply runs to max_new_tokens, past the 64-position window."""
    events = run(with_eos(chat, None), "and the king said " * 400, Sampling(max_new_tokens=100, seed=1))
    done = events[-1]
    assert isinstance(done, GenerationFinished), done
    assert done.stop_reason == "length" and done.new_tokens == 100
    assert len([e for e in events if isinstance(e, TokenGenerated)]) >= 90


def test_end_token_stops_the_reply_and_is_not_shown(chat):
    greedy = Sampling(max_new_tokens=5, temperature=0)
    first = chat.encode(chat.generate_text("And God said", greedy))[0]
    done = run(with_eos(chat, first), "And God said", greedy)[-1]  # the token greedy picks first is now the end
    assert isinstance(done, GenerationFinished)
    assert done.stop_reason == "eos" and done.new_tokens == 0 and done.text == ""


def test_cancel_takes_effect_within_one_token(chat):
    stop = threading.Event()
    seen = []
    for event in with_eos(chat, None).stream("And", Sampling(max_new_tokens=500, seed=1, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0), stop):
        seen.append(event)
        if isinstance(event, TokenGenerated) and event.index >= 2:
            stop.set()
    done = seen[-1]
    assert isinstance(done, GenerationFinished)
    assert done.stop_reason == "cancelled" and 3 <= done.new_tokens <= 4


def test_generation_job_runs_on_a_worker_thread(chat):
    events = []
    threads = set()

    def sink(e):
        events.append(e)
        threads.add(threading.current_thread().name)

    job = GenerationJob(chat, "Moses", Sampling(max_new_tokens=8, seed=0), sink).start()
    job.join(60)
    assert isinstance(events[-1], GenerationFinished)
    assert threads == {"minigpt-generate"}


def test_plain_lm_prompt_and_chat_template(chat):
    ids = chat.encode_chat([{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Again"}])
    assert chat.tokenizer.decode(ids) == "Hello\n\nHi\n\nAgain"
    chat.tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    try:
        ids = chat.encode_chat([{"role": "user", "content": "Hello"}])
        assert chat.tokenizer.decode(ids) == "<user>Hello<assistant>"
    finally:
        chat.tokenizer.chat_template = None


@pytest.mark.parametrize(
    "kwargs", [{"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"top_k": -1}, {"max_new_tokens": 0}, {"repetition_penalty": 0}, {"seed": -5}]
)
def test_sampling_out_of_range(kwargs):
    with pytest.raises(UsageError):
        Sampling(**kwargs).validated()


def test_empty_prompt_still_generates(chat):
    assert isinstance(run(chat, "", Sampling(max_new_tokens=4, seed=0))[-1], GenerationFinished)
