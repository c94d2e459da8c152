"""Drives Iron with the official openai and anthropic Python SDKs (issue 2, acceptance 1).

Run by `proxy/tests/sdk_e2e.rs`, which starts the testkit mock and the real `iron-proxy`
binary and passes their addresses in the environment:

  IRON_BASE_URL   http://127.0.0.1:PORT        (the proxy)
  IRON_TOKEN      ic_…                          (an IC token for the test project)
  MOCK_URL        http://127.0.0.1:PORT         (the mock upstream, for direct answers)
  OPENAI_KEY / ANTHROPIC_KEY                    (the provider keys the mock accepts)

Every answer through Iron must equal the answer the mock gives directly.
"""

import os
import sys

import anthropic
import openai

BASE = os.environ["IRON_BASE_URL"]
TOKEN = os.environ["IRON_TOKEN"]
MOCK = os.environ["MOCK_URL"]

via_oai = openai.OpenAI(base_url=f"{BASE}/v1", api_key=TOKEN, max_retries=0)
direct_oai = openai.OpenAI(base_url=f"{MOCK}/v1", api_key=os.environ["OPENAI_KEY"], max_retries=0)
via_ant = anthropic.Anthropic(base_url=BASE, api_key=TOKEN, max_retries=0)
direct_ant = anthropic.Anthropic(base_url=MOCK, api_key=os.environ["ANTHROPIC_KEY"], max_retries=0)

MESSAGES = [{"role": "user", "content": "Say hello to the proxy"}]


def check(name, via, direct):
    if via != direct:
        print(f"FAIL {name}:\n  via iron: {via!r}\n  direct:   {direct!r}")
        sys.exit(1)
    print(f"ok {name}")


# chat.completions, non-streaming
a = via_oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
b = direct_oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
check("chat", (a.choices[0].message.content, a.usage.prompt_tokens, a.usage.completion_tokens),
      (b.choices[0].message.content, b.usage.prompt_tokens, b.usage.completion_tokens))


# chat.completions, streaming (without and with include_usage)
def stream_text(client, **extra):
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, **extra))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = [c.usage.completion_tokens for c in chunks if c.usage is not None]
    # The chunk count may differ by one: the PII redactor holds back a possible match at a
    # chunk's end and releases it in its own chunk when the choice finishes.
    return text, usage


check("chat stream", stream_text(via_oai), stream_text(direct_oai))
check("chat stream include_usage",
      stream_text(via_oai, stream_options={"include_usage": True}),
      stream_text(direct_oai, stream_options={"include_usage": True}))

# embeddings
a = via_oai.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
b = direct_oai.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
check("embeddings", [d.embedding for d in a.data], [d.embedding for d in b.data])

# models
check("models", sorted(m.id for m in via_oai.models.list()), sorted(m.id for m in direct_oai.models.list()))

# anthropic messages.create
kw = dict(model="claude-sonnet-4-5", max_tokens=64, messages=MESSAGES)
a = via_ant.messages.create(**kw)
b = direct_ant.messages.create(**kw)
check("messages", ([c.text for c in a.content], a.usage.input_tokens, a.usage.output_tokens),
      ([c.text for c in b.content], b.usage.input_tokens, b.usage.output_tokens))


# anthropic messages.stream
def ant_stream(client):
    with client.messages.stream(**kw) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    return text, final.usage.output_tokens


check("messages stream", ant_stream(via_ant), ant_stream(direct_ant))

# PII: the provider sees placeholders, the SDK client gets its values back (issue 5)
pii = ("Email jane.doe@example.com, phone +1 415 555 0132, card 4111 1111 1111 1111, SSN 536-22-8751, "
       "IBAN DE89 3704 0044 0532 0130 00, key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z.")
a = via_oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": pii}],
                                     extra_headers={"x-mock-echo": "1"})
check("pii restored (json)", a.choices[0].message.content, pii)
streamed = "".join(c.choices[0].delta.content or "" for c in via_oai.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": pii}], stream=True,
    extra_headers={"x-mock-echo": "1", "x-mock-chunks": "40"}) if c.choices)
check("pii restored (stream)", streamed, pii)

# errors surface as the SDK's typed exceptions
try:
    openai.OpenAI(base_url=f"{BASE}/v1", api_key="ic_invalid", max_retries=0).models.list()
    print("FAIL: invalid token accepted")
    sys.exit(1)
except openai.AuthenticationError as e:
    assert e.status_code == 401
    print("ok invalid token -> AuthenticationError")

print("ALL OK")
