import copy
import threading

import pytest

from engine.errors import UsageError
from engine.events import GenerationFinished, GenerationStarted, TokenGenerated
from engine.generation.chat_model import ChatModel, GenerationJob
from engine.store.settings import Sampling


@pytest.fixture(scope="module")
def chat(tiny_checkpoint):
    return ChatModel.from_checkpoint(tiny_checkpoint, device="cpu")


def with_eos(chat, token_id):
    """The same model with another end token (None: no end token, so only the length stops it)."""
    tok = copy.deepcopy(chat.tokenizer)
    tok.eos_token = None if token_id is None else tok.convert_ids_to_tokens(token_id)
    assert tok.eos_token_id == token_id
    other = ChatModel(model=chat.model, tokenizer=tok, name=chat.name, device=chat.device)
    other.stop_ids = [] if token_id is None else [token_id]  # not the checkpoint's generation_config
    return other


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


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(1.0, 0, 1.0), (0.8, 50, 0.95), (1.3, 20, 1.0), (0.7, 0, 0.9), (1.0, 5, 0.5), (0.5, 100, 0.3), (2.0, 1, 0.9), (1.0, 70_000, 0.8)],
)
def test_sampling_distribution_is_the_transformers_warpers(temperature, top_k, top_p):
    """What the decode loop samples from: the probabilities transformers' Temperature -> TopK
    -> TopP warpers leave, token for token."""
    import torch
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from engine.generation.chat_model import _distribution

    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    s = Sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        scores = torch.randn(1, 5_000, generator=gen) * 3
        want = torch.softmax(warpers(torch.zeros(1, 1, dtype=torch.long), scores.clone()), dim=-1)
        probs, idx = _distribution(scores.clone(), s)
        got = torch.zeros_like(want)
        got.scatter_(1, idx, probs) if idx is not None else got.copy_(probs)
        got /= got.sum()
        assert torch.equal(got > 0, want > 0)  # the same tokens kept
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_sampling_draws_what_torch_multinomial_draws():
    """The sampler's shortcut takes the same draws from the generator as torch.multinomial."""
    import torch

    from engine.generation.chat_model import _multinomial

    source = torch.Generator().manual_seed(0)
    for size in (1, 2, 50, 5_000):
        probs = torch.softmax(torch.randn(1, size, generator=source) * 3, dim=-1)
        ours, theirs = torch.Generator().manual_seed(size), torch.Generator().manual_seed(size)
        got = [int(_multinomial(probs, ours)) for _ in range(200)]
        assert got == [int(torch.multinomial(probs, 1, generator=theirs)) for _ in range(200)]
    assert len(set(got)) > 20  # it does sample


def test_repetition_penalty_is_the_transformers_processor():
    import torch
    from transformers import RepetitionPenaltyLogitsProcessor

    from engine.generation.chat_model import _penalize

    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(1, 1_000, generator=gen)
    ids = torch.randint(0, 1_000, (1, 300), generator=gen)  # repeats included
    for penalty in (1.1, 0.7, 2.0):
        want = RepetitionPenaltyLogitsProcessor(penalty)(ids, scores.clone())
        assert torch.equal(_penalize(scores.clone(), ids, penalty), want)


# --- the fast decode path (engine/generation/fast_decode.py) against the reference and model.generate ---


def _chat_on(chat, decode):
    return ChatModel(model=chat.model, tokenizer=chat.tokenizer, name=chat.name, device="cpu", decode=decode)


@pytest.fixture(scope="module", params=["gpt2", "llama", "llama-gqa"])
def fast_model(request, chat):
    """A model of each family with a fast decoder: the trained tiny GPT-2, and Llama-style
    models (``--arch llama``; one with grouped-query attention) with fresh weights drawn wide
    enough (std 0.3) that greedy decoding meets no near-ties between logits."""
    if request.param == "gpt2":
        return chat
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = chat.tokenizer
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=1 if request.param == "llama-gqa" else 4, max_position_embeddings=64,
                      tie_word_embeddings=True, initializer_range=0.3, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg).eval()
    return ChatModel(model=model, tokenizer=tok, name=request.param, device="cpu")


def _hidden_weight(model):
    """A weight inside the first block, whatever the family."""
    if model.config.model_type == "llama":
        return model.model.layers[0].mlp.gate_proj.weight
    return model.transformer.h[0].mlp.c_fc.weight


def _generate_greedy_text(chat, prompt_ids, n, repetition_penalty=1.0):
    """``model.generate`` greedy: the new text as the stream spells it (after eos: nothing)."""
    import torch

    tok = chat.tokenizer
    out = chat.model.generate(
        input_ids=torch.tensor([prompt_ids]),
        attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
        max_new_tokens=n,
        do_sample=False,
        repetition_penalty=repetition_penalty,
        pad_token_id=tok.eos_token_id,
    )
    new = out[0, len(prompt_ids) :].tolist()
    if tok.eos_token_id in new:
        new = new[: new.index(tok.eos_token_id)]
    ctx = prompt_ids[-5:]
    return tok.decode(ctx + new)[len(tok.decode(ctx)) :]


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_fast_path_greedy_equals_reference_and_generate(fast_model, penalty):
    fast, ref = _chat_on(fast_model, "fast"), _chat_on(fast_model, "reference")
    assert fast.decode_path == "fast" and ref.decode_path == "reference"
    for prompt in ("And God said unto Moses", "In the beginning", "the king"):
        ids = fast_model.encode(prompt)
        n = fast_model.n_positions - len(ids) - 1  # within the window: model.generate cannot slide
        s = Sampling(temperature=0, max_new_tokens=n, repetition_penalty=penalty)
        got, want = fast.generate_text(ids, s), ref.generate_text(ids, s)
        assert got == want
        assert got == _generate_greedy_text(fast_model, ids, n, penalty)


def test_fast_path_samples_the_same_tokens_for_a_seed(fast_model):
    fast, ref = _chat_on(fast_model, "fast"), _chat_on(fast_model, "reference")
    s = Sampling(temperature=1.0, top_k=20, top_p=0.9, repetition_penalty=1.1, max_new_tokens=40, seed=7)
    assert fast.generate_text("The LORD", s) == ref.generate_text("The LORD", s)


def test_fast_path_slides_the_window_like_the_reference(fast_model):
    fast, ref = _chat_on(fast_model, "fast"), _chat_on(fast_model, "reference")
    s = Sampling(temperature=0, max_new_tokens=3 * fast_model.n_positions, repetition_penalty=1.2)
    events = list(fast.stream("And the king said", s))
    done = events[-1]
    assert isinstance(done, GenerationFinished)
    assert done.text == ref.generate_text("And the king said", s)
    # the penalty keeps greedy away from eos long enough to pass the window several times
    assert done.new_tokens > fast_model.n_positions, done


@pytest.mark.parametrize("decode", ["fast", "reference"])
def test_cancel_stops_within_one_token_on_both_paths(fast_model, decode):
    c = _chat_on(fast_model, decode)
    c.stop_ids = []  # no end token: only the stop (or 500 tokens) ends the reply, so it is cancelled mid-reply
    stop = threading.Event()
    tokens = []
    s = Sampling(max_new_tokens=500, seed=1, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
    for event in c.stream("And", s, stop):
        if isinstance(event, TokenGenerated):
            tokens.append(event)
            if len(tokens) == 3:
                stop.set()  # from the consumer, while the decode waits at this token's yield
    done = event
    assert isinstance(done, GenerationFinished), done
    assert done.stop_reason == "cancelled", done
    # not one token after the stop (a token that ends inside a character yields no text,
    # so count tokens by index, not by events)
    assert len(tokens) == 3 and done.new_tokens == tokens[-1].index + 1, (len(tokens), done.new_tokens, tokens[-1].index)
    # stop set before the reply starts: no token at all
    stop = threading.Event()
    stop.set()
    events = list(c.stream("And", s, stop))
    assert not [e for e in events if isinstance(e, TokenGenerated)] and events[-1].stop_reason == "cancelled"


def test_auto_takes_the_fast_path_after_warm_up(fast_model):
    c = _chat_on(fast_model, "auto")
    assert c.decode_path == "reference" and "warming up" in c.decode_note
    assert c.warm_up() == "fast"
    assert c.decode_path == "fast"
    assert _chat_on(fast_model, "reference").warm_up() == "reference (chosen)"


@pytest.mark.parametrize("which", ["hidden", "head"])
def test_fast_path_sees_weight_updates(fast_model, which):
    """No stale copies: a training step between samples changes the weights in place (the
    fast path's transposed copy of the LM head included)."""
    import torch

    fast, ref = _chat_on(fast_model, "fast"), _chat_on(fast_model, "reference")
    s = Sampling(temperature=0, max_new_tokens=20, repetition_penalty=1.0)
    before = fast.generate_text("The LORD", s)
    w = _hidden_weight(fast_model.model) if which == "hidden" else fast_model.model.get_output_embeddings().weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.mul_(-3.0)
        assert fast.generate_text("The LORD", s) == ref.generate_text("The LORD", s)
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert fast.generate_text("The LORD", s) == before


def test_models_without_a_fast_path_use_the_reference(chat):
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(vocab_size=len(chat.tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    c = ChatModel(model=MistralForCausalLM(cfg).eval(), tokenizer=chat.tokenizer, name="mistral", device="cpu", decode="fast")
    assert c.decode_path == "reference" and "mistral" in c.decode_note
    assert c.warm_up().startswith("reference")
    assert isinstance(list(c.stream("Hello", Sampling(max_new_tokens=4, seed=0)))[-1], GenerationFinished)


def test_unknown_decode_path_is_a_clear_error(chat):
    from engine.errors import CheckpointError

    with pytest.raises(CheckpointError, match="unknown decode path"):
        _chat_on(chat, "turbo")


@pytest.mark.parametrize("decode", ["fast", "reference"])
def test_token_details_match_a_direct_forward_pass(chat, decode):
    """The inspector's numbers: p(token) and the top 10 at each step, recorded while streaming,
    equal the softmax of one plain forward pass over prompt + reply."""
    import torch

    c = _chat_on(chat, decode)
    if decode == "fast":
        c.warm_up()
    prompt = c.encode("And God said")
    events = list(c.stream(prompt, Sampling(temperature=0.7, top_k=20, max_new_tokens=12, seed=4), details=True))
    choices = [ch for e in events if isinstance(e, TokenGenerated) for ch in e.choices]
    finished = events[-1]
    assert isinstance(finished, GenerationFinished) and len(choices) == finished.new_tokens > 0
    ids = prompt + [ch.token_id for ch in choices]
    with torch.no_grad():
        probs = chat.model(input_ids=torch.tensor([ids])).logits[0].float().softmax(-1)
    for i, ch in enumerate(choices):
        expected = probs[len(prompt) - 1 + i]
        assert abs(ch.prob - float(expected[ch.token_id])) < 1e-4
        top_p = expected.topk(10).values
        assert len(ch.alternatives) == 10
        assert all(abs(p - float(q)) < 1e-4 for (_, p), q in zip(ch.alternatives, top_p))  # the 10 best, in order
        assert all(abs(p - float(expected[t])) < 1e-4 for t, p in ch.alternatives)  # each one's own probability
    # the tokens spell the reply
    assert chat.tokenizer.decode([ch.token_id for ch in choices]).strip() == finished.text.strip()
    # without details, nothing extra is carried
    plain = [e for e in c.stream(prompt, Sampling(max_new_tokens=3, seed=4)) if isinstance(e, TokenGenerated)]
    assert all(e.choices == () for e in plain)


@pytest.mark.parametrize("streaming", ["DecodeStream", "decode twice"])
def test_detokenizer_emits_whole_characters_and_the_same_text(chat, streaming):
    """Pieces never split a character (byte-level tokens cut emoji and accents into bytes), keep
    the leading space after the prompt, and join to exactly what decode gives for the reply."""
    from engine.generation.chat_model import _Detokenizer

    tok = chat.tokenizer
    context = tok("And he said", add_special_tokens=False)["input_ids"]
    reply = tok(" caf\u00e9 \U0001F600 na\u00efve \u2014 done", add_special_tokens=False)["input_ids"]
    detok = _Detokenizer(tok, context)
    if streaming == "decode twice":
        detok.backend = None  # the path for tokenizers without a Rust backend
    pieces = [detok.push(t) for t in reply]
    pieces.append(detok.flush())
    assert "".join(pieces) == tok.decode(reply) == " caf\u00e9 \U0001F600 na\u00efve \u2014 done"
    assert not any("\ufffd" in p for p in pieces)
    assert pieces[0].startswith(" ")


def test_detokenizer_flush_gives_a_cut_character_as_replacement(chat):
    from engine.generation.chat_model import _Detokenizer

    tok = chat.tokenizer
    ids = tok("\U0001F600", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1  # the emoji is several byte tokens
    detok = _Detokenizer(tok, [])
    assert [detok.push(t) for t in ids[:-1]] == [""] * (len(ids) - 1)  # nothing whole yet
    tail = detok.flush()
    assert tail == tok.decode(ids[:-1]) and "\ufffd" in tail
    assert detok.flush() == ""
