"""One chat completion (and one stream) with the official openai SDK, configured only through
the standard environment (OPENAI_BASE_URL, OPENAI_API_KEY) — exactly what an agent does.
Prints one JSON line: {"content": …, "streamed": …}. Exits 3 on an authentication error."""

import json
import sys

import openai

client = openai.OpenAI(max_retries=0)
try:
    a = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        if c.choices
    )
except openai.AuthenticationError as e:
    print(json.dumps({"error": e.body}))
    sys.exit(3)
print(json.dumps({"content": a.choices[0].message.content, "streamed": streamed}))
