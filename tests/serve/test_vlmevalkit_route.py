"""The request VLMEvalKit's OpenAI-compatible API model sends (vlmeval/api/gpt.py, `OpenAIWrapper`, used
through the `GPT4V` class with `api_base` set): a POST to the full chat-completions URL with a bearer
header; the image as a JPEG data URI with `detail`; temperature 0; max_tokens (its default 2048 exceeds
toy-llava's 256-position context and is refused with a 400, so the config entry sets 64); the
config entry's extra keyword arguments (here `halluc`) merged into the JSON body; `n` dropped for a
non-OpenAI base. It reads choices[0].message.content, or the `data:` lines of a stream."""
from __future__ import annotations

import base64
import io
import json

import httpx
from PIL import Image

import halluc
from tests.serve.live import LiveServer


def jpeg_uri(path) -> str:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, "JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_a_vlmevalkit_shaped_request_is_answered(toy_llava, scenes):
    path, question = scenes[0]
    payload = {"model": "toy-llava", "temperature": 0, "max_tokens": 64,
               "halluc": {"method": "vcd", "vcd.alpha": 1},
               "messages": [{"role": "user", "content": [
                   {"type": "image_url", "image_url": {"url": jpeg_uri(path), "detail": "low"}},
                   {"type": "text", "text": question}]}]}
    with LiveServer(toy_llava, api_key="vlmeval-key") as live:
        url = live.url + "/v1/chat/completions"  # VLMEvalKit's api_base is this full URL
        headers = {"Content-Type": "application/json", "Authorization": "Bearer vlmeval-key"}
        reply = httpx.post(url, headers=headers, content=json.dumps(payload), timeout=120)
        streamed = httpx.post(url, headers=headers, content=json.dumps({**payload, "stream": True}), timeout=120)
        too_long = httpx.post(url, headers=headers, content=json.dumps({**payload, "max_tokens": 2048}), timeout=120)
    assert too_long.status_code == 400 and "ask for at most" in too_long.json()["error"]["message"]
    assert reply.status_code == 200, reply.text
    answer = reply.json()["choices"][0]["message"]["content"].strip()
    jpeg = Image.open(io.BytesIO(base64.b64decode(jpeg_uri(path).split(",", 1)[1]))).convert("RGB")
    assert answer == halluc.generate(toy_llava, [jpeg], [question], "vcd", max_new_tokens=64, alpha=1)[0]
    pieces = [json.loads(line[5:])["choices"][0]["delta"].get("content") or ""
              for line in streamed.text.splitlines() if line.startswith("data:") and line[5:].strip() != "[DONE]"]
    assert "".join(pieces).strip() == answer
