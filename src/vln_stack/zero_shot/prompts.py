"""Prompts of the zero-shot backend, their strict parsers, and the subtask list.

Two prompts, after two papers' ideas (the wording here is ours):

- Reordering (SkillNav's temporal reordering module): the instruction alone goes in, an ordered
  list of subtasks comes out, in the order the robot must carry them out ("before B, do A" gives
  A then B; "keep going until X" gives one subtask that ends at X; "once X, turn" starts at X).
  Reply format: only a JSON array of objects with exactly the keys ``subtask``,
  ``start_condition`` and ``end_condition`` (non-empty strings), 1 to ``MAX_SUBTASKS`` of them;
  one surrounding Markdown code fence is tolerated, anything else is malformed.
- Step (AgriVLN / SUM-AgriVLN): the instruction, the subtask list with states pending / doing /
  done, the actions so far and the camera frame go in; the reply is three tags, each exactly once
  (text outside them is ignored)::

      <thought> free text </thought>
      <action> [MOVE_FORWARD] </action>
      <state> Subtask NO.2 changes from pending to doing </state>

  ``<action>`` holds exactly one of ``[MOVE_FORWARD]``, ``[TURN_LEFT]``, ``[TURN_RIGHT]``,
  ``[STOP]`` (brackets optional, the word exact and upper case like ``Action.parse``: lower case
  is malformed). ``<state>`` holds one sentence, ``Subtask NO.n changes from OLD to NEW`` or
  ``Subtask NO.n keeps state of S`` (the sentence's words and the state names are read
  case-insensitively, a trailing full stop is allowed). Legal: pending -> doing for the first
  pending subtask while none is doing; doing -> done; "keeps" when S is the subtask's state.
  [STOP] is legal only when, after this step's change, every subtask is done.

Everything here is pure (no I/O), so the parsers are tested directly.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from ..core.actions import Action, MoveSpec

STATES = ('pending', 'doing', 'done')
MAX_SUBTASKS = 12
SUBTASK_KEYS = ('subtask', 'start_condition', 'end_condition')


class MalformedReply(ValueError):
    """A model reply that does not follow the requested format; the message says what is wrong
    and is sent back to the model on the retry."""


# --- subtask list --------------------------------------------------------------------------------
@dataclass
class Subtask:
    step: int                 # 1-based position in the list
    subtask: str
    start_condition: str
    end_condition: str
    state: str = 'pending'    # 'pending' | 'doing' | 'done'


@dataclass(frozen=True)
class StateChange:
    """One ``<state>`` sentence: subtask ``step`` goes from ``old`` to ``new`` (equal: keeps)."""

    step: int
    old: str
    new: str

    @property
    def keeps(self) -> bool:
        return self.old == self.new

    def __str__(self) -> str:
        if self.keeps:
            return f'Subtask NO.{self.step} keeps state of {self.old}'
        return f'Subtask NO.{self.step} changes from {self.old} to {self.new}'


class SubtaskList:
    """Ordered subtasks, each pending -> doing -> done, at most one doing at a time."""

    def __init__(self, subtasks: list[Subtask]) -> None:
        if not subtasks:
            raise ValueError('a subtask list needs at least one subtask')
        self.items = subtasks

    @classmethod
    def from_texts(cls, entries: list[dict[str, str]]) -> 'SubtaskList':
        return cls([Subtask(i + 1, e['subtask'], e['start_condition'], e['end_condition'])
                    for i, e in enumerate(entries)])

    @classmethod
    def whole_instruction(cls, instruction: str) -> 'SubtaskList':
        """The fallback plan: one subtask, the instruction itself."""
        return cls([Subtask(1, instruction, 'immediately',
                            'the whole instruction is carried out')])

    def __len__(self) -> int:
        return len(self.items)

    def copy(self) -> 'SubtaskList':
        return SubtaskList(copy.deepcopy(self.items))

    def focus(self) -> Subtask | None:
        """The subtask being done, else the first pending one, else None (all done)."""
        for item in self.items:
            if item.state == 'doing':
                return item
        return next((item for item in self.items if item.state == 'pending'), None)

    def current_text(self) -> str:
        item = self.focus()
        return item.subtask if item is not None else ''

    def all_done(self) -> bool:
        return all(item.state == 'done' for item in self.items)

    def check(self, change: StateChange) -> str:
        """'' when ``change`` is legal now, else why not."""
        if not 1 <= change.step <= len(self.items):
            return f'there is no subtask NO.{change.step} (the list has NO.1 to NO.{len(self)})'
        item = self.items[change.step - 1]
        if item.state != change.old:
            return f'subtask NO.{change.step} is {item.state}, not {change.old}'
        if change.keeps:
            return ''
        if (change.old, change.new) not in (('pending', 'doing'), ('doing', 'done')):
            return (f'{change.old} -> {change.new} is not allowed (only pending -> doing and '
                    f'doing -> done)')
        if change.new == 'doing':
            focus = self.focus()
            if focus is not None and focus.step != change.step:
                what = 'is still doing' if focus.state == 'doing' else 'comes first'
                return f'subtask NO.{focus.step} {what}'
        return ''

    def apply(self, change: StateChange) -> None:
        why = self.check(change)
        if why:
            raise ValueError(why)
        self.items[change.step - 1].state = change.new

    def as_json(self) -> list[dict[str, Any]]:
        return [asdict(item) for item in self.items]

    def render(self) -> str:
        return json.dumps(self.as_json(), indent=2, ensure_ascii=False)


# --- reordering ----------------------------------------------------------------------------------
REORDER_SYSTEM = f"""\
You plan for a mobile robot. You get one navigation instruction and rewrite it as an ordered \
list of subtasks, in the order the robot has to carry them out. Mind the temporal words:
- Sequence ("A, then B", "after A, B", "finally B"): A comes before B.
- Reversed mention ("before B, A", "B, but first A"): write A before B, the order of execution, \
not the order of mention.
- Trigger ("once X, B", "as soon as X, B", "when X, B"): B is a subtask whose start condition \
is X.
- Duration ("keep doing A until X", "A while X"): one subtask A whose end condition is X.
Rules: one movement goal per subtask; keep the instruction's landmarks and directions and add \
nothing it does not say; the last subtask ends where the robot must stop; 1 to {MAX_SUBTASKS} \
subtasks.
Answer with only a JSON array, no other text, each element exactly:
{{"subtask": "...", "start_condition": "...", "end_condition": "..."}}

Example. Instruction: "Before you turn left at the fountain, walk past the two benches. Stop \
once you reach the gate."
[{{"subtask": "Walk past the two benches", "start_condition": "immediately", \
"end_condition": "both benches are behind the robot"}}, \
{{"subtask": "Turn left at the fountain", "start_condition": "the robot is at the fountain", \
"end_condition": "the robot faces away from the fountain, to its left"}}, \
{{"subtask": "Go to the gate and stop", "start_condition": "the turn at the fountain is done", \
"end_condition": "the robot is at the gate"}}]"""

_FENCE = re.compile(r'\A```[A-Za-z]*[ \t]*\n(.*?)\n?```\Z', re.DOTALL)


def reorder_messages(instruction: str) -> list[dict[str, Any]]:
    return [{'role': 'system', 'content': REORDER_SYSTEM},
            {'role': 'user', 'content': f'Instruction: "{instruction}"'}]


def parse_subtasks(text: str) -> list[dict[str, str]]:
    """The reorder reply as ``[{'subtask', 'start_condition', 'end_condition'}, ...]``.

    Raises MalformedReply unless the reply (optionally inside one code fence) is exactly a JSON
    array of 1..MAX_SUBTASKS objects with exactly those keys and non-empty string values.
    """
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise MalformedReply(f'the reply is not a JSON array ({exc.msg} at char {exc.pos})') \
            from None
    if not isinstance(data, list):
        raise MalformedReply(f'the reply is a JSON {type(data).__name__}, not an array')
    if not 1 <= len(data) <= MAX_SUBTASKS:
        raise MalformedReply(f'{len(data)} subtasks; give 1 to {MAX_SUBTASKS}')
    out = []
    for i, entry in enumerate(data, start=1):
        if not isinstance(entry, dict) or set(entry) != set(SUBTASK_KEYS):
            got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise MalformedReply(f'element {i} must be an object with exactly the keys '
                                 f'{list(SUBTASK_KEYS)}, got {got}')
        if not all(isinstance(entry[k], str) and entry[k].strip() for k in SUBTASK_KEYS):
            raise MalformedReply(f'element {i}: every value must be a non-empty string')
        out.append({k: ' '.join(entry[k].split()) for k in SUBTASK_KEYS})
    return out


# --- one step ------------------------------------------------------------------------------------
def step_system_prompt(spec: MoveSpec) -> str:
    return f"""\
You drive a ground robot that follows a natural-language navigation instruction. Each step you \
get the instruction, the subtask list from the previous step, the actions taken so far, and the \
current image of the robot's front camera. Choose the next action and update the subtask list.

Actions (choose exactly one):
[MOVE_FORWARD]: drive straight ahead {spec.forward_m:g} m.
[TURN_LEFT]: rotate in place {spec.turn_deg:g} degrees to the left.
[TURN_RIGHT]: rotate in place {spec.turn_deg:g} degrees to the right.
[STOP]: the instruction is carried out; this ends the episode.

Subtask list rules:
- The subtasks are carried out one at a time, in order. Each is pending, doing or done.
- If a subtask is doing, consider only that one: if the image shows its end condition is met, \
change it from doing to done; otherwise it keeps state of doing.
- If no subtask is doing, consider only the first pending one: if its start condition is met, \
change it from pending to doing; otherwise it keeps state of pending.
- A subtask never goes from pending straight to done. At most one change per step.
- Choose [STOP] only when every subtask is done, counting the change you make in this step.
- Seeing a landmark is not the same as having reached it.

Reply with exactly these three tags, each once:
<thought> why this action, and why the subtask state changes or not </thought>
<action> [one action] </action>
<state> Subtask NO.<number> changes from <old state> to <new state> </state>
or, when no state changes:
<state> Subtask NO.<number> keeps state of <state> </state>

Example:
<thought> The corridor continues ahead and the door of subtask 1 is not visible yet, so \
subtask 1 starts now and I keep going. </thought>
<action> [MOVE_FORWARD] </action>
<state> Subtask NO.1 changes from pending to doing </state>"""


def step_messages(instruction: str, subtasks: SubtaskList, actions_so_far: list[str],
                  image_jpeg_b64: str, spec: MoveSpec, *, history: int = 10
                  ) -> list[dict[str, Any]]:
    """System + one user message: the text part, then the frame as a data-URL JPEG part."""
    recent = actions_so_far[-history:]
    if not recent:
        done = 'none yet'
    else:
        skipped = len(actions_so_far) - len(recent)
        done = (f'({skipped} earlier) ' if skipped else '') + ', '.join(recent)
    text = (f'Instruction: "{instruction}"\n'
            f'Step {len(actions_so_far) + 1}. Actions so far (oldest first): {done}\n'
            f'<subtask_list>\n{subtasks.render()}\n</subtask_list>\n'
            f'The current front camera image follows.')
    return [{'role': 'system', 'content': step_system_prompt(spec)},
            {'role': 'user', 'content': [
                {'type': 'text', 'text': text},
                {'type': 'image_url',
                 'image_url': {'url': f'data:image/jpeg;base64,{image_jpeg_b64}'}}]}]


def retry_messages(messages: list[dict[str, Any]], bad_reply: str, why: str,
                   what: str) -> list[dict[str, Any]]:
    """``messages`` + the malformed reply + a user turn saying what was wrong."""
    return messages + [
        {'role': 'assistant', 'content': bad_reply},
        {'role': 'user', 'content': f'Your reply could not be used: {why}. Answer again, with '
                                    f'only {what} in the format given.'}]


@dataclass(frozen=True)
class StepReply:
    action: Action
    thought: str
    change: StateChange


_ACTION_WORDS = tuple(a.value for a in Action)
_STATE_CHANGE = re.compile(r'subtask\s+no\.?\s*(\d+)\s+changes\s+from\s+(\w+)\s+to\s+(\w+)\s*\.?',
                           re.IGNORECASE)
_STATE_KEEP = re.compile(r'subtask\s+no\.?\s*(\d+)\s+keeps\s+(?:the\s+)?state\s+of\s+(\w+)\s*\.?',
                         re.IGNORECASE)
_BRACKETED = re.compile(r'\[([^\[\]]*)\]')


def _one_tag(text: str, tag: str) -> str:
    opened = len(re.findall(f'<{tag}>', text))
    found = re.findall(f'<{tag}>(.*?)</{tag}>', text, re.DOTALL)
    if opened == 0:
        raise MalformedReply(f'the <{tag}>...</{tag}> tag is missing')
    if opened > 1 or len(found) > 1:
        raise MalformedReply(f'<{tag}> appears {max(opened, len(found))} times; write it once')
    if not found:
        raise MalformedReply(f'<{tag}> is not closed with </{tag}>')
    return found[0].strip()


def parse_action(content: str) -> Action:
    """Exactly one action word, optionally in brackets: ``[TURN_LEFT]`` or ``TURN_LEFT``."""
    words = re.findall(r'[A-Za-z_]+', content)
    known = [w for w in words if w in _ACTION_WORDS]
    if len(known) > 1 or len(_BRACKETED.findall(content)) > 1:
        raise MalformedReply(f'<action> must hold exactly one action, got {content!r}')
    bracketed = _BRACKETED.fullmatch(content.strip())
    word = (bracketed.group(1) if bracketed else content).strip()
    if word in _ACTION_WORDS:
        return Action(word)
    if word.upper() in _ACTION_WORDS:
        raise MalformedReply(f'action words are upper case: write [{word.upper()}], not '
                             f'[{word}]')
    raise MalformedReply(f'unknown action {word!r}; choose one of '
                         + ', '.join(f'[{w}]' for w in _ACTION_WORDS))


def parse_state(content: str) -> StateChange:
    """One ``Subtask NO.n changes from A to B`` / ``Subtask NO.n keeps state of A`` sentence."""
    sentence = ' '.join(content.split())
    change = _STATE_CHANGE.fullmatch(sentence)
    keep = _STATE_KEEP.fullmatch(sentence)
    if change:
        step, old, new = int(change.group(1)), change.group(2).lower(), change.group(3).lower()
    elif keep:
        step, old = int(keep.group(1)), keep.group(2).lower()
        new = old
    else:
        raise MalformedReply(f'<state> must read "Subtask NO.n changes from OLD to NEW" or '
                             f'"Subtask NO.n keeps state of STATE", got {sentence!r}')
    for word in (old, new):
        if word not in STATES:
            raise MalformedReply(f'unknown state {word!r}; states are {", ".join(STATES)}')
    if change and old == new:
        raise MalformedReply(f'"changes from {old} to {new}" is no change; write "Subtask '
                             f'NO.{step} keeps state of {old}"')
    return StateChange(step, old, new)


def parse_step_reply(text: str, subtasks: SubtaskList) -> StepReply:
    """The tagged step reply, checked against ``subtasks`` (which is not modified).

    Raises MalformedReply for a missing, repeated or unclosed tag, not exactly one known action,
    a state sentence that does not parse, an illegal state change, or [STOP] while a subtask
    would remain undone.
    """
    thought = _one_tag(text, 'thought')
    action = parse_action(_one_tag(text, 'action'))
    change = parse_state(_one_tag(text, 'state'))
    why = subtasks.check(change)
    if why:
        raise MalformedReply(f'illegal state change "{change}": {why}')
    if action is Action.STOP:
        after = subtasks.copy()
        after.apply(change)
        undone = [item.step for item in after.items if item.state != 'done']
        if undone:
            raise MalformedReply('[STOP] is allowed only when every subtask is done; not done: '
                                 + ', '.join(f'NO.{n}' for n in undone))
    return StepReply(action, ' '.join(thought.split()), change)
