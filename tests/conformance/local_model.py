"""Conformance checks against a real model server: the official `openai` and `anthropic` SDKs.

`scripts/conformance` runs this with llama-server serving SmolLM2-135M, once per target:

    local_model.py openai LABEL BASE_URL API_KEY MODEL
        the `openai` SDK against an OpenAI-compatible API root (the relay's /v1)
    local_model.py anthropic LABEL BASE_URL API_KEY MODEL
        the `anthropic` SDK against an Anthropic Messages API root (llama-server itself)

Each target gets a whole answer and a streamed one. A tiny model's words are not checked, only
the protocol: text arrives, the finish/stop reason is set, usage is present and adds up. Every
check is run even when an earlier one failed; each prints one line

    RESULT<TAB>LABEL: CHECK<TAB>pass|fail<TAB>SECONDS<TAB>DETAIL

(SECONDS: the whole answer's latency, or the first text's for a stream), and the script exits 1
if any failed. The SDKs never retry (`max_retries=0`), so a flaky server cannot pass by luck.
Checks raise `CheckFailed` rather than using `assert`, which `python -O` would strip.
"""

import sys
import time

QUESTION = "What is the capital of France? Answer in one short sentence."
MAX_TOKENS = 48
TIMEOUT_S = 60.0


class CheckFailed(Exception):
    """A conformance check did not hold."""


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def short(text, limit=60):
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def openai_whole(client, model):
    started = time.monotonic()
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    latency = time.monotonic() - started
    check(completion.object == "chat.completion", f"object is {completion.object!r}")
    check(len(completion.choices) == 1, f"{len(completion.choices)} choices, not 1")
    choice = completion.choices[0]
    check(choice.message.role == "assistant", f"role is {choice.message.role!r}")
    text = choice.message.content or ""
    check(text.strip() != "", "the answer has no text")
    check(choice.finish_reason in ("stop", "length"), f"finish_reason is {choice.finish_reason!r}")
    usage = completion.usage
    check(usage is not None, "no usage")
    check(usage.prompt_tokens > 0, f"prompt_tokens is {usage.prompt_tokens}")
    check(usage.completion_tokens > 0, f"completion_tokens is {usage.completion_tokens}")
    check(
        usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
        f"total_tokens {usage.total_tokens} != {usage.prompt_tokens} + {usage.completion_tokens}",
    )
    return latency, (
        f"finish_reason={choice.finish_reason} usage={usage.prompt_tokens}+"
        f"{usage.completion_tokens} text={short(text)!r}"
    )


def openai_stream(client, model):
    started = time.monotonic()
    first_text = None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish_reasons, usages, chunks = [], [], [], 0
    for chunk in stream:
        chunks += 1
        check(chunk.object == "chat.completion.chunk", f"chunk object is {chunk.object!r}")
        if chunk.usage is not None:
            usages.append(chunk.usage)
        for choice in chunk.choices:
            if choice.delta.content:
                if first_text is None:
                    first_text = time.monotonic() - started
                pieces.append(choice.delta.content)
            if choice.finish_reason is not None:
                finish_reasons.append(choice.finish_reason)
    text = "".join(pieces)
    check(text.strip() != "", f"no text in {chunks} chunks")
    check(len(pieces) >= 2, f"the text came in {len(pieces)} piece(s), not streamed")
    check(
        len(finish_reasons) == 1 and finish_reasons[0] in ("stop", "length"),
        f"finish_reasons are {finish_reasons!r}",
    )
    check(len(usages) == 1, f"{len(usages)} chunks carry usage, not 1")
    usage = usages[0]
    check(usage.prompt_tokens > 0, f"prompt_tokens is {usage.prompt_tokens}")
    check(usage.completion_tokens > 0, f"completion_tokens is {usage.completion_tokens}")
    check(
        usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
        f"total_tokens {usage.total_tokens} != {usage.prompt_tokens} + {usage.completion_tokens}",
    )
    total = time.monotonic() - started
    return first_text, (
        f"{chunks} chunks in {total:.2f} s, finish_reason={finish_reasons[0]} "
        f"usage={usage.prompt_tokens}+{usage.completion_tokens} text={short(text)!r}"
    )


def anthropic_whole(client, model):
    started = time.monotonic()
    message = client.messages.create(
        model=model,
        max_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": QUESTION}],
        # This SDK's create() no longer takes `temperature` (newer models fix it); the API does.
        extra_body={"temperature": 0},
    )
    latency = time.monotonic() - started
    check(message.type == "message", f"type is {message.type!r}")
    check(message.role == "assistant", f"role is {message.role!r}")
    texts = [block.text for block in message.content if block.type == "text"]
    check(texts and "".join(texts).strip() != "", f"no text block in {message.content!r}")
    check(
        message.stop_reason in ("end_turn", "max_tokens", "stop_sequence"),
        f"stop_reason is {message.stop_reason!r}",
    )
    prompt = message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)
    check(prompt > 0, f"input_tokens {message.usage.input_tokens} and cache reads add up to 0")
    check(message.usage.output_tokens > 0, f"output_tokens is {message.usage.output_tokens}")
    # input_tokens leaves out what was read from the prompt cache (as Anthropic counts it).
    cached = message.usage.cache_read_input_tokens
    return latency, (
        f"stop_reason={message.stop_reason} usage={message.usage.input_tokens}+"
        f"{message.usage.output_tokens} cache_read={cached} text={short(''.join(texts))!r}"
    )


def anthropic_stream(client, model):
    started = time.monotonic()
    first_text = None
    stream = client.messages.create(
        model=model,
        max_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": QUESTION}],
        # This SDK's create() no longer takes `temperature` (newer models fix it); the API does.
        extra_body={"temperature": 0},
        stream=True,
    )
    kinds, pieces, stop_reasons = [], [], []
    input_tokens = output_tokens = cached = None
    for event in stream:
        kinds.append(event.type)
        if event.type == "message_start":
            input_tokens = event.message.usage.input_tokens
            cached = event.message.usage.cache_read_input_tokens
        elif event.type == "content_block_delta" and event.delta.type == "text_delta":
            if first_text is None:
                first_text = time.monotonic() - started
            pieces.append(event.delta.text)
        elif event.type == "message_delta":
            stop_reasons.append(event.delta.stop_reason)
            # output_tokens in message_delta is cumulative: the last one is the answer's total.
            output_tokens = event.usage.output_tokens
    text = "".join(pieces)
    check(kinds[:1] == ["message_start"], f"the first event is {kinds[:1]!r}")
    check(kinds[-1:] == ["message_stop"], f"the last event is {kinds[-1:]!r}")
    for kind in ("content_block_start", "content_block_delta", "content_block_stop", "message_delta"):
        check(kind in kinds, f"no {kind} event in {sorted(set(kinds))!r}")
    check(text.strip() != "", "no text in the text deltas")
    check(len(pieces) >= 2, f"the text came in {len(pieces)} piece(s), not streamed")
    check(
        len(stop_reasons) == 1 and stop_reasons[0] in ("end_turn", "max_tokens", "stop_sequence"),
        f"stop reasons are {stop_reasons!r}",
    )
    check(
        input_tokens is not None and input_tokens + (cached or 0) > 0,
        f"message_start input_tokens is {input_tokens}, cache reads {cached}",
    )
    check(output_tokens is not None and output_tokens > 0, f"message_delta output_tokens is {output_tokens}")
    total = time.monotonic() - started
    return first_text, (
        f"{len(kinds)} events in {total:.2f} s, stop_reason={stop_reasons[0]} "
        f"usage={input_tokens}+{output_tokens} cache_read={cached} text={short(text)!r}"
    )


def main(argv):
    if len(argv) != 6 or argv[1] not in ("openai", "anthropic"):
        print(__doc__, file=sys.stderr)
        return 2
    sdk, label, base_url, api_key, model = argv[1:]
    if sdk == "openai":
        import openai

        client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=TIMEOUT_S)
        checks = [("whole answer", openai_whole), ("streamed answer", openai_stream)]
        version = openai.__version__
    else:
        import anthropic

        client = anthropic.Anthropic(
            base_url=base_url, api_key=api_key, max_retries=0, timeout=TIMEOUT_S
        )
        checks = [("whole answer", anthropic_whole), ("streamed answer", anthropic_stream)]
        version = anthropic.__version__
    failed = 0
    for name, run in checks:
        title = f"{label}: {name} ({sdk} {version})"
        try:
            seconds, detail = run(client, model)
            print(f"RESULT\t{title}\tpass\t{seconds:.3f}\t{detail}", flush=True)
        except Exception as error:  # noqa: BLE001 - every failure is reported, then counted
            failed += 1
            detail = short(f"{type(error).__name__}: {error}", 300)
            print(f"RESULT\t{title}\tfail\t-\t{detail}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
