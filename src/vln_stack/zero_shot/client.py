"""A minimal client for OpenAI-compatible ``POST {base_url}/chat/completions`` endpoints.

Standard library only (``http.client``), so the same code talks to vLLM or ollama on a tethered
GPU and to cloud models. Every attempt runs under one deadline of ``timeout_s`` (connect, send
and the whole reply), and the API key goes only into the ``Authorization`` header: it is scrubbed
from every error text this module makes. Proxies from the environment are not used.

Retries. A failed attempt that may pass on a second try (timeout, connection error, 5xx, 408,
409, 429, a malformed 2xx body) is retried up to ``max_retries`` times, after a deterministic
exponential backoff (no jitter, so runs and tests repeat): ``backoff_s * 2**(k-1)`` seconds
before retry k, at most ``max_backoff_s``. A 429 or 503 with a ``Retry-After`` header (seconds,
or an HTTP date) waits at least that long. The whole ``complete()`` call takes at most
``max_total_s`` (give or take milliseconds of scheduling), by default ``(1 + max_retries) *
timeout_s`` plus the backoff schedule: a retry whose wait plus one full attempt does not fit in
what is left is not made, and the last error is raised at once with the reason (so a long
Retry-After ends the call at once instead of holding the robot).
"""
from __future__ import annotations

import datetime
import email.utils
import http.client
import json
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

_BODY_SNIPPET = 200   # characters of a server's error body kept in an error message
_RETRY_AFTER_STATUSES = (429, 503)   # the statuses whose Retry-After header is honoured


class ChatError(Exception):
    """A request that produced no usable reply. The message never contains the API key."""

    retryable = True
    attempts = 1          # attempts made when the error was raised by ChatClient.complete


class ChatTimeout(ChatError):
    """No complete reply within ``timeout_s``."""


class ChatConnectionError(ChatError):
    """The endpoint could not be reached (refused, reset, DNS, TLS)."""


class ChatHTTPError(ChatError):
    """The endpoint answered with a non-2xx status."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        # Server errors, overload and request timeouts may pass; 400/401/403/404 will not.
        self.retryable = status >= 500 or status in (408, 409, 429)
        self.retry_after_s = retry_after_s   # the server's Retry-After (429/503), in seconds


class ChatProtocolError(ChatError):
    """A 2xx reply whose body is not a chat completion (not JSON, no choices[0].message)."""


@dataclass
class ChatReply:
    text: str                 # choices[0].message.content
    finish_reason: str        # 'stop', 'length', ... ('' when absent)
    latency_ms: float         # of the successful attempt
    attempts: int             # 1 + retries used


class ChatClient:
    """Chat completions over HTTP(S).

    ``base_url`` ends at the API root, e.g. ``http://127.0.0.1:8000/v1`` (vLLM) or
    ``http://127.0.0.1:11434/v1`` (ollama). ``api_key`` '' sends no ``Authorization`` header.
    ``backoff_s`` / ``max_backoff_s`` / ``max_total_s``: see the module docstring
    (``max_total_s`` None: the default bound).
    """

    def __init__(self, base_url: str, model: str = '', *, api_key: str = '',
                 timeout_s: float = 10.0, max_retries: int = 1, max_tokens: int = 256,
                 temperature: float = 0.0, backoff_s: float = 0.5, max_backoff_s: float = 8.0,
                 max_total_s: float | None = None) -> None:
        url = urllib.parse.urlsplit(base_url.rstrip('/'))
        if url.scheme not in ('http', 'https') or not url.hostname:
            raise ValueError(f'base_url must be http(s)://host[:port]/path, got {base_url!r}')
        if timeout_s <= 0.0:
            raise ValueError(f'timeout_s must be > 0 s, got {timeout_s}')
        if max_retries < 0:
            raise ValueError(f'max_retries must be >= 0, got {max_retries}')
        if backoff_s < 0.0 or max_backoff_s < 0.0:
            raise ValueError(f'backoff_s and max_backoff_s must be >= 0 s, got {backoff_s}, '
                             f'{max_backoff_s}')
        self.base_url = base_url.rstrip('/')
        self._url = url
        self.model = model
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        default_total = (self.max_retries + 1) * self.timeout_s + sum(
            self.backoff_delay(k) for k in range(1, self.max_retries + 1))
        self.max_total_s = default_total if max_total_s is None else float(max_total_s)
        if self.max_total_s <= 0.0:
            raise ValueError(f'max_total_s must be > 0 s, got {max_total_s}')
        self.__key = api_key.strip()

    def __repr__(self) -> str:
        return (f'ChatClient({self.base_url!r}, model={self.model!r}, '
                f'auth={"yes" if self.__key else "no"}, timeout_s={self.timeout_s})')

    # --- public --------------------------------------------------------------------------------
    def backoff_delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1, 2, ...) when the server names no
        Retry-After: ``backoff_s * 2**(retry-1)``, at most ``max_backoff_s``."""
        if retry < 1:
            raise ValueError(f'retry numbers start at 1, got {retry}')
        return min(self.max_backoff_s, self.backoff_s * 2.0 ** (retry - 1))

    def complete(self, messages: list[dict[str, Any]]) -> ChatReply:
        """One chat completion; retried on timeouts, connection errors, 5xx/408/409/429 and
        malformed bodies, with backoff, within ``max_total_s``. Raises the last ``ChatError``
        (``attempts`` set) when every attempt failed or no further attempt fits the budget."""
        body = {'model': self.model, 'messages': messages, 'max_tokens': self.max_tokens,
                'temperature': self.temperature, 'stream': False}
        payload = json.dumps(body).encode('utf-8')
        per_attempt = min(self.timeout_s, self.max_total_s)
        # Time spent so far: each attempt counts as at most its timeout (an attempt may overrun
        # it by a few ms of scheduling), each wait as planned, so the schedule itself always fits
        # the default budget and the decision to retry does not depend on timing noise.
        spent = 0.0
        attempt = 0
        while True:
            attempt += 1
            t0 = time.monotonic()
            try:
                data = self._request('POST', '/chat/completions', payload, timeout_s=per_attempt)
                text, finish = _completion_text(data)
                return ChatReply(text, finish, (time.monotonic() - t0) * 1e3, attempt)
            except ChatError as exc:
                spent += min(time.monotonic() - t0, per_attempt)
                exc.attempts = attempt
                if not exc.retryable or attempt > self.max_retries:
                    raise
                wait = self.backoff_delay(attempt)
                asked = getattr(exc, 'retry_after_s', None)
                if asked is not None:
                    wait = max(wait, asked)
                left = self.max_total_s - spent
                if wait + per_attempt > left + 1e-9:
                    why = (f'the server asks to retry after {asked:g} s' if asked is not None
                           and asked >= wait else f'a retry after {wait:g} s')
                    exc.args = (f'{exc}; not retried: {why} and one more attempt '
                                f'({per_attempt:g} s) exceed the {max(left, 0.0):.3g} s left '
                                f'of max_total_s {self.max_total_s:g} s',)
                    raise
                time.sleep(wait)
                spent += wait

    def list_models(self) -> list[str]:
        """Model ids served at ``GET {base_url}/models`` (one attempt)."""
        data = self._request('GET', '/models', None)
        try:
            return [str(m['id']) for m in data['data']]
        except (KeyError, TypeError) as exc:
            raise ChatProtocolError(f'GET /models: unexpected reply ({exc!r})') from None

    # --- transport -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, payload: bytes | None,
                 timeout_s: float | None = None) -> Any:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        where = f'{method} {self.base_url}{path}'
        url = self._url
        conn_cls = (http.client.HTTPSConnection if url.scheme == 'https'
                    else http.client.HTTPConnection)
        conn = conn_cls(url.hostname, url.port, timeout=timeout)
        headers = {'Accept': 'application/json'}
        if payload is not None:
            headers['Content-Type'] = 'application/json'
        if self.__key:
            headers['Authorization'] = f'Bearer {self.__key}'
        try:
            conn.request(method, url.path + path, body=payload, headers=headers)
            _set_remaining(conn, deadline)
            resp = conn.getresponse()
            chunks = []
            while True:
                _set_remaining(conn, deadline)
                chunk = resp.read1(65536) if hasattr(resp, 'read1') else resp.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            raw = b''.join(chunks)
        except (socket.timeout, TimeoutError):
            raise ChatTimeout(f'{where}: no reply within {timeout:g} s') from None
        except ssl.SSLError as exc:
            raise ChatConnectionError(self._scrub(f'{where}: TLS error: {exc}')) from None
        except (OSError, http.client.HTTPException) as exc:
            raise ChatConnectionError(
                self._scrub(f'{where}: {type(exc).__name__}: {exc}')) from None
        finally:
            conn.close()
        if not 200 <= resp.status < 300:
            detail = ''
            if resp.status not in (401, 403):   # auth errors may echo parts of the key
                detail = ': ' + raw[:_BODY_SNIPPET].decode('utf-8', 'replace').strip()
            retry_after = None
            if resp.status in _RETRY_AFTER_STATUSES:
                retry_after = parse_retry_after(resp.getheader('Retry-After'))
            raise ChatHTTPError(resp.status,
                                self._scrub(f'{where}: HTTP {resp.status} {resp.reason}{detail}'),
                                retry_after)
        try:
            return json.loads(raw)
        except ValueError:
            snippet = raw[:60].decode('utf-8', 'replace')
            raise ChatProtocolError(
                self._scrub(f'{where}: reply is not JSON: {snippet!r}')) from None

    def _scrub(self, text: str) -> str:
        return text.replace(self.__key, '***') if self.__key else text


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds (``"120"``; a decimal is
    accepted too) or an HTTP date (``"Wed, 21 Oct 2026 07:28:00 GMT"``, relative to ``now``, a
    ``time.time()`` value). A date in the past gives 0; absent or unparsable gives None."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:   # an HTTP date is GMT even when it does not say so
            when = when.replace(tzinfo=datetime.timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float('inf'), float('-inf')):   # nan/inf
        return None
    return max(0.0, seconds)


def _set_remaining(conn: http.client.HTTPConnection, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0.0:
        raise socket.timeout('deadline passed')
    if conn.sock is not None:
        conn.sock.settimeout(remaining)


def _completion_text(data: Any) -> tuple[str, str]:
    """(content, finish_reason) of ``choices[0]``; content given as a list of parts is joined."""
    try:
        choice = data['choices'][0]
        content = choice['message']['content']
    except (KeyError, IndexError, TypeError):
        raise ChatProtocolError('reply has no choices[0].message.content') from None
    if isinstance(content, list):   # some servers answer in content parts
        content = ''.join(p.get('text', '') for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ChatProtocolError(f'choices[0].message.content is {type(content).__name__}')
    return content, str(choice.get('finish_reason') or '')
