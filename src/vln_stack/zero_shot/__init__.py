"""Zero-shot policy backends: a chat model behind an OpenAI-compatible endpoint decides each move.

- ``client``: a standard-library chat-completions client (timeouts, retries with exponential
  backoff and Retry-After within a total time bound, redacted errors).
- ``prompts``: the instruction-reordering and per-step prompts, their strict parsers, and the
  subtask list state machine.
- ``backend``: ``OpenAIBackend``, registered as policy ``openai``.
"""
