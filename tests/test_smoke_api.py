from tests.conftest import two_route_config
from tests.fakes import Fail, Reply


def test_chat_through_gateway(primary, backup, write_config, serve):
    served = serve(write_config(two_route_config(primary, backup)))
    client = served.client()
    primary.script(Fail(500), Reply("from primary"))
    raw = client.chat.completions.with_raw_response.create(model="triage", messages=[{"role": "user", "content": "hi"}])
    resp = raw.parse()
    assert resp.choices[0].message.content == "from primary"
    assert raw.headers["x-shipyard-route"] == "primary/gpt-4o-mini"
    assert raw.headers["x-shipyard-attempts"] == "2"
    stream = client.chat.completions.create(model="triage", messages=[{"role": "user", "content": "hi"}], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "hello from the fake"
