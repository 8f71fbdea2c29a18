"""The zero-shot ``openai`` backend: strict parsers, subtask states, and whole decide() calls
against a scripted OpenAI-compatible HTTP server (tests/fake_openai_server.py)."""
from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
import time
import urllib.request
from email.utils import formatdate
from pathlib import Path

import numpy as np
import pytest

from fake_openai_server import FakeOpenAIServer
from vln_stack.backends import Observation, make_backend
from vln_stack.core.actions import Action, MoveSpec
from vln_stack.zero_shot.backend import OpenAIBackend
from vln_stack.zero_shot.client import (ChatClient, ChatConnectionError, ChatHTTPError,
                                        parse_retry_after)
from vln_stack.zero_shot.prompts import (MAX_SUBTASKS, MalformedReply, StateChange, SubtaskList,
                                         parse_step_reply, parse_subtasks)

HERE = Path(__file__).resolve().parent
INSTRUCTION = 'Walk to the door, turn left, then stop next to the red chair.'
PLAN = json.dumps([
    {'subtask': 'Walk to the door', 'start_condition': 'immediately',
     'end_condition': 'the robot is at the door'},
    {'subtask': 'Turn left', 'start_condition': 'the robot is at the door',
     'end_condition': 'the robot faces left of the door'},
    {'subtask': 'Stop next to the red chair', 'start_condition': 'the turn is done',
     'end_condition': 'the robot is next to the red chair'},
])


def reply(action: str, state: str, thought: str = 'I look around.') -> str:
    return f'<thought> {thought} </thought>\n<action> {action} </action>\n<state> {state} </state>'


def three(states: tuple[str, ...] = ('pending', 'pending', 'pending')) -> SubtaskList:
    plan = SubtaskList.from_texts(parse_subtasks(PLAN))
    for item, state in zip(plan.items, states):
        item.state = state
    return plan


def frame(h: int = 48, w: int = 64) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2, 0] = 200           # red left half, to see RGB order survive
    return img


def obs(instruction: str = INSTRUCTION, image=None) -> Observation:
    return Observation(instruction, image=frame() if image is None else image)


def backend_for(server: FakeOpenAIServer, **kw) -> OpenAIBackend:
    kw.setdefault('openai_model', 'fake-vlm')
    kw.setdefault('openai_api_key_env', 'VLN_TEST_NO_SUCH_KEY')
    return OpenAIBackend(MoveSpec(0.5, 15.0), openai_base_url=server.base_url, **kw)


# --- step reply parser -------------------------------------------------------------------------
def test_step_reply_valid_with_text_outside_tags():
    text = 'Sure.\n' + reply('[MOVE_FORWARD]', 'Subtask NO.1 changes from pending to doing',
                             'The door is\n ahead.')
    out = parse_step_reply(text, three())
    assert out.action is Action.MOVE_FORWARD
    assert out.change == StateChange(1, 'pending', 'doing')
    assert out.thought == 'The door is ahead.'


@pytest.mark.parametrize('content,action', [('TURN_LEFT', Action.TURN_LEFT),
                                            ('[ TURN_RIGHT ]', Action.TURN_RIGHT)])
def test_action_brackets_are_optional(content, action):
    out = parse_step_reply(reply(content, 'Subtask NO.1 keeps state of pending'), three())
    assert out.action is action and out.change.keeps


def test_state_sentence_words_are_case_insensitive():
    out = parse_step_reply(reply('[MOVE_FORWARD]', 'subtask No. 1 Changes From Pending To Doing.'),
                           three())
    assert out.change == StateChange(1, 'pending', 'doing')


@pytest.mark.parametrize('text,why', [
    ('<action> [STOP] </action><state> Subtask NO.1 keeps state of pending </state>',
     '<thought>...</thought> tag is missing'),
    ('<thought> x </thought><state> Subtask NO.1 keeps state of pending </state>',
     '<action>...</action> tag is missing'),
    ('<thought> x </thought><action> [MOVE_FORWARD] </action>',
     '<state>...</state> tag is missing'),
    ('<thought> x </thought><action> [MOVE_FORWARD] <state> Subtask NO.1 keeps state of pending '
     '</state>', 'not closed'),
    (reply('[MOVE_FORWARD]', 'Subtask NO.1 keeps state of pending') + '<action> [STOP] </action>',
     'appears 2 times'),
])
def test_missing_repeated_or_unclosed_tags_are_malformed(text, why):
    with pytest.raises(MalformedReply, match=why.replace('.', r'\.')):
        parse_step_reply(text, three())


@pytest.mark.parametrize('content,why', [
    ('[TURN_LEFT] [MOVE_FORWARD]', 'exactly one action'),
    ('TURN_LEFT then MOVE_FORWARD', 'exactly one action'),
    ('[FORWARD]', 'unknown action'),          # AgriVLN's words are not ours
    ('[LEFT ROTATE]', 'unknown action'),
    ('[]', 'unknown action'),
    ('[move_forward]', 'upper case'),          # lower case is malformed, like Action.parse
])
def test_action_must_be_exactly_one_known_upper_case_word(content, why):
    with pytest.raises(MalformedReply, match=why):
        parse_step_reply(reply(content, 'Subtask NO.1 keeps state of pending'), three())


@pytest.mark.parametrize('state,states,why', [
    ('Subtask NO.1 changes from pending to done', None, 'not allowed'),
    ('Subtask NO.1 changes from doing to done', None, 'is pending, not doing'),
    ('Subtask NO.2 changes from pending to doing', None, 'NO.1 comes first'),
    ('Subtask NO.2 changes from pending to doing', ('doing', 'pending', 'pending'),
     'NO.1 is still doing'),
    ('Subtask NO.1 changes from done to doing', ('done', 'pending', 'pending'), 'not allowed'),
    ('Subtask NO.1 changes from pending to pending', None, 'is no change'),
    ('Subtask NO.9 changes from pending to doing', None, 'no subtask NO.9'),
    ('Subtask NO.0 keeps state of pending', None, 'no subtask NO.0'),
    ('Subtask NO.2 keeps state of doing', None, 'is pending, not doing'),
    ('Subtask NO.1 changes from pending to started', None, "unknown state 'started'"),
    ('Subtask 1 is now in progress', None, 'must read'),
    ('Subtask NO.1 changes from pending to doing; Subtask NO.2 keeps state of pending', None,
     'must read'),
])
def test_illegal_or_unparsable_state_changes_are_malformed(state, states, why):
    plan = three(states) if states else three()
    before = plan.as_json()
    with pytest.raises(MalformedReply, match=why):
        parse_step_reply(reply('[MOVE_FORWARD]', state), plan)
    assert plan.as_json() == before     # the parser never changes the list


def test_stop_only_when_every_subtask_is_done():
    with pytest.raises(MalformedReply, match='not done: NO.3'):
        parse_step_reply(reply('[STOP]', 'Subtask NO.3 keeps state of pending'),
                         three(('done', 'done', 'pending')))
    out = parse_step_reply(reply('[STOP]', 'Subtask NO.3 changes from doing to done'),
                           three(('done', 'done', 'doing')))
    assert out.action is Action.STOP


def test_subtask_list_walks_pending_doing_done():
    plan = three()
    assert plan.current_text() == 'Walk to the door'
    plan.apply(StateChange(1, 'pending', 'doing'))
    plan.apply(StateChange(1, 'doing', 'done'))
    assert plan.current_text() == 'Turn left'
    with pytest.raises(ValueError, match='comes first'):
        plan.apply(StateChange(3, 'pending', 'doing'))
    for n in (2, 3):
        plan.apply(StateChange(n, 'pending', 'doing'))
        plan.apply(StateChange(n, 'doing', 'done'))
    assert plan.all_done() and plan.current_text() == ''


# --- reorder parser ----------------------------------------------------------------------------
def test_reorder_reply_parses_plain_and_fenced():
    assert [e['subtask'] for e in parse_subtasks(PLAN)][0] == 'Walk to the door'
    assert parse_subtasks(f'```json\n{PLAN}\n```') == parse_subtasks(PLAN)


@pytest.mark.parametrize('text,why', [
    ('1. Walk to the door\n2. Stop', 'not a JSON array'),
    (f'Here is the plan: {PLAN}', 'not a JSON array'),
    ('{"subtask": "a", "start_condition": "b", "end_condition": "c"}', 'JSON dict, not an array'),
    ('[]', '0 subtasks'),
    (json.dumps([{'subtask': 'a', 'start_condition': 'b', 'end_condition': 'c'}]
                * (MAX_SUBTASKS + 1)), f'{MAX_SUBTASKS + 1} subtasks'),
    ('["walk to the door"]', 'exactly the keys'),
    ('[{"subtask": "a", "start_condition": "b"}]', 'exactly the keys'),
    ('[{"step": 1, "subtask": "a", "start_condition": "b", "end_condition": "c"}]',
     'exactly the keys'),
    ('[{"subtask": " ", "start_condition": "b", "end_condition": "c"}]', 'non-empty string'),
    ('[{"subtask": 3, "start_condition": "b", "end_condition": "c"}]', 'non-empty string'),
])
def test_reorder_reply_malformed(text, why):
    with pytest.raises(MalformedReply, match=why):
        parse_subtasks(text)


# --- backend against the fake server -----------------------------------------------------------
def test_episode_advances_subtasks_and_sends_the_frame(monkeypatch):
    monkeypatch.setenv('VLN_TEST_KEY', 'sk-test-123')
    script = [PLAN,
              reply('[MOVE_FORWARD]', 'Subtask NO.1 changes from pending to doing', 'Door ahead.'),
              reply('[TURN_LEFT]', 'Subtask NO.1 changes from doing to done'),
              reply('[TURN_LEFT]', 'Subtask NO.2 changes from pending to doing'),
              reply('[MOVE_FORWARD]', 'Subtask NO.2 changes from doing to done'),
              reply('[STOP]', 'Subtask NO.3 changes from pending to doing'),   # not yet: retried
              reply('[MOVE_FORWARD]', 'Subtask NO.3 changes from pending to doing'),
              reply('[STOP]', 'Subtask NO.3 changes from doing to done')]
    with FakeOpenAIServer(script) as server:
        backend = backend_for(server, openai_model='', openai_api_key_env='VLN_TEST_KEY')
        backend.reset(INSTRUCTION)
        assert server.requests == []            # reset() makes no network call
        decisions = [backend.decide(obs()) for _ in range(6)]
    assert [d.action for d in decisions] == [
        Action.MOVE_FORWARD, Action.TURN_LEFT, Action.TURN_LEFT, Action.MOVE_FORWARD,
        Action.MOVE_FORWARD, Action.STOP]
    assert all(d.valid and d.more == [] for d in decisions)
    assert [d.subgoal for d in decisions] == [
        'Walk to the door', 'Turn left', 'Turn left', 'Stop next to the red chair',
        'Stop next to the red chair', '']
    assert decisions[0].thought == 'Door ahead.'
    assert 'STOP' in decisions[4].reason and decisions[5].reason == ''
    assert backend.subtasks.all_done()

    first_get, reorder, step1 = server.requests[:3]
    assert first_get['method'] == 'GET' and first_get['path'] == '/v1/models'
    assert reorder['body']['model'] == 'fake-vlm'       # the served model, found by GET
    assert INSTRUCTION in reorder['body']['messages'][1]['content']
    chats = server.chat_requests()
    assert len(chats) == 1 + 7
    for r in chats:
        assert r['headers']['authorization'] == 'Bearer sk-test-123'
    body = step1['body']
    assert body['max_tokens'] == 256 and body['temperature'] == 0.0
    system = body['messages'][0]['content']
    assert '0.5 m' in system and '15 degrees' in system
    text_part, image_part = body['messages'][1]['content']
    assert '<subtask_list>' in text_part['text'] and '"state": "pending"' in text_part['text']
    url = image_part['image_url']['url']
    assert image_part['type'] == 'image_url' and url.startswith('data:image/jpeg;base64,')
    import cv2
    jpeg = np.frombuffer(base64.b64decode(url.split(',', 1)[1]), np.uint8)
    bgr = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    assert bgr.shape == (48, 64, 3)
    assert bgr[24, 10, 2] > 150 and bgr[24, 10, 0] < 60    # red stayed red
    later = chats[-1]['body']['messages'][1]['content'][0]['text']
    assert '"state": "done"' in later and 'TURN_LEFT, TURN_LEFT' in later


def test_malformed_reply_is_retried_with_the_reason():
    script = [PLAN, reply('[FORWARD]', 'Subtask NO.1 keeps state of pending'),
              reply('[MOVE_FORWARD]', 'Subtask NO.1 keeps state of pending')]
    with FakeOpenAIServer(script) as server:
        backend = backend_for(server)
        dec = backend.decide(obs())
    assert dec.valid and dec.action is Action.MOVE_FORWARD
    assert 'retried' in dec.reason and 'unknown action' in dec.reason
    retry = server.chat_requests()[-1]['body']['messages']
    assert retry[-2] == {'role': 'assistant',
                         'content': reply('[FORWARD]', 'Subtask NO.1 keeps state of pending')}
    assert retry[-1]['role'] == 'user' and 'unknown action' in retry[-1]['content']


def test_malformed_twice_stops_invalid():
    script = [PLAN, reply('[MOVE_FORWARD]', 'Subtask NO.1 changes from pending to done')]
    with FakeOpenAIServer(script) as server:   # the last entry repeats
        backend = backend_for(server)
        dec = backend.decide(obs())
    assert dec.action is Action.STOP and not dec.valid
    assert 'malformed reply twice' in dec.reason and 'not allowed' in dec.reason
    assert dec.raw.startswith('<thought>')
    assert len(server.chat_requests()) == 3
    assert backend.subtasks.items[0].state == 'pending'


def test_timeout_stops_within_the_retry_budget():
    timeout_s, retries, backoff_s = 0.3, 1, 0.2
    with FakeOpenAIServer([PLAN, {'delay_s': 1.5, 'text': 'late'}]) as server:
        backend = backend_for(server, openai_timeout_s=timeout_s, openai_max_retries=retries,
                              openai_backoff_s=backoff_s)
        assert backend.client.max_total_s == pytest.approx(2 * timeout_s + backoff_s)
        backend.plan(INSTRUCTION)
        t0 = time.monotonic()
        dec = backend.decide(obs())
        elapsed = time.monotonic() - t0
    assert dec.action is Action.STOP and not dec.valid
    assert 'no reply within 0.3 s' in dec.reason and '2 attempt' in dec.reason
    assert 2 * timeout_s + backoff_s - 0.01 < elapsed < 2 * timeout_s + backoff_s + 0.5
    assert len(server.chat_requests()) == 1 + retries + 1


@pytest.mark.parametrize('entry,why', [({'status': 500}, 'HTTP 500'),
                                       ({'raw': 'not json'}, 'not JSON')])
def test_server_errors_are_retried_then_stop(entry, why):
    with FakeOpenAIServer([PLAN, entry]) as server:
        backend = backend_for(server, openai_max_retries=2)
        dec = backend.decide(obs())
    assert dec.action is Action.STOP and not dec.valid
    assert why in dec.reason and '3 attempt' in dec.reason
    assert len(server.chat_requests()) == 1 + 3


def test_a_500_then_a_good_reply_is_fine():
    script = [PLAN, {'status': 503}, reply('[TURN_RIGHT]', 'Subtask NO.1 keeps state of pending')]
    with FakeOpenAIServer(script) as server:
        dec = backend_for(server).decide(obs())
    assert dec.valid and dec.action is Action.TURN_RIGHT


def test_no_image_stops():
    with FakeOpenAIServer([PLAN]) as server:
        dec = backend_for(server).decide(Observation(INSTRUCTION, image=None))
    assert dec.action is Action.STOP and not dec.valid and 'no camera image' in dec.reason


# --- reordering and its fallback ---------------------------------------------------------------
def test_reorder_retry_succeeds():
    with FakeOpenAIServer(['1. Walk to the door\n2. Stop', PLAN]) as server:
        plan = backend_for(server).plan(INSTRUCTION)
        retry = server.chat_requests()[1]['body']['messages']
    assert len(plan) == 3
    assert retry[-1]['role'] == 'user' and 'not a JSON array' in retry[-1]['content']


@pytest.mark.parametrize('failure', [['not a plan', 'still not a plan'], [{'status': 500}]])
def test_reorder_falls_back_to_the_whole_instruction(failure, caplog):
    script = failure + [reply('[MOVE_FORWARD]', 'Subtask NO.1 changes from pending to doing'),
                        reply('[MOVE_FORWARD]', 'Subtask NO.1 keeps state of doing')]
    with FakeOpenAIServer(script) as server:
        backend = backend_for(server, openai_max_retries=0)
        with caplog.at_level(logging.WARNING, logger='vln_stack.zero_shot'):
            dec = backend.decide(obs())
            dec2 = backend.decide(obs())
    assert [item.subtask for item in backend.subtasks.items] == [INSTRUCTION]
    assert 'one subtask = the whole instruction' in caplog.text
    assert dec.valid and dec.subgoal == INSTRUCTION
    assert 'reordering failed' in dec.reason and dec2.reason == ''


def test_new_instruction_makes_a_new_plan():
    script = [PLAN, reply('[MOVE_FORWARD]', 'Subtask NO.1 changes from pending to doing'),
              PLAN, reply('[TURN_LEFT]', 'Subtask NO.1 changes from pending to doing')]
    with FakeOpenAIServer(script) as server:
        backend = backend_for(server)
        backend.reset(INSTRUCTION)
        backend.decide(obs())
        backend.reset('Another instruction.')
        dec = backend.decide(obs('Another instruction.'))
    assert dec.action is Action.TURN_LEFT and backend.subtasks.items[0].state == 'doing'
    step = server.chat_requests()[-1]['body']['messages'][1]['content'][0]['text']
    assert 'Another instruction.' in step and 'none yet' in step


# --- the API key -------------------------------------------------------------------------------
SECRET = 'sk-very-secret-0123456789'


@pytest.mark.parametrize('source', ['env', 'file'])
def test_api_key_goes_only_into_the_header(source, monkeypatch, tmp_path, caplog):
    kw = {}
    if source == 'env':
        monkeypatch.setenv('VLN_TEST_KEY', SECRET)
        kw['openai_api_key_env'] = 'VLN_TEST_KEY'
    else:
        key_file = tmp_path / 'key.txt'
        key_file.write_text(SECRET + '\n')
        kw['openai_api_key_file'] = str(key_file)
    script = [PLAN, {'status': 500, 'text': f'upstream rejected key {SECRET}'},
              {'status': 401, 'text': f'Incorrect API key provided: {SECRET}'},
              {'status': 500, 'text': f'upstream rejected key {SECRET}'}]
    with FakeOpenAIServer(script) as server:
        backend = backend_for(server, **kw)
        with caplog.at_level(logging.DEBUG):
            dec = backend.decide(obs())
            n_chats = len(server.chat_requests())
            with pytest.raises(ChatHTTPError) as err:         # a 500 whose body echoes the key
                backend.client.complete([{'role': 'user', 'content': 'hi'}])
    assert all(r['headers']['authorization'] == f'Bearer {SECRET}'
               for r in server.chat_requests())
    assert not dec.valid and 'HTTP 401' in dec.reason
    assert SECRET not in dec.reason and SECRET not in dec.raw
    assert SECRET not in caplog.text and SECRET not in repr(backend.client)
    assert n_chats == 1 + 2                               # the 500 retried, the 401 not
    assert 'HTTP 500' in str(err.value) and SECRET not in str(err.value)
    assert 'upstream rejected key ***' in str(err.value)


def test_missing_key_file_is_a_config_error():
    with pytest.raises(ValueError, match='cannot read API key file'):
        OpenAIBackend(openai_api_key_file='/nonexistent/key.txt')


# --- registry, client, fake server as a process ------------------------------------------------
def test_registry_accepts_the_decision_nodes_kwargs():
    backend = make_backend('openai', episode_file='', episode_id='', checkpoint_dir='',
                           device='cpu', spec=MoveSpec(0.25, 30.0), seed=0,
                           openai_timeout_s=2.5, something_else=1)
    assert isinstance(backend, OpenAIBackend) and backend.needs_image
    assert not backend.needs_pose and not backend.needs_tokens
    assert backend.client.timeout_s == 2.5
    assert backend.client.max_total_s == 2 * 2.5 + 0.5    # (1 + 1 retry) x timeout + one backoff
    assert backend.client.base_url == 'http://127.0.0.1:8000/v1'


# --- retries: backoff, Retry-After, the time budget --------------------------------------------
HI = [{'role': 'user', 'content': 'hi'}]


def chat_gaps(server: FakeOpenAIServer) -> list[float]:
    """Seconds between consecutive chat requests as the server received them."""
    times = [r['time'] for r in server.chat_requests()]
    return [b - a for a, b in zip(times, times[1:])]


def test_backoff_schedule_is_exponential_capped_and_bounds_the_total():
    client = ChatClient('http://127.0.0.1:9/v1', timeout_s=10.0, max_retries=5, backoff_s=0.5,
                        max_backoff_s=3.0)
    assert [client.backoff_delay(k) for k in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert client.max_total_s == 6 * 10.0 + (0.5 + 1.0 + 2.0 + 3.0 + 3.0)
    assert ChatClient('http://h/v1', max_retries=0).max_total_s == 10.0
    assert ChatClient('http://h/v1', max_total_s=4.0).max_total_s == 4.0
    with pytest.raises(ValueError, match='backoff_s'):
        ChatClient('http://h/v1', backoff_s=-1.0)


def test_parse_retry_after():
    now = 1_800_000_000.0
    assert parse_retry_after('3', now) == 3.0
    assert parse_retry_after(' 1.5 ', now) == 1.5
    assert parse_retry_after('-4', now) == 0.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == pytest.approx(30.0)
    assert parse_retry_after(formatdate(now + 30, usegmt=True).replace(' GMT', ''),
                             now) == pytest.approx(30.0)
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now) == 0.0
    for bad in (None, '', 'soon', 'nan', 'inf'):
        assert parse_retry_after(bad, now) is None


def test_retries_wait_the_backoff_schedule():
    script = [{'status': 500}, {'status': 502}, {'raw': 'not json'}, 'ok']
    with FakeOpenAIServer(script) as server:
        client = ChatClient(server.base_url, 'm', timeout_s=2.0, max_retries=3, backoff_s=0.1,
                            max_backoff_s=0.15)
        out = client.complete(HI)
        gaps = chat_gaps(server)
    assert out.text == 'ok' and out.attempts == 4
    assert len(gaps) == 3
    for gap, delay in zip(gaps, (0.1, 0.15, 0.15)):
        assert delay - 0.005 < gap < delay + 0.3, gaps


@pytest.mark.parametrize('status', [429, 503])
def test_retry_after_seconds_is_honoured(status):
    script = [{'status': status, 'headers': {'Retry-After': '1'}}, 'ok']
    with FakeOpenAIServer(script) as server:
        client = ChatClient(server.base_url, 'm', timeout_s=2.0, max_retries=1, backoff_s=0.05)
        t0 = time.monotonic()
        out = client.complete(HI)
        elapsed = time.monotonic() - t0
        gaps = chat_gaps(server)
    assert out.text == 'ok' and out.attempts == 2
    assert 0.995 < gaps[0] < 1.5 and elapsed < 2.0


def test_retry_after_http_date_is_honoured():
    # an HTTP date has whole seconds: "2 s from now" is 1..2 s away
    when = formatdate(time.time() + 2, usegmt=True)
    script = [{'status': 503, 'headers': {'Retry-After': when}}, 'ok']
    with FakeOpenAIServer(script) as server:
        client = ChatClient(server.base_url, 'm', timeout_s=3.0, max_retries=1, backoff_s=0.05)
        out = client.complete(HI)
        gaps = chat_gaps(server)
    assert out.text == 'ok' and out.attempts == 2
    assert 0.95 < gaps[0] < 2.3


def test_retry_after_on_a_500_is_not_a_wait_order():
    script = [{'status': 500, 'headers': {'Retry-After': '5'}}, 'ok']
    with FakeOpenAIServer(script) as server:
        client = ChatClient(server.base_url, 'm', timeout_s=2.0, max_retries=1, backoff_s=0.05)
        out = client.complete(HI)
        gaps = chat_gaps(server)
    assert out.attempts == 2 and gaps[0] < 1.0             # the backoff, not 5 s


def test_retry_after_beyond_the_budget_fails_at_once():
    script = [{'status': 429, 'text': 'slow down', 'headers': {'Retry-After': '30'}}, 'ok']
    with FakeOpenAIServer(script) as server:
        client = ChatClient(server.base_url, 'm', timeout_s=1.0, max_retries=2, backoff_s=0.5)
        t0 = time.monotonic()
        with pytest.raises(ChatHTTPError) as err:
            client.complete(HI)
        elapsed = time.monotonic() - t0
        n = len(server.chat_requests())
    assert err.value.status == 429 and err.value.attempts == 1 and n == 1
    assert 'HTTP 429' in str(err.value) and 'retry after 30 s' in str(err.value)
    assert 'max_total_s 4.5 s' in str(err.value)
    assert elapsed < 1.0                                  # not 30 s
    # with room in the budget the same answer is waited for (a short Retry-After here)
    with FakeOpenAIServer([{'status': 429, 'headers': {'Retry-After': '1'}}, 'ok']) as server:
        client = ChatClient(server.base_url, 'm', timeout_s=0.5, max_retries=1, backoff_s=0.05,
                            max_total_s=1.4)
        with pytest.raises(ChatHTTPError, match='not retried'):   # 1 s + 0.5 s > 1.4 s
            client.complete(HI)
        client = ChatClient(server.base_url, 'm', timeout_s=0.5, max_retries=1, backoff_s=0.05,
                            max_total_s=1.6)
        assert client.complete(HI).text == 'ok'


def test_decide_reports_a_retry_after_beyond_the_budget():
    script = [PLAN, {'status': 429, 'headers': {'Retry-After': '60'}}]
    with FakeOpenAIServer(script) as server:
        backend = backend_for(server, openai_timeout_s=1.0, openai_max_retries=1)
        backend.plan(INSTRUCTION)
        t0 = time.monotonic()
        dec = backend.decide(obs())
        elapsed = time.monotonic() - t0
    assert dec.action is Action.STOP and not dec.valid and elapsed < 1.0   # not 60 s
    assert 'HTTP 429' in dec.reason and 'retry after 60 s' in dec.reason
    assert '1 attempt' in dec.reason


def test_client_connection_refused_is_a_chat_error():
    with FakeOpenAIServer(['x']) as server:
        url = server.base_url
    client = ChatClient(url, 'm', timeout_s=0.5, max_retries=1, backoff_s=0.05)
    with pytest.raises(ChatConnectionError, match='refused') as err:
        client.complete([{'role': 'user', 'content': 'hi'}])
    assert err.value.attempts == 2


def test_fake_server_runs_as_a_process(tmp_path):
    script = tmp_path / 'script.json'
    script.write_text(json.dumps(['hello']))
    port_file, record = tmp_path / 'port.txt', tmp_path / 'requests.jsonl'
    proc = subprocess.Popen([sys.executable, str(HERE / 'fake_openai_server.py'), '--script',
                             str(script), '--port-file', str(port_file), '--record', str(record)],
                            stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10.0
        while not port_file.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        base = f'http://127.0.0.1:{port_file.read_text()}/v1'
        with urllib.request.urlopen(f'{base}/models', timeout=5) as resp:
            assert json.load(resp)['data'][0]['id'] == 'fake-vlm'
        out = ChatClient(base, 'fake-vlm', api_key='k').complete([{'role': 'user',
                                                                  'content': 'hi'}])
        assert out.text == 'hello' and out.finish_reason == 'stop'
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    lines = [json.loads(x) for x in record.read_text().splitlines()]
    assert [x['method'] for x in lines] == ['GET', 'POST']
    assert lines[1]['headers']['authorization'] == 'Bearer k'
