"""Conformance check: the official `openai` Python package against a running Confab relay.

`server/tests/cli.rs` runs this script with a relay serving the built-in demo upstream and a site
that accepts calls without an Origin header (as native apps make them). It reads:

    CONFAB_BASE_URL          the relay's API root, for example http://127.0.0.1:PORT/v1
    CONFAB_API_KEY           that site's key
    CONFAB_GROUNDED_API_KEY  (optional) the key of a site with knowledge, whose streamed
                             answers end with the relay's sources chunk

It exits 0 when every check passes, and otherwise prints what failed to stderr and exits 1.
Checks raise `CheckFailed` rather than using `assert`, which `python -O` would strip.
"""

import os
import sys

import openai
from openai import OpenAI

MODEL = "confab-demo"
QUESTION = "conformance check"
MESSAGES = [{"role": "user", "content": QUESTION}]


class CheckFailed(Exception):
    """A conformance check did not hold."""


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def check_usage(usage, where):
    check(usage is not None, f"{where}: no usage")
    check(usage.prompt_tokens > 0, f"{where}: prompt_tokens is {usage.prompt_tokens}")
    check(usage.completion_tokens > 0, f"{where}: completion_tokens is {usage.completion_tokens}")
    check(
        usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
        f"{where}: total_tokens {usage.total_tokens} is not "
        f"{usage.prompt_tokens} + {usage.completion_tokens}",
    )


def non_streaming(client):
    """A plain completion; returns its text and usage for the streaming check to compare."""
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    check(completion.object == "chat.completion", f"object is {completion.object!r}")
    check(completion.model == MODEL, f"model is {completion.model!r}, not {MODEL!r}")
    check(len(completion.choices) == 1, f"{len(completion.choices)} choices, not 1")
    choice = completion.choices[0]
    check(choice.message.role == "assistant", f"role is {choice.message.role!r}")
    content = choice.message.content or ""
    check(QUESTION in content, f"the answer does not repeat the question: {content!r}")
    check(choice.finish_reason == "stop", f"finish_reason is {choice.finish_reason!r}")
    check_usage(completion.usage, "non-streaming")
    return content, completion.usage


def stream_with_usage(client):
    """Every chunk of the question's answer, streamed with usage."""
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    return list(stream)


def streaming(client, expected_text, expected_usage):
    """The same question, streamed with usage: same text, usage in a last chunk with no choices."""
    chunks = stream_with_usage(client)
    check(len(chunks) >= 3, f"only {len(chunks)} chunks")
    for chunk in chunks:
        check(chunk.object == "chat.completion.chunk", f"chunk object is {chunk.object!r}")
        check(chunk.model == MODEL, f"chunk model is {chunk.model!r}")
    *answer, last = chunks
    check(last.choices == [], f"the last chunk has choices: {last.choices!r}")
    check_usage(last.usage, "streaming")
    check(
        last.usage.model_dump() == expected_usage.model_dump(),
        f"streamed usage {last.usage!r} differs from the non-streaming {expected_usage!r}",
    )
    for chunk in answer:
        check(len(chunk.choices) == 1, f"a chunk before the last has {len(chunk.choices)} choices")
    text = "".join(chunk.choices[0].delta.content or "" for chunk in answer)
    check(QUESTION in text, f"the streamed answer does not repeat the question: {text!r}")
    check(text == expected_text, f"streamed text differs:\n{text!r}\nvs\n{expected_text!r}")
    finish = [c.choices[0].finish_reason for c in answer if c.choices[0].finish_reason]
    check(finish == ["stop"], f"finish reasons are {finish!r}, not ['stop']")
    return len(chunks)


def grounded_streaming(client):
    """A site with knowledge: the sources chunk (no choices, an extra `confab` field) passes
    through the client like the usage chunk, and the answer's text is whole."""
    chunks = stream_with_usage(client)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(QUESTION in text, f"the grounded answer does not repeat the question: {text!r}")
    extras = [c for c in chunks if not c.choices and getattr(c, "confab", None)]
    check(len(extras) == 1, f"{len(extras)} sources chunks, not 1")
    sources = extras[0].confab.get("sources") if isinstance(extras[0].confab, dict) else None
    check(
        isinstance(sources, list) and sources and sources[0].get("title") == "Conformance",
        f"sources are {sources!r}",
    )
    check(chunks[-1].usage is not None, "the last chunk has no usage")
    return len(sources)


def models(client):
    ids = [model.id for model in client.models.list()]
    check(ids == [MODEL], f"models are {ids!r}, not [{MODEL!r}]")


def wrong_key(base_url, key):
    """A key with a changed secret is refused with a 401 in the OpenAI error shape."""
    forged = key[:-1] + ("a" if key[-1] != "a" else "b")
    client = OpenAI(base_url=base_url, api_key=forged, timeout=30.0, max_retries=0)
    try:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    except openai.AuthenticationError as e:
        check(e.status_code == 401, f"status is {e.status_code}")
        check(isinstance(e.body, dict), f"error body is not an object: {e.body!r}")
        check(e.body.get("code") == "invalid_api_key", f"error body is {e.body!r}")
        check(e.body.get("type") == "authentication_error", f"error body is {e.body!r}")
        check(isinstance(e.body.get("message"), str) and e.body["message"], f"body: {e.body!r}")
        check(e.code == "invalid_api_key", f"error code is {e.code!r}")
        return
    raise CheckFailed("a wrong key was accepted")


def main():
    base_url = os.environ.get("CONFAB_BASE_URL")
    key = os.environ.get("CONFAB_API_KEY")
    if not base_url or not key:
        print("FAIL: set CONFAB_BASE_URL and CONFAB_API_KEY", file=sys.stderr)
        return 2

    # Bounded waits and no retries: a flaky relay must fail this check, not be papered over.
    client = OpenAI(base_url=base_url, api_key=key, timeout=30.0, max_retries=0)
    step = "start"
    try:
        step = "non-streaming completion"
        text, usage = non_streaming(client)
        print(f"ok: {step} ({usage.prompt_tokens}+{usage.completion_tokens} tokens)")
        step = "streaming completion with usage"
        count = streaming(client, text, usage)
        print(f"ok: {step} ({count} chunks)")
        grounded_key = os.environ.get("CONFAB_GROUNDED_API_KEY")
        if grounded_key:
            step = "streaming a grounded answer"
            grounded = OpenAI(base_url=base_url, api_key=grounded_key, timeout=30.0, max_retries=0)
            sources = grounded_streaming(grounded)
            print(f"ok: {step} ({sources} source)")
        step = "model list"
        models(client)
        print(f"ok: {step}")
        step = "wrong key"
        wrong_key(base_url, key)
        print(f"ok: {step} (401 invalid_api_key)")
    except CheckFailed as e:
        print(f"FAIL: {step}: {e}", file=sys.stderr)
        return 1
    except openai.APIError as e:
        status = getattr(e, "status_code", None)
        print(
            f"FAIL: {step}: {type(e).__name__} (status {status}): {e.message}; body: {e.body!r}",
            file=sys.stderr,
        )
        return 1
    print(f"openai {openai.__version__}: all checks passed against {base_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
