"""The proof of concept, now going through Shipyard: the same OpenAI SDK code, pointed at the gateway.

    shipyard serve --config examples/support-triage/shipyard.yaml     # in one terminal
    python examples/support-triage/poc.py                             # in another

The gateway is at http://127.0.0.1:8787/v1 unless SHIPYARD_URL says otherwise (e.g.
SHIPYARD_URL=http://127.0.0.1:9000, with or without the trailing /v1). The "model" of each call is the
name of a Shipyard feature; the gateway picks the real model (primary, backup, or the local classifier).
"""

from __future__ import annotations

import json
import os
import sys

import httpx
import openai

TICKETS = [
    "Hi, I was charged twice for my subscription this month. Can you refund one of the payments?",
    "The mobile app crashes every time I try to upload a photo, since the last update.",
    "I lost my phone and can't log in anymore because of two-factor authentication.",
]
STREAMED = "Do you have a public roadmap? I'd love to see what's coming next."
INTENT = "My invoice shows 12 seats but we only have 8 people on the team."


def gateway_url() -> str:
    url = os.environ.get("SHIPYARD_URL", "http://127.0.0.1:8787/v1").rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def show(title: str, answer: object, headers: httpx.Headers) -> None:
    print(f"== {title}")
    print(f"   answer:   {answer if isinstance(answer, str) else json.dumps(answer)}")
    print(f"   route:    {headers.get('x-shipyard-route')}")
    print(f"   trace id: {headers.get('x-shipyard-trace-id')}")


def main() -> int:
    base = gateway_url()
    client = openai.OpenAI(base_url=base, api_key=os.environ.get("SHIPYARD_API_KEY", "unused"), max_retries=0,
                           timeout=30)
    try:
        # 1. Plain chat calls, reading the answer and the gateway's headers.
        for ticket in TICKETS:
            raw = client.chat.completions.with_raw_response.create(
                model="support-triage", messages=[{"role": "user", "content": ticket}]
            )
            completion = raw.parse()
            show(f"support-triage: {ticket}", completion.choices[0].message.content, raw.headers)

        # 2. Streaming: the headers arrive before the first chunk; parse() gives the chunk stream.
        raw = client.chat.completions.with_raw_response.create(
            model="support-triage", messages=[{"role": "user", "content": STREAMED}], stream=True
        )
        with raw.parse() as stream:
            text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        show(f"support-triage (streamed): {STREAMED}", text, raw.headers)

        # 3. A typed feature: JSON in, JSON out, checked against the feature's schemas.
        with httpx.Client(timeout=30) as http:
            resp = http.post(f"{base}/features/extract-intent/invoke", json={"input": {"text": INTENT}})
            resp.raise_for_status()
            show(f"extract-intent: {INTENT}", resp.json()["output"], resp.headers)
    except (openai.APIConnectionError, httpx.ConnectError):
        print(
            f"error: no Shipyard gateway answers at {base}.\n"
            "Start it first:  shipyard serve --config examples/support-triage/shipyard.yaml\n"
            "or point SHIPYARD_URL at a running one.",
            file=sys.stderr,
        )
        return 1
    except (openai.APIStatusError, httpx.HTTPStatusError) as exc:
        response = exc.response
        print(f"error: the gateway answered {response.status_code}: {response.text}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
