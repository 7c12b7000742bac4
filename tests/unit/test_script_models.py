"""Script models, validation against limits, JSON load/save, and the offline writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from reelforge.script import (
    NARRATOR,
    Brief,
    BriefError,
    DialogueLine,
    OfflineWriter,
    Scene,
    Script,
    ScriptLimits,
    ScriptSettings,
    ScriptValidationError,
    check_brief,
    draft_schema,
    dump_script,
    load_script,
    make_writer,
    parse_script,
    save_script,
    script_problems,
    speech_seconds,
    validate_script,
)
from reelforge.settings import LLMSettings

LIMITS = ScriptLimits()


def _scene(number: int, **overrides: object) -> Scene:
    fields: dict[str, object] = {
        "number": number,
        "description": f"A rooftop at dusk, scene {number}",
        "shot_type": "medium",
        "camera": "dolly_in",
        "motion_prompt": "wind moves her hair",
        "characters": ["Mina"],
        "dialogue": [DialogueLine(speaker="Mina", text="Look at the lights.")],
        "duration_s": 5.0,
    }
    fields.update(overrides)
    return Scene.model_validate(fields)


def _script(scenes: list[Scene], *, target: float = 15.0, cast: list[str] | None = None) -> Script:
    return Script(
        title="Rooftop",
        audio_mood="warm lo-fi",
        scenes=scenes,
        target_duration_s=target,
        style="cinematic",
        characters=["Mina", "Jun"] if cast is None else cast,
    )


def _messages(exc: ScriptValidationError) -> list[str]:
    return [str(problem) for problem in exc.problems]


# ---------------------------------------------------------------------------------------------- limits


def test_default_limits_fit_wan_at_16_fps_and_chain_three_segments() -> None:
    assert LIMITS.segment_s == pytest.approx(81 / 16)
    assert LIMITS.max_scene_s == pytest.approx(3 * 81 / 16)
    assert ScriptLimits(fps=24, segment_frames=121, max_segments_per_scene=1).max_scene_s == pytest.approx(121 / 24)


def test_script_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_SCRIPT_MAX_DURATION_S", "45")
    monkeypatch.setenv("REELFORGE_SCRIPT_MAX_SEGMENTS_PER_SCENE", "1")
    settings = ScriptSettings()
    assert isinstance(settings, ScriptLimits)
    assert settings.max_duration_s == 45 and settings.max_scene_s == pytest.approx(81 / 16)
    monkeypatch.setenv("REELFORGE_SCRIPT_FPS", "0")
    with pytest.raises(ValidationError, match="REELFORGE_SCRIPT_FPS"):
        ScriptSettings()


def test_llm_settings_check_the_base_url_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_LLM_BASE_URL", "http://me:hunter2@127.0.0.1:11434/v1")
    with pytest.raises(ValidationError) as caught:
        LLMSettings()
    assert "REELFORGE_LLM_BASE_URL" in str(caught.value) and "hunter2" not in str(caught.value)
    monkeypatch.setenv("REELFORGE_LLM_BASE_URL", "ollama:11434")
    with pytest.raises(ValidationError, match="REELFORGE_LLM_BASE_URL: expected an http"):
        LLMSettings()
    monkeypatch.setenv("REELFORGE_LLM_BASE_URL", " http://127.0.0.1:11434/v1/ ")
    monkeypatch.setenv("REELFORGE_LLM_MAX_ATTEMPTS", "2")
    settings = LLMSettings()
    assert settings.base_url == "http://127.0.0.1:11434/v1" and settings.max_attempts == 2
    monkeypatch.setenv("REELFORGE_LLM_BASE_URL", "")
    assert LLMSettings().base_url is None


# ---------------------------------------------------------------------------------------------- validation


def test_a_valid_script_has_no_problems() -> None:
    script = _script([_scene(1), _scene(2, continues_previous=True), _scene(3, end_frame="she smiles")])
    assert script_problems(script, LIMITS) == []
    assert validate_script(script, LIMITS) is script
    assert script.scenes[2].first_last_frame and not script.scenes[0].first_last_frame


def test_every_problem_is_reported_at_once_naming_scene_and_field() -> None:
    script = _script(
        [
            _scene(1, continues_previous=True),
            _scene(2, duration_s=0, description="  "),
            _scene(4, duration_s=20.0, motion_prompt=""),
            _scene(4, dialogue=[DialogueLine(speaker="Bob", text=" ")], characters=["Zed"], end_frame=""),
        ],
        target=30.0,
    )
    with pytest.raises(ScriptValidationError) as caught:
        validate_script(script, LIMITS, source="edited.json")
    messages = _messages(caught.value)
    assert "scene 1: continues_previous: the first scene has no previous scene to continue" in messages
    assert "scene 2: duration_s: 0 s: a scene must last more than 0 s" in messages
    assert "scene 2: description: is empty: say what the scene shows" in messages
    assert any(m.startswith("scene 3: number: is 4, expected 3") for m in messages)
    assert any(m.startswith("scene 3: duration_s: 20 s is longer than the maximum 15.19 s") for m in messages)
    assert "scene 3: motion_prompt: is empty: say what moves" in messages
    assert "scene 4: dialogue[1].speaker: 'Bob' is not in the cast (Mina, Jun)" in messages
    assert "scene 4: dialogue[1].text: is empty" in messages
    assert "scene 4: characters: 'Zed' is not in the cast (Mina, Jun)" in messages
    assert any(m.startswith("scene 4: end_frame: is empty") for m in messages)
    assert "duration_s: the scenes sum to 30 s" not in " ".join(messages)  # 0 + 20 + 5 + 5 = 30: on target
    assert "edited.json" in str(caught.value) and f"{len(messages)} problems" in str(caught.value)


def test_durations_must_sum_to_the_target_within_the_tolerance() -> None:
    scenes = [_scene(1, duration_s=5.0), _scene(2, duration_s=4.7)]
    assert script_problems(_script(scenes, target=10.0), LIMITS) == []  # 0.3 s off, tolerance 0.5 s
    problems = script_problems(_script(scenes, target=11.0), LIMITS)
    assert [str(p) for p in problems] == [
        "duration_s: the scenes sum to 9.7 s, the target is 11 s (within 0.5 s): add 1.3 s"
    ]
    strict = ScriptLimits(duration_tolerance_s=0.1)
    assert [p.field for p in script_problems(_script(scenes, target=10.0), strict)] == ["duration_s"]


def test_scene_limits_come_from_the_limits_passed_in() -> None:
    script = _script([_scene(1, duration_s=7.0), _scene(2, duration_s=8.0)])
    assert script_problems(script, LIMITS) == []
    one_segment = ScriptLimits(max_segments_per_scene=1)
    assert [(p.scene, p.field) for p in script_problems(script, one_segment)] == [(1, "duration_s"), (2, "duration_s")]
    short = ScriptLimits(min_scene_s=7.5)
    assert [(p.scene, p.field) for p in script_problems(script, short)] == [(1, "duration_s")]


def test_no_scenes_and_a_bad_target_are_script_problems() -> None:
    script = _script([], target=0)
    assert [str(p) for p in script_problems(script, LIMITS)] == [
        "target_duration_s: 0 s: a video must last more than 0 s",
        "scenes: there are no scenes",
    ]


def test_narrator_speaks_only_when_there_is_no_cast() -> None:
    narrated = _scene(1, characters=[], dialogue=[DialogueLine(speaker=NARRATOR, text="Once, in Seoul.")])
    assert script_problems(_script([narrated], target=5.0, cast=[]), LIMITS) == []
    problems = script_problems(_script([narrated], target=5.0), LIMITS)
    assert [str(p) for p in problems] == ["scene 1: dialogue[1].speaker: 'narrator' is not in the cast (Mina, Jun)"]
    stranger = _scene(1, characters=[], dialogue=[DialogueLine(speaker="Mina", text="Hi.")])
    (problem,) = script_problems(_script([stranger], target=5.0, cast=[]), LIMITS)
    assert "the cast, which is empty: the only speaker is 'narrator'" in str(problem)


def test_dialogue_must_fit_the_scene_at_the_speaking_rate() -> None:
    long_line = " ".join(["word"] * 20)  # 20 words at 3 words/s: 6.7 s
    scene = _scene(1, dialogue=[DialogueLine(speaker="Mina", text=long_line)])
    (problem,) = script_problems(_script([scene], target=5.0), LIMITS)
    assert problem.scene == 1 and problem.field == "dialogue" and "needs about 6.67 s" in problem.message
    assert script_problems(_script([scene], target=5.0), ScriptLimits(words_per_second=5)) == []
    assert speech_seconds("今日はいい天気ですね", 3.0) == pytest.approx(5 / 3.0)  # 10 kana/kanji: 5 words
    assert speech_seconds("안녕하세요 반가워요", 2.0) == pytest.approx(1.0)


def test_a_misspelt_field_is_refused_by_the_model() -> None:
    with pytest.raises(ValidationError, match="durations"):
        Scene.model_validate({**_scene(1).model_dump(), "durations": 3})


# ---------------------------------------------------------------------------------------------- briefs


def test_brief_fields_are_checked_by_the_model() -> None:
    with pytest.raises(ValidationError, match="target_duration_s"):
        Brief(text="a film", target_duration_s=0)
    with pytest.raises(ValidationError, match="text"):
        Brief(text="   ", target_duration_s=30)


def test_check_brief_names_the_field_for_limits_and_unknown_characters() -> None:
    brief = Brief(text="a film", target_duration_s=900, characters=["Mina", "Ghost", "Mina", "Narrator"])
    with pytest.raises(BriefError) as caught:
        check_brief(brief, LIMITS, known_characters={"Mina", "Jun"})
    assert _messages(caught.value) == [
        "target_duration_s: 900 s is over the maximum 600 s",
        "characters[2]: 'Ghost': no such character",
        "characters[3]: 'Mina' is named twice",
        "characters[4]: 'narrator' is the cast-less voice, not a character",
    ]
    assert str(caught.value).startswith("brief is invalid: 4 problems")
    ok = Brief(text="a film", target_duration_s=30, characters=["Mina"])
    assert check_brief(ok, ScriptLimits(max_duration_s=30), known_characters={"Mina"}) is ok
    with pytest.raises(BriefError, match="over the maximum 20 s"):
        check_brief(ok, ScriptLimits(max_duration_s=20))


# ---------------------------------------------------------------------------------------------- JSON


def test_save_and_load_round_trip_and_canonical_bytes(tmp_path: Path) -> None:
    brief = Brief(text="김민아 sings on a rooftop", target_duration_s=30, characters=["김민아"])
    script = OfflineWriter().compose(brief, LIMITS)
    path = save_script(script, tmp_path / "productions" / "script.json")
    assert load_script(path, LIMITS) == script
    assert path.read_bytes() == dump_script(script)
    assert "김민아" in path.read_text(encoding="utf-8")  # names as written, not \\u escapes
    with pytest.raises(FileExistsError):
        save_script(script, path)
    edited = script.model_copy(update={"title": "Take two"})
    save_script(edited, path, overwrite=True)
    assert load_script(path, LIMITS).title == "Take two"
    assert [p.name for p in path.parent.iterdir()] == ["script.json"]  # no temporary file left


def test_an_edited_script_that_no_longer_validates_names_scene_and_field(tmp_path: Path) -> None:
    script = OfflineWriter().compose(Brief(text="a chase", target_duration_s=30, characters=["Mina"]), LIMITS)
    data = json.loads(dump_script(script))
    data["scenes"][2]["duration_s"] = 0
    data["scenes"][4]["dialogue"] = [{"speaker": "Jun", "text": "Wait!"}]
    path = tmp_path / "script.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ScriptValidationError) as caught:
        load_script(path, LIMITS)
    messages = _messages(caught.value)
    assert "scene 3: duration_s: 0 s: a scene must last more than 0 s" in messages
    assert "scene 5: dialogue[1].speaker: 'Jun' is not in the cast (Mina)" in messages
    assert any(m.startswith("duration_s: the scenes sum to") for m in messages)
    assert str(path) in str(caught.value)


def test_a_malformed_file_names_the_scene_and_field_of_each_shape_error(tmp_path: Path) -> None:
    script = OfflineWriter().compose(Brief(text="a chase", target_duration_s=10), LIMITS)
    data = json.loads(dump_script(script))
    data["scenes"][1]["shot_type"] = "closeup"
    data["scenes"][0]["duration_s"] = "long"
    del data["scenes"][2]["motion_prompt"]
    data["scenes"][0]["dialogue"][0]["speakr"] = "narrator"
    with pytest.raises(ScriptValidationError) as caught:
        parse_script(json.dumps(data), LIMITS)
    where = {(p.scene, p.field) for p in caught.value.problems}
    assert where == {(2, "shot_type"), (1, "duration_s"), (3, "motion_prompt"), (1, "dialogue[1].speakr")}
    assert "got 'closeup'" in str(caught.value)
    with pytest.raises(ScriptValidationError, match="not JSON"):
        parse_script(b'{"title": ', LIMITS)
    with pytest.raises(ScriptValidationError, match="expected a JSON object, got list"):
        parse_script("[]", LIMITS)
    with pytest.raises(ScriptValidationError, match="cannot read the file"):
        load_script(tmp_path / "missing.json", LIMITS)


# ---------------------------------------------------------------------------------------------- offline writer

BRIEFS = [
    Brief(text="Two friends open a tiny ramen shop in Seoul.", target_duration_s=30, characters=["Mina", "Jun"]),
    Brief(text="A lighthouse keeper's last night.", target_duration_s=30, style="watercolor anime"),
    Brief(text="A K-pop group's comeback teaser", target_duration_s=60, characters=["Aria", "Bo", "Cy", "Dee"]),
    Brief(text="A robot learns to paint", target_duration_s=10, characters=["Robo"], mood="gentle piano", seed=7),
    Brief(text="Morning run", target_duration_s=1),
]


@pytest.mark.parametrize("brief", BRIEFS, ids=lambda b: f"{b.target_duration_s:g}s-{len(b.characters)}cast")
def test_offline_scripts_are_valid_and_deterministic(brief: Brief) -> None:
    writer = OfflineWriter()
    script = writer.compose(brief, LIMITS)
    assert script_problems(script, LIMITS) == []
    assert script == writer.compose(brief, LIMITS)
    assert dump_script(script) == dump_script(OfflineWriter().compose(brief, LIMITS))
    assert script.duration_s == pytest.approx(brief.target_duration_s, abs=1e-9)
    assert script.writer == "offline" and script.characters == brief.characters and script.style == brief.style
    if brief.mood:
        assert script.audio_mood == brief.mood
    speakers = {line.speaker for scene in script.scenes for line in scene.dialogue}
    if brief.target_duration_s >= 10:
        assert speakers == set(brief.characters or [NARRATOR])  # every member of the cast speaks
        assert script.scenes[-1].end_frame is not None  # ends on a described last frame
    if brief.target_duration_s >= 30:
        assert any(scene.continues_previous for scene in script.scenes)
        assert all(s.duration_s <= LIMITS.segment_s for s in script.scenes)  # one segment each at 30 s+
        assert len({s.shot_type for s in script.scenes}) >= 3


@pytest.mark.parametrize("target", [10, 30, 60])
def test_offline_structure_grows_with_the_duration(target: int) -> None:
    brief = Brief(text="A street dance battle", target_duration_s=target, characters=["Kai"])
    script = OfflineWriter().compose(brief, LIMITS)
    assert {10: 3, 30: 7, 60: 13}[target] == len(script.scenes)
    assert script.scenes[0].shot_type in {"establishing", "wide", "aerial"}


def test_offline_seed_changes_the_script_and_limits_change_its_shape() -> None:
    brief = BRIEFS[0]
    other = OfflineWriter().compose(brief.model_copy(update={"seed": 1}), LIMITS)
    assert other != OfflineWriter().compose(brief, LIMITS)
    assert script_problems(other, LIMITS) == []
    short = ScriptLimits(segment_frames=33, max_segments_per_scene=2)  # 2.06 s segments
    script = OfflineWriter().compose(brief, short)
    assert script_problems(script, short) == [] and len(script.scenes) >= 15


def test_offline_writer_refuses_a_bad_brief_and_is_the_default_without_a_url() -> None:
    with pytest.raises(BriefError, match="target_duration_s: 601 s is over the maximum 600 s"):
        OfflineWriter().compose(Brief(text="x", target_duration_s=601), LIMITS)
    assert isinstance(make_writer(LLMSettings(base_url=None)), OfflineWriter)
    assert make_writer(LLMSettings(base_url="http://127.0.0.1:9/v1")).name == "llm:gpt-4o-mini"


def test_answer_schema_is_strict_and_narrowed_to_the_cast() -> None:
    schema = draft_schema(BRIEFS[0])
    scene = schema["$defs"]["Scene"]
    assert scene["additionalProperties"] is False and set(scene["required"]) == set(scene["properties"])
    assert "default" not in json.dumps(schema)
    assert schema["$defs"]["DialogueLine"]["properties"]["speaker"]["enum"] == ["Mina", "Jun"]
    cast_less = draft_schema(BRIEFS[1])
    assert cast_less["$defs"]["DialogueLine"]["properties"]["speaker"]["enum"] == [NARRATOR]
    assert cast_less["$defs"]["Scene"]["properties"]["characters"]["maxItems"] == 0


def test_save_without_hard_links_still_refuses_to_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError("hard links not supported")

    monkeypatch.setattr("reelforge.script.io.os.link", no_links)
    script = OfflineWriter().compose(BRIEFS[1], LIMITS)
    path = save_script(script, tmp_path / "script.json")
    assert load_script(path, LIMITS) == script
    with pytest.raises(FileExistsError):
        save_script(script.model_copy(update={"title": "Other"}), path)
    assert load_script(path, LIMITS) == script and [p.name for p in tmp_path.iterdir()] == ["script.json"]
