"""The OpenAI-compatible API of charrnn serve, with the official `openai` package as the client
(streaming included), against a real server process: the same seed gives the same text as
/v1/generate; what is accepted, ignored and refused is as the README says."""
import httpx
import openai
import pytest

from charrnn.serve import server
from tests.kit import SERVE_VOCAB, saved_model

pytestmark = pytest.mark.slow
KEY = "key-for-the-openai-client"


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    model = saved_model(tmp_path_factory.mktemp("openai") / "model", SERVE_VOCAB, units=32, layers=2)
    with server.spawn(model, "--max-prompts", "8", "--api-key", KEY,
                      log_path=tmp_path_factory.mktemp("logs") / "server.log") as s:
        yield s


@pytest.fixture(scope="module")
def client(spawned):
    with openai.OpenAI(base_url=spawned.url + "/v1", api_key=KEY, max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def model_id(client):
    (model,) = client.models.list().data
    assert model.id.startswith("charrnn-") and model.owned_by == "charrnn" and model.object == "model"
    return model.id


def generate(spawned, prompts, **settings) -> list[str]:
    r = httpx.post(spawned.url + "/v1/generate", json={"prompts": prompts, **settings},
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == 200, r.text
    return [text[len(p):] for p, text in zip(prompts, r.json()["texts"])]


def test_a_completion_is_the_text_of_v1_generate(spawned, client, model_id):
    got = client.completions.create(model=model_id, prompt="ROMEO:", max_tokens=40, temperature=0.7, top_p=0.9,
                                    seed=5)
    assert [c.text for c in got.choices] == generate(spawned, ["ROMEO:"], num_chars=40, temperature=0.7, top_p=0.9,
                                                     seed=5)
    (choice,) = got.choices
    assert choice.index == 0 and choice.finish_reason == "length" and len(choice.text) == 40
    assert got.model == model_id and got.object == "text_completion" and got.id.startswith("cmpl-")
    assert (got.usage.prompt_tokens, got.usage.completion_tokens, got.usage.total_tokens) == (6, 40, 46)


def test_a_list_of_prompts_with_n_choices_each_are_the_rows_of_one_request(spawned, client, model_id):
    got = client.completions.create(model=model_id, prompt=["ROMEO:", "JULIET:"], n=2, max_tokens=25, seed=3)
    rows = ["ROMEO:", "ROMEO:", "JULIET:", "JULIET:"]
    assert [c.text for c in got.choices] == generate(spawned, rows, num_chars=25, seed=3)
    assert [c.index for c in got.choices] == [0, 1, 2, 3] and got.choices[0].text != got.choices[1].text


def test_a_stream_is_the_same_text_in_pieces_and_ends_with_done(spawned, client, model_id):
    pieces, reasons, usage = {}, {}, None
    stream = client.completions.create(model=model_id, prompt=["ROMEO:", "a"], max_tokens=30, seed=8, stream=True,
                                       stream_options={"include_usage": True})
    for chunk in stream:  # the client stops at `data: [DONE]`
        for c in chunk.choices:
            pieces[c.index] = pieces.get(c.index, "") + c.text
            if c.finish_reason:
                reasons[c.index] = c.finish_reason
        usage = chunk.usage or usage
    assert [pieces[0], pieces[1]] == generate(spawned, ["ROMEO:", "a"], num_chars=30, seed=8)
    assert reasons == {0: "length", 1: "length"}
    assert (usage.prompt_tokens, usage.completion_tokens) == (7, 60)


def test_temperature_0_is_greedy_and_defaults_apply(spawned, client, model_id):
    greedy = [client.completions.create(model=model_id, prompt="ROMEO:", temperature=0, seed=s).choices[0].text
              for s in (1, 2)]
    assert greedy[0] == greedy[1] and len(greedy[0]) == 16  # OpenAI's default max_tokens


def test_a_null_is_the_fields_default_as_openais_api_defines_them(spawned, client, model_id):
    """Some clients send every field, null where they have no value (OpenAI's fields are nullable)."""
    nulls = {name: None for name in ("max_tokens", "temperature", "top_p", "seed", "n", "stream",
                                     "stream_options", "stop", "user")}
    r = httpx.post(spawned.url + "/v1/completions", json={"model": model_id, "prompt": "ROMEO:", **nulls},
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == 200, r.text
    assert [c["text"] for c in r.json()["choices"]] == [client.completions.create(model=model_id, prompt="ROMEO:")
                                                        .choices[0].text]
    assert len(r.json()["choices"][0]["text"]) == 16


@pytest.mark.parametrize("stream", [False, True])
def test_stop_cuts_the_text_before_the_first_stop_string(spawned, client, model_id, stream):
    whole = generate(spawned, ["ROMEO:"], num_chars=200, seed=4)[0]
    stop = next(whole[i:i + 2] for i in range(5, 150) if whole[i:i + 2].strip() == whole[i:i + 2])  # a 2-char string
    got = client.completions.create(model=model_id, prompt="ROMEO:", max_tokens=200, seed=4, stop=[stop, "\u2603"],
                                    stream=stream)
    if stream:
        text = "".join(c.text for chunk in got for c in chunk.choices)
    else:
        text, reason = got.choices[0].text, got.choices[0].finish_reason
        assert reason == "stop"
    assert text == whole[:whole.index(stop)] and stop not in text


@pytest.mark.parametrize("extra,param,message", [
    ({"echo": True}, "echo", "echo is not supported by charrnn"),
    ({"logprobs": 2}, "logprobs", "logprobs is not supported"),
    ({"suffix": "end"}, "suffix", "suffix is not supported"),
    ({"best_of": 3}, "best_of", "best_of other than n"),
    ({"logit_bias": {"5": 1}}, "logit_bias", "logit_bias is not supported"),
    ({"presence_penalty": 0.5}, "presence_penalty", "presence_penalty is not supported"),
    ({"frequency_penalty": 1.0}, "frequency_penalty", "frequency_penalty is not supported"),
    ({"max_tokens": 0}, "max_tokens", "max_tokens: Input should be greater than or equal to 1"),
    ({"temperature": 300.0}, "temperature", "temperature: Input should be less than or equal to 100"),
    ({"top_p": 0.0}, "top_p", "top_p: Input should be greater than 0"),
    ({"top_p": 1e-40}, None, "top_p must be 0 or of a size a 32-bit float holds"),
    ({"n": 9}, "n", "n: Input should be less than or equal to 8"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "up to 4"),
])
def test_what_charrnn_cannot_do_is_refused_naming_the_field(client, model_id, extra, param, message):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model_id, prompt="ROMEO:", **{"max_tokens": 5, **extra})
    assert message in e.value.message and e.value.param == param and e.value.type == "invalid_request_error"


def test_neutral_values_and_ignored_fields_are_accepted(client, model_id):
    got = client.completions.create(model=model_id, prompt="ROMEO:", max_tokens=5, echo=False, logprobs=None,
                                    presence_penalty=0, frequency_penalty=0, best_of=1, user="someone",
                                    logit_bias={})
    assert len(got.choices[0].text) == 5


def test_an_unknown_field_a_token_prompt_another_model_and_no_key(spawned, client, model_id):
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: tools"):
        client.completions.create(model=model_id, prompt="a", extra_body={"tools": []})
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model_id, prompt=[[1, 2, 3]])
    assert e.value.param == "prompt"
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-4", prompt="a")
    assert e.value.code == "model_not_found" and model_id in e.value.message
    with openai.OpenAI(base_url=spawned.url + "/v1", api_key="wrong", max_retries=0) as stranger:
        with pytest.raises(openai.AuthenticationError):
            stranger.completions.create(model=model_id, prompt="a")
    with pytest.raises(openai.BadRequestError, match="no character of the model's vocabulary"):
        client.completions.create(model=model_id, prompt="\u00bf\u00a1")


def test_the_openapi_document_describes_both_apis(spawned):
    doc = httpx.get(spawned.url + "/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    generate_body = doc["paths"]["/v1/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    fields = generate_body["properties"]
    assert set(fields) == {"prompt", "prompts", "stream", "num_chars", "temperature", "top_k", "top_p", "seed"}
    assert fields["num_chars"]["maximum"] == 10_000 and fields["temperature"]["minimum"] == 1e-6
    assert fields["top_p"]["exclusiveMinimum"] == 0 and fields["top_p"]["maximum"] == 1
    assert fields["seed"]["default"] == 7 and fields["prompts"]["anyOf"][0]["maxItems"] == 8
    assert generate_body["additionalProperties"] is False
    completions = doc["paths"]["/v1/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "prompt", "max_tokens", "temperature", "top_p", "seed", "n", "stream", "stop"} <= \
        set(completions["properties"])
    assert completions["properties"]["max_tokens"]["default"] == 16
    assert "/v1/models" in doc["paths"] and "GenerateResponse" in doc["components"]["schemas"]
