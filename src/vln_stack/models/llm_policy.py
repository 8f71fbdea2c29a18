"""JanusVLN decision step: the released evaluation prompt on a stock Qwen2.5-VL LLM.

`JanusPolicy.decide` builds the prompt of CHECKPOINTS.md §4 (verbatim SYSTEM / CONTEXT strings,
up to 8 linspace-sampled history images + the current one), puts each image's fused tokens in place
of its ``<|image_pad|>`` embeddings, computes the 3D mRoPE positions with the model's own
``get_rope_index`` and decodes greedily (at most 24 new tokens) with explicit position ids, so no
shared model state (``rope_deltas``) is read or written. The answer must match an action word
exactly; anything else is STOP with ``valid=False``. No LLM state is kept between calls (as
released), so per-step cost is bounded by the 9-image prompt.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import JanusSettings, check_folder, read_config
from .fusion import fuse_released

__all__ = [
    'ACTIONS',
    'CONTEXT_TEMPLATE',
    'HABITAT_ACTION_IDS',
    'JanusPolicy',
    'PolicyDecision',
    'SYSTEM_PROMPT',
    'build_prompt',
    'parse_action',
    'sample_history',
]

_LOG = logging.getLogger(__name__)

ACTIONS = ('STOP', 'MOVE_FORWARD', 'TURN_LEFT', 'TURN_RIGHT')
HABITAT_ACTION_IDS = {'STOP': 0, 'MOVE_FORWARD': 1, 'TURN_LEFT': 2, 'TURN_RIGHT': 3}

SYSTEM_PROMPT = (
    'You are a visual language navigation model, and your should go to the locations to complete '
    'the given task. Compare the observation and instruction to infer your current progress, and '
    'then select the correct direction from the candidates to go to the target location and '
    'finish the task.'
)
CONTEXT_TEMPLATE = (
    'These images are your historical observations and your current observation.\n'
    ' Your task is to '
    '{instruction} \n You should take one of the following actions:\n MOVE_FORWARD\n TURN_LEFT\n '
    'TURN_RIGHT\n STOP.'
)
_PREFIX = f'<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n'
_IMAGE_BLOCK = '<|vision_start|><|image_pad|><|vision_end|>'
_SUFFIX = '{context}<|im_end|>\n<|im_start|>assistant\n'


@dataclass
class PolicyDecision:
    """One decision: ``action`` is one of `ACTIONS`; ``valid`` False if the text did not parse."""

    action: str
    raw_text: str
    valid: bool
    latency_ms: float


def parse_action(text: str) -> tuple[str, bool]:
    """Exact match (no strip) against the action words; anything else -> ``('STOP', False)``."""
    if text in ACTIONS:
        return text, True
    return 'STOP', False


def sample_history(num_past: int, num_history: int = 8) -> list[int]:
    """Indices of the past frames shown to the LLM (oldest first; the current frame comes after).

    All past frames when ``num_past <= num_history``; otherwise
    ``int(linspace(0, num_past, num_history + 1))`` without its last entry (the current frame).
    """
    if num_past <= num_history:
        return list(range(num_past))
    idx = np.linspace(0, num_past, num_history + 1).astype(int)
    return [int(i) for i in idx[:-1]]


def build_prompt(instruction: str, num_images: int) -> str:
    """The evaluation prompt text with one ``<|image_pad|>`` per image (before token expansion)."""
    context = CONTEXT_TEMPLATE.format(instruction=instruction)
    return _PREFIX + _IMAGE_BLOCK * num_images + _SUFFIX.format(context=context)


def _tokens_and_grid(
    item: Any, grid_hw: tuple[int, int] | None, grid_cols: int | None
) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """``[N, D]`` tokens and merged grid of a tensor or of an object with ``.fused``/``.grid_hw``.

    For plain tensors the grid is ``grid_hw`` when it fits, else ``(N / grid_cols, grid_cols)``
    when ``grid_cols`` divides N, else None.
    """
    if hasattr(item, 'fused'):
        return item.fused, (int(item.grid_hw[0]), int(item.grid_hw[1]))
    tokens = item
    if tokens.dim() != 2:
        raise ValueError(f'image tokens must be [N, D], got {tuple(tokens.shape)}')
    n = tokens.shape[0]
    if grid_hw is not None and grid_hw[0] * grid_hw[1] == n:
        return tokens, (int(grid_hw[0]), int(grid_hw[1]))
    if grid_cols and n % grid_cols == 0:
        return tokens, (n // grid_cols, int(grid_cols))
    return tokens, None


# Checkpoints saved by transformers < 4.52 (and JanusVLN's) name the LLM ``model.*`` and the tower
# ``visual.*``; the runtime layout is ``model.language_model.*`` / ``model.visual.*``.
_LEGACY_KEYS = {
    r'^visual': 'model.visual',
    r'^model(?!\.(language_model|visual))': 'model.language_model',
}


@functools.cache
def _text_only_class():
    """``Qwen2_5_VLForConditionalGeneration`` without its vision tower (built on the meta device
    by ``from_pretrained`` and dropped before any weight is read, so it costs no memory)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    class _TextOnlyQwen(Qwen2_5_VLForConditionalGeneration):
        def __init__(self, config) -> None:
            super().__init__(config)
            self.model.visual = None

    return _TextOnlyQwen


class JanusPolicy:
    """Qwen2.5-VL (transformers class, unmodified) answering the JanusVLN prompt with an action.

    Args:
        model: a ``Qwen2_5_VLForConditionalGeneration``; tokenizer: its tokenizer.
        num_history: past frames sampled into the prompt (released 8).
        max_new_tokens: greedy decoding budget (released 24).
        grid_cols: merged-grid columns of plain-tensor images (``input_width // 28``), used to
            recover their (rows, cols) for mRoPE when ``decide`` gets no ``grid_hw``.
        lam: fusion weight for ``fusion='released'`` (from the folder's ``lam``; released 0.2).
        clock: time source for ``latency_ms``.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        num_history: int = 8,
        max_new_tokens: int = 24,
        grid_cols: int | None = None,
        lam: float = 0.2,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.num_history = num_history
        self.max_new_tokens = max_new_tokens
        self.grid_cols = grid_cols
        self.lam = lam
        self._warned_grid = False
        self._clock = clock
        cfg = model.config
        self.image_token_id = int(cfg.image_token_id)
        self.merge_size = int(cfg.vision_config.spatial_merge_size)
        stop = {
            tokenizer.convert_tokens_to_ids('<|im_end|>'),
            tokenizer.eos_token_id,
            tokenizer.convert_tokens_to_ids('<|endoftext|>'),
        }
        self.stop_ids = {int(i) for i in stop if i is not None and i != tokenizer.unk_token_id}
        self._vision = [int(cfg.vision_start_token_id), int(cfg.vision_end_token_id)]
        self._prefix_ids = self._ids(_PREFIX)
        self._suffix_cache: tuple[str, list[int]] | None = None

    @classmethod
    def from_folder(
        cls,
        path: str | Path,
        device: str | torch.device = 'cpu',
        *,
        dtype: torch.dtype = torch.float32,
        **kwargs,
    ) -> JanusPolicy:
        """Load the LLM (text model + lm_head, no vision tower) and the tokenizer.

        The decision step gets its image tokens from the memory encoder, which holds the Qwen
        vision tower, so the tower is never built or loaded here (`_TextOnlyQwen`); ``visual.*``,
        ``vggt.*`` and ``merger.*`` keys in the folder belong to the encoder and are skipped.

        Raises:
            FileNotFoundError: folder or config.json missing (names the path).
            ValueError: LLM weights missing or of the wrong shape (lists keys).
        """
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        folder = check_folder(path)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the encoder's keys would be reported as "unexpected"
        try:
            model, info = _text_only_class().from_pretrained(
                folder,
                local_files_only=True,
                dtype=dtype,
                attn_implementation='sdpa',
                key_mapping=_LEGACY_KEYS,
                output_loading_info=True,
                ignore_mismatched_sizes=True,  # reported below as a ValueError instead
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        missing = sorted(info.get('missing_keys') or [])
        mismatched = [str(m) for m in (info.get('mismatched_keys') or [])]
        if missing or mismatched:
            parts = [f'LLM weights in {folder} do not match its config']
            if missing:
                parts.append(f'{len(missing)} missing key(s), e.g. {missing[:5]}')
            if mismatched:
                parts.append(f'{len(mismatched)} shape mismatch(es), e.g. {mismatched[:3]}')
            raise ValueError('; '.join(parts))
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        settings = JanusSettings.from_config(read_config(folder))
        kwargs.setdefault('lam', settings.lam)
        kwargs.setdefault(
            'grid_cols',
            settings.input_width // (14 * model.config.vision_config.spatial_merge_size),
        )
        return cls(model.to(device), tokenizer, **kwargs)

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype of the LLM (image tokens and history are kept at it)."""
        return self.model.get_input_embeddings().weight.dtype

    # ---- prompt --------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)['input_ids'])

    def _suffix_ids(self, instruction: str) -> list[int]:
        if self._suffix_cache is None or self._suffix_cache[0] != instruction:
            context = CONTEXT_TEMPLATE.format(instruction=instruction)
            self._suffix_cache = (instruction, self._ids(_SUFFIX.format(context=context)))
        return self._suffix_cache[1]

    def prompt_ids(self, instruction: str, token_counts: Sequence[int]) -> torch.Tensor:
        """``[1, L]`` ids of `build_prompt`; image i's pad token x ``token_counts[i]``.

        Tokenised piecewise (special tokens always split the text, so this equals tokenising the
        expanded prompt in one go).
        """
        ids = list(self._prefix_ids)
        for n in token_counts:
            ids += [self._vision[0]] + [self.image_token_id] * int(n) + [self._vision[1]]
        ids += self._suffix_ids(instruction)
        return torch.tensor([ids], dtype=torch.long)

    # ---- decision ------------------------------------------------------------------------------
    @torch.inference_mode()
    def decide(
        self,
        instruction: str,
        history: Sequence[torch.Tensor],
        current: torch.Tensor,
        *,
        grid_hw: tuple[int, int] | None = None,
        fusion: str = 'per_frame',
    ) -> PolicyDecision:
        """Choose the next action.

        Args:
            instruction: the episode's instruction text, used as is.
            history: every past frame of the episode, oldest first: ``[N, D]`` fused tokens (or
                `FusedFrame`s); at most ``num_history`` of them are sampled (linspace).
            current: ``[N, D]`` fused tokens (or a `FusedFrame`) of the current frame.
            grid_hw: merged token grid (rows, cols) of plain-tensor images (for mRoPE); default
                ``(N / grid_cols, grid_cols)``.
            fusion: ``per_frame`` uses each image's own fused tokens; ``released`` (JanusVLN eval)
                uses ``semantic_i + lam * current.spatial`` for every image (needs `FusedFrame`s).
        Returns:
            `PolicyDecision`; unparseable output -> ``STOP`` with ``valid=False``.
        """
        t0 = self._clock()
        items = [history[i] for i in sample_history(len(history), self.num_history)] + [current]
        if fusion == 'released':
            if not all(hasattr(it, 'semantic') and hasattr(it, 'spatial') for it in items):
                raise ValueError("fusion='released' needs FusedFrame inputs (semantic + spatial)")
            fused = fuse_released([it.semantic for it in items], current.spatial, self.lam)
            items = [replace(it, fused=f) for it, f in zip(items, fused, strict=True)]
        elif fusion != 'per_frame':
            raise ValueError(f"fusion must be 'per_frame' or 'released', got {fusion!r}")
        tokens, grids = zip(
            *(_tokens_and_grid(it, grid_hw, self.grid_cols) for it in items), strict=True
        )
        if any(g is None for g in grids):
            if not self._warned_grid:
                _LOG.warning(
                    'merged grid of the image tokens unknown (pass grid_hw or FusedFrame); '
                    'using one row per image for mRoPE positions'
                )
                self._warned_grid = True
            grids = tuple(
                g if g is not None else (1, t.shape[0]) for g, t in zip(grids, tokens, strict=True)
            )
        input_ids = self.prompt_ids(instruction, [t.shape[0] for t in tokens])
        text = self._generate(input_ids, list(tokens), list(grids))
        action, valid = parse_action(text)
        return PolicyDecision(
            action=action, raw_text=text, valid=valid, latency_ms=(self._clock() - t0) * 1000.0
        )

    def prefill(
        self,
        input_ids: torch.Tensor,
        tokens: Sequence[torch.Tensor],
        grids: Sequence[tuple[int, int]],
    ):
        """Run the prompt once.

        Args:
            input_ids: ``[1, L]`` from `prompt_ids`.
            tokens: per image ``[N_i, D]``; grids: per image merged ``(h, w)``.
        Returns:
            ``(output, next_position)``: the model output (logits ``[1, 1, V]`` of the last prompt
            token, ``past_key_values``) and the mRoPE position of the first generated token.
        """
        from transformers import DynamicCache

        model = self.model
        embed = model.get_input_embeddings()
        device = embed.weight.device
        input_ids = input_ids.to(device)
        is_image = input_ids == self.image_token_id
        m = self.merge_size
        grid_thw = torch.tensor(
            [[1, h * m, w * m] for h, w in grids], dtype=torch.long, device=device
        )
        positions, _ = model.model.get_rope_index(
            input_ids, mm_token_type_ids=is_image.to(torch.int), image_grid_thw=grid_thw
        )  # [3, 1, L]
        embeds = embed(input_ids)
        feats = torch.cat([t.to(device, embeds.dtype) for t in tokens], dim=0)
        if feats.shape[-1] != embeds.shape[-1]:
            raise ValueError(
                f'image tokens have width {feats.shape[-1]}, the LLM expects {embeds.shape[-1]}'
            )
        if feats.shape[0] != int(is_image.sum()):
            raise ValueError(
                f'{feats.shape[0]} image tokens for {int(is_image.sum())} <|image_pad|> slots'
            )
        embeds[is_image] = feats
        cache = DynamicCache(config=model.config.get_text_config())
        out = model(
            inputs_embeds=embeds,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out, int(positions.max()) + 1

    def _generate(
        self, input_ids: torch.Tensor, tokens: list[torch.Tensor], grids: list[tuple[int, int]]
    ) -> str:
        """Greedy decoding with explicit 3D positions; returns the decoded new text."""
        out, next_pos = self.prefill(input_ids, tokens, grids)
        embed = self.model.get_input_embeddings()
        device = embed.weight.device
        new_ids: list[int] = []
        for step in range(self.max_new_tokens):
            token = int(out.logits[0, -1].argmax())
            if token in self.stop_ids:
                break
            new_ids.append(token)
            if step + 1 == self.max_new_tokens:
                break
            pos = torch.full((3, 1, 1), next_pos + step, dtype=torch.long, device=device)
            out = self.model(
                inputs_embeds=embed(torch.tensor([[token]], device=device)),
                position_ids=pos,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
        return self.tokenizer.decode(new_ids, skip_special_tokens=True)
