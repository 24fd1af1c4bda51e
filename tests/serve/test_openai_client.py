"""The real `openai` client against a live server on 127.0.0.1: answers equal `halluc.generate`'s, alone
and under concurrency, with the method chosen per request; streaming; sampling with a seed."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

import halluc
from tests.serve.live import data_uri, image_message

CAPTION = "Please describe this image in detail."


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def ask(client, path, prompt, model="toy-llava", **kwargs):
    reply = client.chat.completions.create(model=model, messages=image_message(data_uri(path), prompt), **kwargs)
    return reply.choices[0]


@pytest.mark.parametrize("route", ["plain", "model name", "extra_body"])
def test_greedy_answers_equal_halluc_generate(client, toy_llava, scenes, route):
    method, params = ("none", {}) if route == "plain" else ("vcd", {"vcd.alpha": 2.0})
    model = "toy-llava+vcd" if route == "model name" else "toy-llava"
    extra = {"halluc": {"method": "vcd", "vcd.alpha": 2.0}} if route == "extra_body" else None
    extra = extra or ({"halluc": {"vcd.alpha": 2.0}} if route == "model name" else None)
    changed = False
    for path, prompt in [*scenes[:2], (scenes[2][0], CAPTION)]:
        expected = halluc.generate(toy_llava, [path], [prompt], method, max_new_tokens=24, **params)[0]
        choice = ask(client, path, prompt, model=model, max_tokens=24, extra_body=extra)
        assert choice.message.content == expected
        assert choice.finish_reason in ("stop", "length")
        changed |= expected != halluc.generate(toy_llava, [path], [prompt], max_new_tokens=24)[0]
    assert changed == (method != "none")  # the method reached the model: it changes the caption


def test_concurrent_requests_are_batched_and_answer_as_alone(client, toy_llava, scenes, server):
    jobs = [(path, prompt, method) for method in ("none", "vcd") for path, prompt in scenes + [(scenes[1][0], CAPTION)]]
    expected = {(str(p), q, m): halluc.generate(toy_llava, [p], [q], m, max_new_tokens=16)[0] for p, q, m in jobs}
    before = server.batches
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: ask(client, job[0], job[1], model=f"toy-llava+{job[2]}",
                                                max_tokens=16).message.content, jobs))
    assert answers == [expected[(str(p), q, m)] for p, q, m in jobs]
    # ten requests of two methods: two groups, so far fewer batches than requests
    assert server.batches - before <= len(jobs) // 2


def test_streaming_gives_the_same_text_in_pieces(client, scenes):
    path = scenes[0][0]
    whole = ask(client, path, CAPTION, max_tokens=32)
    stream = client.chat.completions.create(model="toy-llava", messages=image_message(data_uri(path), CAPTION),
                                            max_tokens=32, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks]
    assert len([p for p in pieces if p]) > 3  # a caption arrives in several pieces
    assert "".join(pieces) == whole.message.content
    assert chunks[-1].choices[0].finish_reason == whole.finish_reason


def test_finish_reason_length_when_max_tokens_cuts_the_answer(client, toy_llava, scenes):
    path = scenes[0][0]
    expected = halluc.generate(toy_llava, [path], [CAPTION], max_new_tokens=3, return_scores=True)
    choice = ask(client, path, CAPTION, max_tokens=3)
    assert len(expected.tokens[0]) == 3 and choice.message.content == expected.texts[0]
    assert choice.finish_reason == "length"
    assert ask(client, path, scenes[0][1], max_tokens=8).finish_reason == "stop"


def test_sampling_follows_its_seed(client, toy_llava, scenes):
    path = scenes[0][0]
    settings = dict(temperature=1.0, top_p=0.9, seed=7)
    expected = halluc.generate(toy_llava, [path], [CAPTION], max_new_tokens=24, do_sample=True, **settings)[0]
    first = ask(client, path, CAPTION, max_tokens=24, **settings).message.content
    assert first == expected == ask(client, path, CAPTION, max_tokens=24, **settings).message.content


def test_models_and_health(client, server, toy_llava):
    import httpx

    ids = [m.id for m in client.models.list()]
    assert ids[0] == "toy-llava" and "toy-llava+vcd" in ids
    assert all(f"toy-llava+{m}" in ids for m in halluc.available_methods(toy_llava))
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == "toy-llava"


def test_the_server_default_method_applies_when_a_request_names_none(toy_llava, scenes):
    from tests.serve.live import LiveServer

    path, prompt = scenes[2][0], CAPTION
    with LiveServer(toy_llava, method=("vcd",), params={"alpha": 2.0}) as live:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
        default = ask(client, path, prompt, max_tokens=24)
        vanilla = ask(client, path, prompt, model="toy-llava+none", max_tokens=24)
    assert default.message.content == halluc.generate(toy_llava, [path], [prompt], "vcd", max_new_tokens=24,
                                                      alpha=2.0)[0]
    assert vanilla.message.content == halluc.generate(toy_llava, [path], [prompt], max_new_tokens=24)[0]
