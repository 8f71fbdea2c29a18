"""A scripted OpenAI-compatible chat server for tests: real HTTP, real JSON, canned replies.

Serves ``POST /v1/chat/completions`` and ``GET /v1/models`` on 127.0.0.1. Each chat request
takes the next entry of the script; when the script runs out the last entry repeats (or
``default`` when one is given). An entry is

- ``"text"``: a normal reply with that content;
- ``{"text": "...", "delay_s": 2.0}``: the same, after a delay (to provoke client timeouts);
- ``{"status": 500}`` (optional ``"text"`` as the error message): an OpenAI-shaped error body;
- ``{"status": 429, "headers": {"Retry-After": "1"}}``: extra response headers (any entry);
- ``{"raw": "not json"}``: HTTP 200 with that body as is (a malformed reply).

Every request is recorded (method, path, headers, parsed JSON body) in ``server.requests`` and,
when ``record_path`` is given, appended to that file as one JSON line.

In a test::

    with FakeOpenAIServer(['<thought>..</thought>...']) as server:
        backend = OpenAIBackend(openai_base_url=server.base_url, ...)

As a process (prints ``port N`` and writes N to the port file once it listens; stops on
SIGTERM / SIGINT)::

    python tests/fake_openai_server.py --script script.json --port-file port.txt \
        [--port 0] [--record requests.jsonl] [--model fake-vlm]
"""
from __future__ import annotations

import argparse
import itertools
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DEFAULT_MODEL = 'fake-vlm'


def completion_body(text: str, model: str, n: int) -> dict[str, Any]:
    """A chat.completion object as the OpenAI API returns it."""
    return {
        'id': f'chatcmpl-fake-{n}',
        'object': 'chat.completion',
        'created': int(time.time()),
        'model': model,
        'choices': [{'index': 0,
                     'message': {'role': 'assistant', 'content': text},
                     'logprobs': None,
                     'finish_reason': 'stop'}],
        'usage': {'prompt_tokens': 100, 'completion_tokens': max(1, len(text) // 4),
                  'total_tokens': 100 + max(1, len(text) // 4)},
    }


class FakeOpenAIServer:
    def __init__(self, script: list[Any], *, default: Any = None, port: int = 0,
                 record_path: str | Path | None = None, model: str = DEFAULT_MODEL) -> None:
        if not script and default is None:
            raise ValueError('give a script with at least one entry, or a default')
        self.script = list(script)
        self.default = default
        self.model = model
        self.record_path = Path(record_path) if record_path else None
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._served = 0
        self._counter = itertools.count(1)
        self.httpd = ThreadingHTTPServer(('127.0.0.1', port), self._handler_class())
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False   # do not wait for handlers still sleeping (delay_s)
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f'http://127.0.0.1:{self.port}/v1'

    def start(self) -> 'FakeOpenAIServer':
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                        name='fake-openai', daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> 'FakeOpenAIServer':
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- script --------------------------------------------------------------------------------
    def next_entry(self) -> Any:
        with self._lock:
            i = self._served
            self._served += 1
        if i < len(self.script):
            return self.script[i]
        return self.default if self.default is not None else self.script[-1]

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r['path'].endswith('/chat/completions')]

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)
            if self.record_path is not None:
                with self.record_path.open('a', encoding='utf-8') as f:
                    f.write(json.dumps(entry) + '\n')

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, fmt: str, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: bytes, content_type: str = 'application/json',
                      headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header('Content-Type', content_type)
                    self.send_header('Content-Length', str(len(body)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, str(value))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass   # the client gave up (timeout)

            def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
                self._send(status, json.dumps(obj).encode('utf-8'), headers=headers)

            def _read_body(self) -> Any:
                length = int(self.headers.get('Content-Length') or 0)
                raw = self.rfile.read(length) if length else b''
                try:
                    return json.loads(raw) if raw else None
                except ValueError:
                    return {'_unparsed': raw.decode('utf-8', 'replace')}

            def _log(self, body: Any) -> None:
                server._record({'method': self.command, 'path': self.path,
                                'headers': {k.lower(): v for k, v in self.headers.items()},
                                'body': body, 'time': time.time()})

            def do_GET(self) -> None:
                self._log(None)
                if self.path.rstrip('/') == '/v1/models':
                    self._json(200, {'object': 'list', 'data': [
                        {'id': server.model, 'object': 'model', 'created': 0,
                         'owned_by': 'fake'}]})
                else:
                    self._json(404, {'error': {'message': f'no route {self.path}',
                                               'type': 'invalid_request_error'}})

            def do_POST(self) -> None:
                body = self._read_body()
                self._log(body)
                if self.path.rstrip('/') != '/v1/chat/completions':
                    self._json(404, {'error': {'message': f'no route {self.path}',
                                               'type': 'invalid_request_error'}})
                    return
                entry = server.next_entry()
                if isinstance(entry, str):
                    entry = {'text': entry}
                if entry.get('delay_s'):
                    time.sleep(float(entry['delay_s']))
                extra = entry.get('headers')
                if 'raw' in entry:
                    self._send(200, str(entry['raw']).encode('utf-8'), 'text/plain', extra)
                elif 'status' in entry and int(entry['status']) != 200:
                    self._json(int(entry['status']), {'error': {
                        'message': entry.get('text', 'scripted failure'),
                        'type': 'server_error', 'code': int(entry['status'])}}, extra)
                else:
                    model = (body or {}).get('model') or server.model
                    self._json(200, completion_body(str(entry.get('text', '')), model,
                                                    next(server._counter)), extra)

        return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--script', required=True, help='JSON file: a list of script entries')
    parser.add_argument('--port', type=int, default=0, help='0 = any free port')
    parser.add_argument('--port-file', default='', help='write the port number here')
    parser.add_argument('--record', default='', help='append requests as JSON lines here')
    parser.add_argument('--model', default=DEFAULT_MODEL)
    args = parser.parse_args(argv)
    script = json.loads(Path(args.script).read_text(encoding='utf-8'))
    if not isinstance(script, list):
        parser.error('the script must be a JSON list')
    server = FakeOpenAIServer(script, port=args.port, record_path=args.record or None,
                              model=args.model)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    if args.port_file:
        tmp = Path(args.port_file + '.tmp')
        tmp.write_text(str(server.port), encoding='utf-8')
        tmp.replace(args.port_file)   # readers never see a half-written file
    print(f'port {server.port}', flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()


if __name__ == '__main__':
    main()
