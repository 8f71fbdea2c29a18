"""A minimal client for OpenAI-compatible ``POST {base_url}/chat/completions`` endpoints.

Standard library only (``http.client``), so the same code talks to vLLM or ollama on a tethered
GPU and to cloud models. Every attempt runs under one deadline of ``timeout_s`` (connect, send
and the whole reply), failed attempts are retried ``max_retries`` times, and the API key goes
only into the ``Authorization`` header: it is scrubbed from every error text this module makes.
Proxies from the environment are not used.
"""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

_BODY_SNIPPET = 200   # characters of a server's error body kept in an error message


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

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        # Server errors, overload and request timeouts may pass; 400/401/403/404 will not.
        self.retryable = status >= 500 or status in (408, 409, 429)


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
    """

    def __init__(self, base_url: str, model: str = '', *, api_key: str = '',
                 timeout_s: float = 10.0, max_retries: int = 1, max_tokens: int = 256,
                 temperature: float = 0.0) -> None:
        url = urllib.parse.urlsplit(base_url.rstrip('/'))
        if url.scheme not in ('http', 'https') or not url.hostname:
            raise ValueError(f'base_url must be http(s)://host[:port]/path, got {base_url!r}')
        if timeout_s <= 0.0:
            raise ValueError(f'timeout_s must be > 0 s, got {timeout_s}')
        if max_retries < 0:
            raise ValueError(f'max_retries must be >= 0, got {max_retries}')
        self.base_url = base_url.rstrip('/')
        self._url = url
        self.model = model
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.__key = api_key.strip()

    def __repr__(self) -> str:
        return (f'ChatClient({self.base_url!r}, model={self.model!r}, '
                f'auth={"yes" if self.__key else "no"}, timeout_s={self.timeout_s})')

    # --- public --------------------------------------------------------------------------------
    def complete(self, messages: list[dict[str, Any]]) -> ChatReply:
        """One chat completion; retried on timeouts, connection errors, 5xx/408/409/429 and
        malformed bodies. Raises the last ``ChatError`` when every attempt failed."""
        body = {'model': self.model, 'messages': messages, 'max_tokens': self.max_tokens,
                'temperature': self.temperature, 'stream': False}
        payload = json.dumps(body).encode('utf-8')
        last: ChatError | None = None
        for attempt in range(1, self.max_retries + 2):
            t0 = time.monotonic()
            try:
                data = self._request('POST', '/chat/completions', payload)
                text, finish = _completion_text(data)
                return ChatReply(text, finish, (time.monotonic() - t0) * 1e3, attempt)
            except ChatError as exc:
                last = exc
                last.attempts = attempt
                if not exc.retryable:
                    break
        assert last is not None
        raise last

    def list_models(self) -> list[str]:
        """Model ids served at ``GET {base_url}/models`` (one attempt)."""
        data = self._request('GET', '/models', None)
        try:
            return [str(m['id']) for m in data['data']]
        except (KeyError, TypeError) as exc:
            raise ChatProtocolError(f'GET /models: unexpected reply ({exc!r})') from None

    # --- transport -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, payload: bytes | None) -> Any:
        deadline = time.monotonic() + self.timeout_s
        where = f'{method} {self.base_url}{path}'
        url = self._url
        conn_cls = (http.client.HTTPSConnection if url.scheme == 'https'
                    else http.client.HTTPConnection)
        conn = conn_cls(url.hostname, url.port, timeout=self.timeout_s)
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
            raise ChatTimeout(f'{where}: no reply within {self.timeout_s:g} s') from None
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
            raise ChatHTTPError(resp.status,
                                self._scrub(f'{where}: HTTP {resp.status} {resp.reason}{detail}'))
        try:
            return json.loads(raw)
        except ValueError:
            snippet = raw[:60].decode('utf-8', 'replace')
            raise ChatProtocolError(
                self._scrub(f'{where}: reply is not JSON: {snippet!r}')) from None

    def _scrub(self, text: str) -> str:
        return text.replace(self.__key, '***') if self.__key else text


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
