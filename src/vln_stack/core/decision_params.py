"""The decision node's parameters (one ROS parameter per field; ``config/params.yaml`` sets them
under ``decision``). ROS-free, so tools and tests can build the same configuration."""
from __future__ import annotations

from dataclasses import dataclass

from .actions import MoveSpec

__all__ = ['DecisionConfig']


@dataclass
class DecisionConfig:
    policy: str = 'oracle'            # 'oracle' (simulator only) | 'janus' | 'openai' | 'random'
    seed: int = 0                     # random policy
    checkpoint_dir: str = ''          # janus: local checkpoint folder
    device: str = 'cpu'
    dtype: str = 'auto'               # janus: auto (bfloat16 on CUDA, else float32) | float32 |
                                      # bfloat16 | float16
    janus_mode: str = 'released'      # janus: 'released' (published protocol) | 'streaming' (ours)
    janus_initial_frames: int = 8     # streaming: frame blocks kept as sinks in the LLM memory
    janus_window_frames: int = 48     # streaming: most recent frame blocks kept
    janus_max_actions: int = 1        # streaming: moves one answer may hold (StreamVLN: 4)
    janus_retries: int = 1            # streaming: re-asks after an unparsable answer
    openai_base_url: str = 'http://127.0.0.1:8000/v1'   # openai: OpenAI-compatible endpoint
    openai_model: str = ''
    openai_api_key_env: str = 'OPENAI_API_KEY'           # the key is read from here ...
    openai_api_key_file: str = ''                        # ... or from this file; never logged
    openai_timeout_s: float = 10.0
    openai_max_retries: int = 1
    openai_jpeg_quality: int = 80
    openai_max_tokens: int = 256
    openai_temperature: float = 0.0
    episode_file: str = ''            # oracle: episode YAML with the reference path
    episode_id: str = ''
    forward_m: float = MoveSpec.forward_m   # the oracle's move size (the waypoint node's too)
    turn_deg: float = MoveSpec.turn_deg
    instruction: str = ''             # start with this instruction right away ('' = wait)
    max_steps: int = 400
    move_timeout_s: float = 30.0
    frame_timeout_s: float = 5.0
    max_frame_age_s: float = 1.0
    decision_timeout_s: float = 10.0  # a slower decision is dropped, the robot holds (0 = none)
    max_dropped: int = 3              # dropped decisions in a row that end the episode
    max_refused: int = 10             # refused moves in a row that end the episode (0 = no limit)
    status_rate_hz: float = 10.0
    torch_threads: int = 1            # janus on CPU: torch threads (0 = torch's default)
    encode_retry_s: float = 2.0       # janus: resend a frame to the encoder if no tokens came back
    autostart: bool = True            # configure + activate on start-up (loads the policy)
