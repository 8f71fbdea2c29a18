"""Write a JanusVLN-style checkpoint folder at the tiny preset (random weights, local tokenizer).

Layout (same as a released JanusVLN folder, at toy sizes):

* ``config.json``: a ``qwen2_5_vl`` config plus ``lam``, ``vggt_merger_hidden_dim`` and a
  ``vln_stack`` block (``vggt_preset``, ``input_width``, ``vggt_layer``, memory bounds);
* ``model.safetensors``: the Qwen keys exactly as ``save_pretrained`` writes them in transformers
  5.23 (``visual.*``, ``model.*``, ``lm_head.*``), plus ``vggt.aggregator.*`` and ``merger.*``;
* ``generation_config.json``, ``tokenizer.json``, ``tokenizer_config.json``: a byte-level BPE
  trained here on an embedded corpus, with the Qwen special tokens registered.

CLI: ``python -m vln_stack.models.tiny_checkpoint --out models/tiny-janus [--seed 0]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .fusion import SpatialMerger
from .llm_policy import CONTEXT_TEMPLATE, SYSTEM_PROMPT
from .presets import TINY_SETTINGS, TINY_TEXT, TINY_VISION, build_qwen_config
from .vggt import VGGT_PRESETS, VGGTAggregator

__all__ = ['QWEN_SPECIAL_TOKENS', 'build_tiny_tokenizer', 'main', 'make_tiny_checkpoint']

QWEN_SPECIAL_TOKENS = (
    '<|endoftext|>',
    '<|im_start|>',
    '<|im_end|>',
    '<|vision_start|>',
    '<|vision_end|>',
    '<|vision_pad|>',
    '<|image_pad|>',
    '<|video_pad|>',
)

_INSTRUCTIONS = (
    'Walk past the sofa and stop at the kitchen door.',
    'Turn left at the hallway, go forward to the bedroom and wait near the bed.',
    'Exit the room, turn right and stop in front of the stairs.',
    'Go straight through the living room and stop next to the table.',
    'Move forward to the red chair, then turn around and stop by the window.',
)


def _corpus() -> list[str]:
    """Text the tiny BPE is trained on: prompt strings, action words, a few instructions."""
    lines = [SYSTEM_PROMPT, 'You are a helpful assistant.']
    lines += [CONTEXT_TEMPLATE.format(instruction=text) for text in _INSTRUCTIONS]
    lines += ['MOVE_FORWARD', 'TURN_LEFT', 'TURN_RIGHT', 'STOP'] * 8
    return lines * 4


def build_tiny_tokenizer(vocab_size: int = 512):
    """Byte-level BPE (`tokenizers`) as a transformers fast tokenizer; eos = ``<|im_end|>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token='<|im_end|>',
        pad_token='<|endoftext|>',
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
    )


def _qwen_config(ids: dict[str, int], vocab: int):
    """The tiny ``qwen2_5_vl`` config (TINY_TEXT / TINY_VISION, the tokenizer's special ids) with
    the ``lam``, ``vggt_merger_hidden_dim`` and ``vln_stack`` entries of the JanusVLN folder."""
    settings = TINY_SETTINGS
    text = dict(
        TINY_TEXT,
        vocab_size=vocab,
        bos_token_id=ids['<|endoftext|>'],
        eos_token_id=ids['<|im_end|>'],
        pad_token_id=ids['<|endoftext|>'],
    )
    extra = {
        'lam': settings.lam,
        'vggt_merger_hidden_dim': settings.merger_hidden_dim,
        'vln_stack': {
            'vggt_preset': settings.vggt_preset,
            'input_width': settings.input_width,
            'vggt_layer': settings.vggt_layer,
            'kv_initial_frames': settings.kv_initial_frames,
            'kv_window_frames': settings.kv_window_frames,
        },
    }
    config = build_qwen_config(
        text,
        TINY_VISION,
        image_token_id=ids['<|image_pad|>'],
        video_token_id=ids['<|video_pad|>'],
        vision_start_token_id=ids['<|vision_start|>'],
        vision_end_token_id=ids['<|vision_end|>'],
        extra=extra,
    )
    config.architectures = ['Qwen2_5_VLForConditionalGeneration']
    return config


def _save_qwen(folder: Path, config, ids: dict[str, int], seed: int) -> None:
    """The Qwen model with random weights (seed ``seed``), saved to ``folder`` with its ids."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        qwen = Qwen2_5_VLForConditionalGeneration(config).eval()
    qwen.generation_config.eos_token_id = ids['<|im_end|>']
    qwen.generation_config.pad_token_id = ids['<|endoftext|>']
    qwen.generation_config.bos_token_id = ids['<|endoftext|>']
    qwen.save_pretrained(folder)  # config.json, generation_config.json, model.safetensors


def _add_vggt_and_merger(folder: Path, seed: int) -> None:
    """Add random ``vggt.aggregator.*`` (seed + 1) and ``merger.*`` (seed + 2) tensors to the
    folder's ``model.safetensors``."""
    from safetensors.torch import load_file, save_file

    settings = TINY_SETTINGS
    vcfg = VGGT_PRESETS[settings.vggt_preset]
    aggregator = VGGTAggregator(vcfg).init_random(seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        merger = SpatialMerger(2 * vcfg.embed_dim, settings.merger_hidden_dim, settings.llm_width)
    weights = folder / 'model.safetensors'
    state = load_file(str(weights))
    state.update(
        {f'vggt.aggregator.{k}': v.contiguous() for k, v in aggregator.state_dict().items()}
    )
    state.update({f'merger.{k}': v.contiguous() for k, v in merger.state_dict().items()})
    save_file(state, str(weights), metadata={'format': 'pt'})
    index = folder / 'model.safetensors.index.json'
    if index.exists():  # a leftover from an earlier sharded save would shadow the single file
        index.unlink()


def make_tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """Write the tiny JanusVLN folder (overwrites its files) and return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in QWEN_SPECIAL_TOKENS}
    vocab = (len(tokenizer) + 63) // 64 * 64
    _save_qwen(folder, _qwen_config(ids, vocab), ids, seed)
    _add_vggt_and_merger(folder, seed)
    tokenizer.save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description='Write a tiny random-weight JanusVLN checkpoint folder.'
    )
    parser.add_argument(
        '--out', type=Path, default=Path('models/tiny-janus'), help='output folder'
    )
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    folder = make_tiny_checkpoint(args.out, seed=args.seed)
    print(f'wrote tiny JanusVLN checkpoint to {folder.resolve()}')
    for path in sorted(folder.iterdir()):
        if path.is_file():
            print(f'  {path.name:28s} {path.stat().st_size:>10d} bytes')
    with open(folder / 'config.json') as f:
        cfg = json.load(f)
    print(f'  vln_stack: {cfg.get("vln_stack")}  lam: {cfg.get("lam")}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
