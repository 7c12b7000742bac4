"""The LLM writer against FakeLLM: a chat-completions server on loopback, through the real openai client."""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from reelforge.script import (
    Brief,
    BriefError,
    LLMAnswerInvalid,
    LLMAuthError,
    LLMRateLimited,
    LLMRequestRejected,
    LLMServerError,
    LLMTimeout,
    LLMUnavailable,
    LLMWriter,
    OfflineWriter,
    Script,
    ScriptLimits,
    script_problems,
)
from reelforge.script.fake_llm import FakeLLM, Reply
from reelforge.settings import LLMSettings

KEY = "sk-test-5f0c1d2e3a4b5c6d7e8f"
LIMITS = ScriptLimits()
BRIEF = Brief(text="Two friends open a tiny ramen shop in Seoul.", target_duration_s=30, characters=["Mina", "Jun"])
GOOD: Script = OfflineWriter().compose(BRIEF, LIMITS)


class Sleeps:
    """Records the backoff waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    async with FakeLLM(api_key=KEY) as server:
        yield server


def _writer(server: FakeLLM, sleeps: Sleeps | None = None, **settings: Any) -> LLMWriter:
    values: dict[str, Any] = {"base_url": server.url, "api_key": SecretStr(KEY), "timeout_s": 5.0, **settings}
    return LLMWriter(LLMSettings(**values), sleep=sleeps or Sleeps())


def _broken(script: Script, **scene_changes: Any) -> dict[str, Any]:
    """The draft of ``script`` as JSON data, its second scene changed."""
    data = script.draft().model_dump(mode="json")
    data["scenes"][1].update(scene_changes)
    return data


async def test_a_valid_answer_becomes_the_script_asked_with_the_json_schema(llm: FakeLLM) -> None:
    llm.push(Reply.script(GOOD))
    script = await _writer(llm).write(BRIEF, LIMITS)
    assert script.scenes == GOOD.scenes and script.writer == "llm:gpt-4o-mini"
    assert script.characters == ["Mina", "Jun"] and script.target_duration_s == 30
    (request,) = llm.requests
    assert request.response_format == "json_schema" and request.authorized
    schema = request.body["response_format"]["json_schema"]
    assert schema["strict"] is True and schema["name"] == "reelforge_script"
    assert schema["schema"]["$defs"]["DialogueLine"]["properties"]["speaker"]["enum"] == ["Mina", "Jun"]
    assert request.body["seed"] == BRIEF.seed and request.body["model"] == "gpt-4o-mini"
    assert "30 seconds" in request.messages[0]["content"] and "Mina, Jun" in request.messages[0]["content"]


async def test_fenced_json_is_read(llm: FakeLLM) -> None:
    llm.push(Reply.text("```json\n" + GOOD.draft().model_dump_json() + "\n```"))
    assert (await _writer(llm).write(BRIEF, LIMITS)).scenes == GOOD.scenes


async def test_malformed_json_is_fed_back_and_asked_again(llm: FakeLLM) -> None:
    llm.push(Reply.text('{"title": "Ramen", "scenes": ['), Reply.script(GOOD))
    script = await _writer(llm).write(BRIEF, LIMITS)
    assert script.scenes == GOOD.scenes
    first, second = llm.requests
    assert second.messages[: len(first.messages)] == first.messages
    assistant, feedback = second.messages[len(first.messages) :]
    assert assistant == {"role": "assistant", "content": '{"title": "Ramen", "scenes": ['}
    assert feedback["role"] == "user" and "Invalid JSON" in feedback["content"]


async def test_a_schema_violation_is_fixed_on_retry(llm: FakeLLM, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="reelforge.script")
    llm.push(Reply.json(_broken(GOOD, shot_type="closeup", duration_s="five")), Reply.script(GOOD))
    script = await _writer(llm).write(BRIEF, LIMITS)
    assert script.scenes == GOOD.scenes and len(llm.requests) == 2
    feedback = llm.requests[1].messages[-1]["content"]
    assert "- scene 2: shot_type: Input should be" in feedback and "got 'closeup'" in feedback
    assert "- scene 2: duration_s: Input should be a valid number" in feedback
    assert "answer 1 of 3 from llm:gpt-4o-mini unusable (2 problem(s))" in caplog.text


async def test_a_validation_failure_is_fed_back_naming_scene_and_field(llm: FakeLLM) -> None:
    speaking_stranger = _broken(GOOD, dialogue=[{"speaker": "Bob", "text": "Hi."}])
    llm.push(Reply.json(speaking_stranger), Reply.script(GOOD))
    await _writer(llm).write(BRIEF, LIMITS)
    feedback = llm.requests[1].messages[-1]["content"]
    assert "- scene 2: dialogue[1].speaker: 'Bob' is not in the cast (Mina, Jun)" in feedback


async def test_answers_still_invalid_after_max_attempts_fail_naming_what_was_wrong(llm: FakeLLM) -> None:
    short = GOOD.draft().model_dump(mode="json")
    short["scenes"] = short["scenes"][:3]
    llm.push(Reply.text("no JSON here"), Reply.json(_broken(GOOD, duration_s=0)), Reply.json(short), Reply.script(GOOD))
    with pytest.raises(LLMAnswerInvalid) as caught:
        await _writer(llm, max_attempts=3).write(BRIEF, LIMITS)
    error = caught.value
    assert error.attempts == 3 and len(llm.requests) == 3 and len(llm.replies) == 1  # the 4th never asked
    first_three = sum(s.duration_s for s in GOOD.scenes[:3])
    assert [str(p) for p in error.problems] == [
        f"duration_s: the scenes sum to {first_three:g} s, the target is 30 s (within 0.5 s): "
        f"add {30 - first_three:.1f} s"
    ]
    assert "no valid script in 3 answers" in str(error) and llm.url in str(error)


async def test_max_attempts_one_asks_once(llm: FakeLLM) -> None:
    llm.push(Reply.text("{}"))
    with pytest.raises(LLMAnswerInvalid) as caught:
        await _writer(llm, max_attempts=1).write(BRIEF, LIMITS)
    assert len(llm.requests) == 1
    assert {p.field for p in caught.value.problems} == {"title", "audio_mood", "scenes"}


async def test_json_schema_refused_falls_back_to_json_mode() -> None:
    async with FakeLLM([Reply.text("{oops"), Reply.script(GOOD)], json_schema=False) as server:
        writer = _writer(server)
        assert writer.mode == "json_schema"
        script = await writer.write(BRIEF, LIMITS)
        assert script.scenes == GOOD.scenes
        assert [(r.status, r.response_format) for r in server.requests] == [
            (400, "json_schema"), (200, "json_object"), (200, "json_object"),
        ]
        assert writer.mode == "json_object"
        assert "JSON schema" in server.requests[1].messages[0]["content"]  # the schema travels in the prompt
        server.push(Reply.script(GOOD))
        await writer.write(BRIEF, LIMITS)
        assert server.requests[-1].response_format == "json_object"  # no json_schema asked again


async def test_json_schema_setting_never_falls_back() -> None:
    async with FakeLLM([Reply.script(GOOD)], json_schema=False) as server:
        with pytest.raises(LLMRequestRejected, match="400: Invalid parameter: 'response_format'"):
            await _writer(server, response_format="json_schema").write(BRIEF, LIMITS)
        assert [r.response_format for r in server.requests] == ["json_schema"]


async def test_429_waits_the_retry_after_then_succeeds(llm: FakeLLM) -> None:
    sleeps = Sleeps()
    llm.push(Reply.rate_limited(retry_after=7), Reply.script(GOOD))
    await _writer(llm, sleeps).write(BRIEF, LIMITS)
    assert sleeps.waits == [7.0] and [r.status for r in llm.requests] == [429, 200]


async def test_a_retry_after_longer_than_the_cap_is_cut(llm: FakeLLM) -> None:
    sleeps = Sleeps()
    llm.push(Reply.rate_limited(retry_after=3600), Reply.script(GOOD))
    await _writer(llm, sleeps, max_backoff_s=2).write(BRIEF, LIMITS)
    assert sleeps.waits == [2.0]


async def test_5xx_retries_with_growing_backoff_then_gives_up(llm: FakeLLM) -> None:
    sleeps = Sleeps()
    llm.push(*[Reply.server_error(500)] * 3, Reply.script(GOOD))
    with pytest.raises(LLMServerError) as caught:
        await _writer(llm, sleeps, transient_retries=2, backoff_s=1.0).write(BRIEF, LIMITS)
    assert caught.value.status == 500 and len(llm.requests) == 3
    assert len(sleeps.waits) == 2 and 0.5 <= sleeps.waits[0] <= 1.0 and 1.0 <= sleeps.waits[1] <= 2.0
    sleeps.waits.clear()
    llm.replies[:] = [Reply.server_error(503), Reply.server_error(502), Reply.script(GOOD)]
    assert (await _writer(llm, sleeps, transient_retries=2).write(BRIEF, LIMITS)).scenes == GOOD.scenes
    assert len(sleeps.waits) == 2


async def test_rate_limits_past_the_retries_raise_a_transient_error(llm: FakeLLM) -> None:
    llm.push(*[Reply.rate_limited(retry_after=1)] * 2)
    with pytest.raises(LLMRateLimited) as caught:
        await _writer(llm, transient_retries=1).write(BRIEF, LIMITS)
    assert caught.value.retry_after == 1.0 and caught.value.status == 429


async def test_a_slow_answer_times_out_and_is_asked_again(llm: FakeLLM) -> None:
    sleeps = Sleeps()
    llm.push(Reply.script(GOOD).after(3.0), Reply.script(GOOD))
    script = await _writer(llm, sleeps, timeout_s=0.3).write(BRIEF, LIMITS)
    assert script.scenes == GOOD.scenes and len(llm.requests) == 2 and len(sleeps.waits) == 1
    llm.push(Reply.script(GOOD).after(3.0))
    with pytest.raises(LLMTimeout, match=r"no answer within 0.3 s"):
        await _writer(llm, timeout_s=0.3, transient_retries=0).write(BRIEF, LIMITS)


async def test_a_server_that_is_not_there_is_unavailable() -> None:
    server = FakeLLM()
    url = await server.start()
    await server.stop()  # the port is closed now
    sleeps = Sleeps()
    writer = LLMWriter(LLMSettings(base_url=url, transient_retries=2, backoff_s=0.01), sleep=sleeps)
    with pytest.raises(LLMUnavailable, match="cannot reach the LLM API"):
        await writer.write(BRIEF, LIMITS)
    assert len(sleeps.waits) == 2


async def test_auth_errors_fail_at_once_and_never_show_the_key(
    llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: openai's, httpx's, ours
    wrong = "sk-wrong-9a8b7c6d5e4f3a2b1c0d"
    sleeps = Sleeps()
    llm.push(Reply.script(GOOD))
    writer = LLMWriter(LLMSettings(base_url=llm.url, api_key=SecretStr(wrong)), sleep=sleeps)
    with pytest.raises(LLMAuthError) as caught:
        await writer.write(BRIEF, LIMITS)
    error = caught.value
    assert error.status == 401 and sleeps.waits == [] and len(llm.requests) == 1 and not llm.requests[0].authorized
    assert "Incorrect API key provided" in str(error) and "REELFORGE_LLM_API_KEY" in str(error)
    shown = "".join(traceback.format_exception(error)) + repr(error) + caplog.text
    assert wrong not in shown and wrong[3:] not in shown and "9a8b7c6d" not in shown
    assert error.__cause__ is None and error.__suppress_context__


async def test_403_is_an_auth_error_too(llm: FakeLLM) -> None:
    llm.push(Reply.failure(403, f"Project does not have access to model gpt-4o-mini (key {KEY})", kind="forbidden"))
    with pytest.raises(LLMAuthError) as caught:
        await _writer(llm).write(BRIEF, LIMITS)
    assert caught.value.status == 403 and KEY not in str(caught.value) and "access to model" in str(caught.value)


async def test_the_key_never_appears_in_logs_or_errors_across_every_failure(
    llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    llm.push(
        Reply.rate_limited(retry_after=0.01),
        Reply.server_error(500),
        Reply.text("not json"),
        Reply.failure(404, f"The model does not exist for key {KEY}", kind="invalid_request_error"),
    )
    with pytest.raises(LLMRequestRejected) as caught:
        await _writer(llm).write(BRIEF, LIMITS)
    assert caught.value.status == 404
    shown = "".join(traceback.format_exception(caught.value)) + caplog.text
    assert "retry 1 of 4" in caplog.text and "unusable" in caplog.text  # the logs were captured
    assert KEY not in shown and KEY[3:] not in shown


async def test_a_refusal_and_a_cut_off_answer_are_fed_back(llm: FakeLLM) -> None:
    llm.push(
        Reply(content=None, refusal="I can't help with that."),
        Reply.text('{"title": "Ra', finish_reason="length"),
        Reply.script(GOOD),
    )
    await _writer(llm).write(BRIEF, LIMITS)
    feedback = [r.messages[-1]["content"] for r in llm.requests[1:]]
    assert "the model refused: I can't help with that." in feedback[0]
    assert "cut off" in feedback[1]


async def test_a_bad_brief_sends_no_request(llm: FakeLLM) -> None:
    with pytest.raises(BriefError, match="target_duration_s: 601 s is over the maximum 600 s"):
        await _writer(llm).write(Brief(text="x", target_duration_s=601), LIMITS)
    assert llm.requests == []


async def test_a_cast_less_brief_is_narrated_and_needs_no_key() -> None:
    brief = Brief(text="The history of a lighthouse", target_duration_s=10)
    expected = OfflineWriter().compose(brief, LIMITS)
    async with FakeLLM([Reply.script(expected)]) as server:
        script = await LLMWriter(LLMSettings(base_url=server.url, api_key=None)).write(brief, LIMITS)
    assert script_problems(script, LIMITS) == [] and script.characters == []
    assert {line.speaker for s in script.scenes for line in s.dialogue} == {"narrator"}
    assert "Cast: none (narrator only)." in server.requests[0].messages[1]["content"]


async def test_the_fake_checks_the_protocol_like_openai() -> None:
    import httpx

    async with FakeLLM([Reply.script(GOOD)], api_key=KEY) as server:
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
            hello = [{"role": "user", "content": "hi"}]
            no_json = await client.post(
                "/chat/completions", json={"model": "m", "messages": hello, "response_format": {"type": "json_object"}}
            )
            assert no_json.status_code == 400 and "must contain the word 'json'" in no_json.json()["error"]["message"]
            no_messages = await client.post("/chat/completions", json={"model": "m", "messages": []})
            assert no_messages.status_code == 400 and no_messages.json()["error"]["param"] == "messages"
            ok = await client.post("/chat/completions", json={"model": "m", "messages": hello})
            assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["role"] == "assistant"
            models = await client.get("/models")
            assert models.json()["data"][0]["id"] == "gpt-4o-mini"
        assert len(server.replies) == 0 and [r.status for r in server.requests] == [400, 400, 200]
        assert server.url.startswith("http://127.0.0.1:")
