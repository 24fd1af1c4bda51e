"""Where a request's image may come from: data URIs; local files only under --image-dir (symlinks and '..'
cannot leave it); http(s) URLs only with --allow-remote-images, size-capped."""
from __future__ import annotations

import functools
import http.server
import shutil
import threading

import openai
import pytest

import halluc
from halluc.serve.images import ImagePolicy, fetch_image
from halluc.serve.schema import APIError
from tests.serve.live import LiveServer, data_uri, image_message


def policy(image_dir=None, allow_remote=False, max_pixels=10**6, max_bytes=10**6) -> ImagePolicy:
    return ImagePolicy(image_dir, allow_remote, max_pixels, max_bytes, remote_timeout_s=5)


@pytest.fixture
def image_dir(tmp_path, scenes):
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    shutil.copy(scenes[0][0], allowed / "sub" / "scene.png")
    outside = tmp_path / "secret.png"
    shutil.copy(scenes[1][0], outside)
    (allowed / "link.png").symlink_to(outside)
    return allowed


def test_local_files_only_under_the_allowed_directory(image_dir):
    allowed = policy(image_dir)
    inside = fetch_image(f"file://{image_dir}/sub/scene.png", allowed)
    assert inside.size == (96, 96)
    assert fetch_image("sub/scene.png", allowed).tobytes() == inside.tobytes()  # relative to the directory
    refused = {
        f"file://{image_dir}/../secret.png": "outside the allowed directory",
        "../secret.png": "outside the allowed directory",
        f"file://{image_dir}/link.png": "outside the allowed directory",  # a symlink pointing out
        f"file://{image_dir}/missing.png": "not found",
        f"file://{image_dir}/sub": "not a regular file",
        "file://otherhost/etc/passwd": "must name this machine",
    }
    for url, reason in refused.items():
        with pytest.raises(APIError, match=reason):
            fetch_image(url, allowed)
    with pytest.raises(APIError, match="--image-dir"):
        fetch_image(f"file://{image_dir}/sub/scene.png", policy(None))
    with pytest.raises(APIError, match="over 10 bytes"):
        fetch_image(f"file://{image_dir}/sub/scene.png", policy(image_dir, max_bytes=10))


@pytest.fixture
def image_host(scenes):
    """A plain HTTP server on 127.0.0.1 serving the scenes' folder."""
    handler = functools.partial(_QuietHandler, directory=str(scenes[0][0].parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_remote_images_only_when_allowed(image_host, scenes):
    url = f"{image_host}/{scenes[0][0].name}"
    with pytest.raises(APIError, match="--allow-remote-images"):
        fetch_image(url, policy())
    assert fetch_image(url, policy(allow_remote=True)).size == (96, 96)
    with pytest.raises(APIError, match="HTTP 404"):
        fetch_image(f"{image_host}/missing.png", policy(allow_remote=True))
    with pytest.raises(APIError, match="over 100 bytes"):
        fetch_image(url, policy(allow_remote=True, max_bytes=100))


def test_a_served_local_file_answers_like_the_same_image_inline(toy_llava, image_dir, scenes):
    prompt = scenes[0][1]
    with LiveServer(toy_llava, image_dir=image_dir) as live:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
        answers = [client.chat.completions.create(model="toy-llava", messages=image_message(url, prompt),
                                                  max_tokens=8).choices[0].message.content
                   for url in (f"file://{image_dir}/sub/scene.png", "sub/scene.png", data_uri(scenes[0][0]))]
        with pytest.raises(openai.BadRequestError, match="outside the allowed directory"):
            client.chat.completions.create(model="toy-llava", messages=image_message("link.png", prompt))
    assert answers == [halluc.generate(toy_llava, [scenes[0][0]], [prompt], max_new_tokens=8)[0]] * 3
