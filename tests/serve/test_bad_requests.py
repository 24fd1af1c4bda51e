"""Malformed and refused requests: each gets a 4xx with OpenAI's error body, and the server keeps serving."""
from __future__ import annotations

import base64
import io
import json
import socket

import httpx
import openai
import pytest
from PIL import Image

from tests.serve.live import LiveServer, data_uri, image_message

CHAT = "/v1/chat/completions"


def body(server_scenes, **changes) -> dict:
    path, prompt = server_scenes[0]
    request = {"model": "toy-llava", "max_tokens": 4, "messages": image_message(data_uri(path), prompt)}
    request.update(changes)
    return request


def png_uri(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def content(*parts) -> list[dict]:
    return [{"role": "user", "content": list(parts)}]


TEXT = {"type": "text", "text": "Is there a cup in the image?"}


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def bad_requests(scenes) -> dict[str, tuple[int, dict | bytes]]:
    """name -> (expected status, body: a JSON object, or raw bytes)."""
    good_image = image_part(data_uri(scenes[0][0]))
    b = lambda **kw: body(scenes, **kw)  # noqa: E731
    return {
        "not json": (400, b"{not json"),
        "json array": (400, b"[1, 2]"),
        "no messages": (400, {"model": "toy-llava"}),
        "empty messages": (400, b(messages=[])),
        "unknown field": (400, b(frobnicate=1)),
        "temperature too high": (400, b(temperature=5)),
        "temperature a string": (400, b(temperature="hot")),
        "temperature NaN": (400, json.dumps(b(temperature=0.5)).replace("0.5", "NaN").encode()),
        "top_p zero": (400, b(top_p=0)),
        "max_tokens zero": (400, b(max_tokens=0)),
        "max_tokens over the limit": (400, b(max_tokens=65)),
        "max_tokens a float": (400, b(max_tokens=4.5)),
        "negative seed": (400, b(seed=-1)),
        "huge seed": (400, b(seed=2**64)),
        "n = 2": (400, b(n=2)),
        "stop sequences": (400, b(stop=["."])),
        "logprobs": (400, b(logprobs=True)),
        "unknown model": (404, b(model="gpt-4o")),
        "unknown method in the model name": (400, b(model="toy-llava+vdc")),
        "unknown method in extra_body": (400, b(halluc={"method": "vdc"})),
        "method a number": (400, b(halluc={"method": 5})),
        "unknown parameter": (400, b(halluc={"method": "vcd", "vcd.alpah": 1})),
        "parameter out of range": (400, b(halluc={"method": "vcd", "vcd.beta": 5})),
        "parameter a list": (400, b(halluc={"method": "vcd", "vcd.alpha": [1]})),
        "a checkpoint to load": (400, b(halluc={"method": "halc", "halc.matcher_model": "/etc"})),
        "a checkpoint to load, bare": (400, b(halluc={"method": "agla", "matcher_model": "../weights"})),
        "model name and extra_body disagree": (400, b(model="toy-llava+vcd", halluc={"method": "vhr"})),
        "sampling with a beam-search method": (400, b(halluc={"method": "opera"}, temperature=0.7)),
        "no image": (400, b(messages=content(TEXT))),
        "plain text content": (400, b(messages=[{"role": "user", "content": "hello"}])),
        "two images": (400, b(messages=content(good_image, good_image, TEXT))),
        "no text": (400, b(messages=content(good_image))),
        "system turn": (400, b(messages=[{"role": "system", "content": "be brief"}, *content(good_image, TEXT)])),
        "two turns": (400, b(messages=[*content(good_image, TEXT), {"role": "assistant", "content": "Yes"},
                                       *content(TEXT)])),
        "unknown part type": (400, b(messages=content({"type": "audio", "audio": "x"}, TEXT))),
        "prompt too long": (400, b(messages=content(good_image, {"type": "text", "text": "cup " * 200}))),
        "data URI not base64": (400, b(messages=content(image_part("data:image/png;base64,@@@"), TEXT))),
        "data URI not an image type": (400, b(messages=content(image_part("data:text/plain;base64,aGk="), TEXT))),
        "data URI not an image": (400, b(messages=content(image_part("data:image/png;base64,aGVsbG8="), TEXT))),
        "truncated image": (400, b(messages=content(image_part(png_uri(64, 64)[:80]), TEXT))),
        "image over the pixel limit": (400, b(messages=content(image_part(png_uri(201, 200)), TEXT))),
        "remote image": (400, b(messages=content(image_part("http://127.0.0.1:9/cat.png"), TEXT))),
        "local file without --image-dir": (400, b(messages=content(image_part(f"file://{scenes[0][0]}"), TEXT))),
        "other URL scheme": (400, b(messages=content(image_part("ftp://example.com/a.png"), TEXT))),
        "body over the limit": (413, b(messages=content(image_part(data_uri(scenes[0][0])),
                                                        {"type": "text", "text": "x" * 2**20}))),
    }


def check_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error"


def test_each_bad_request_is_refused_and_the_server_keeps_serving(server, scenes):
    cases = bad_requests(scenes)
    good = body(scenes)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        expected = http.post(CHAT, json=good).json()["choices"][0]["message"]["content"]
        for name, (status, payload) in cases.items():
            raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            response = http.post(CHAT, content=raw, headers={"content-type": "application/json"})
            check_error(response, status)
            again = http.post(CHAT, json=good)  # still up, still right
            assert again.status_code == 200, (name, again.text)
            assert again.json()["choices"][0]["message"]["content"] == expected


def test_wrong_routes_and_methods_get_openai_errors(server):
    with httpx.Client(base_url=server.url) as http:
        check_error(http.get("/v1/nothing"), 404)
        check_error(http.get(CHAT), 405)
    # a body declared far over the limit is refused from its header, before any of it is read
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: 99999999999\r\n\r\n{{".encode())
        reply = b""
        while b"}}" not in reply:  # the error body's end
            more = sock.recv(65536)
            if not more:
                break
            reply += more
    head, _, payload = reply.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413") and json.loads(payload)["error"]["code"] == "body_too_large"


def test_the_openai_client_sees_a_bad_request_error(server, scenes):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="method 'vcd' has no parameter 'alpah'"):
        client.chat.completions.create(model="toy-llava", messages=image_message(data_uri(scenes[0][0]), "hi"),
                                       extra_body={"halluc": {"method": "vcd", "alpah": 1}})
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="llava", messages=image_message(data_uri(scenes[0][0]), "hi"))


@pytest.fixture(scope="module")
def keyed(toy_llava):
    with LiveServer(toy_llava, api_key="s3cret-key") as live:
        yield live


def test_the_api_key_is_required_everywhere(keyed, scenes):
    messages = image_message(data_uri(scenes[0][0]), scenes[0][1])
    for key in ("wrong", "s3cret-ke", "s3cret-key2"):
        client = openai.OpenAI(base_url=keyed.url + "/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="toy-llava", messages=messages, max_tokens=4)
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    with httpx.Client(base_url=keyed.url) as http:
        check_error(http.get("/health"), 401)
        check_error(http.post(CHAT, json={"model": "toy-llava", "messages": messages}), 401)
        check_error(http.get("/v1/models", headers={"authorization": "Basic s3cret-key"}), 401)
        assert http.get("/health", headers={"authorization": "Bearer s3cret-key"}).status_code == 200
    client = openai.OpenAI(base_url=keyed.url + "/v1", api_key="s3cret-key", max_retries=0)
    assert client.chat.completions.create(model="toy-llava", messages=messages, max_tokens=4).choices[0].message.content


def test_the_key_is_compared_in_constant_time():
    import inspect

    from halluc.serve import app

    assert "hmac.compare_digest" in inspect.getsource(app._key_check)


@pytest.mark.parametrize("extra", [{"method": "halc", "halc.detector_model": "/etc"},
                                   {"method": "agla", "matcher_model": "../weights"}])
def test_a_request_never_names_a_checkpoint_the_server_loads(extra):
    """Parameters that name a checkpoint on the server's disk (`param(..., loads=True)`) are the operator's."""
    from halluc.serve.options import ServeOptions
    from halluc.serve.requests import choose_method
    from halluc.serve.schema import APIError, parse_request

    request = parse_request(json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                        "halluc": extra}).encode())
    with pytest.raises(APIError, match="names a checkpoint this server would load from its own disk"):
        choose_method(request, ServeOptions(served_name="m"))
    operator = ServeOptions(served_name="m", method=("agla",), params={"matcher_model": "/local/blip"})
    plain = parse_request(json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode())
    assert choose_method(plain, operator) == (("agla",), {"matcher_model": "/local/blip"})
