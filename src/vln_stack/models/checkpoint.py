"""JanusVLN checkpoint folders: config.json settings, selective safetensors reads, strict loads.

A folder holds ``config.json`` (a ``qwen2_5_vl`` config, plus ``lam`` and optionally
``vggt_merger_hidden_dim`` and a ``vln_stack`` block), weights as ``model.safetensors`` or shards
with ``model.safetensors.index.json``, and tokenizer files. Released JanusVLN folders carry no
``vln_stack`` block: the defaults below are the released values (CHECKPOINTS.md §2.2, §2.4).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = [
    'JanusSettings',
    'check_folder',
    'load_exact',
    'read_config',
    'read_tensors',
    'strip_prefix',
    'visual_state',
]

VISUAL_PREFIXES = (
    'model.visual.',
    'visual.',
)  # transformers >= 4.52 runtime layout, legacy/saved layout


@dataclass(frozen=True)
class JanusSettings:
    """What the dual encoder needs from config.json.

    Attributes:
        vggt_preset: key of `VGGT_PRESETS` (released: ``vggt-1b``).
        input_width: preprocessing target width in px (released: 644).
        vggt_layer: aggregator layer fed to the merger; negative counts from the end
            (released: -2, i.e. 22).
        lam: fusion weight (released 0.2).
        merger_hidden_dim: merger MLP width (released 4096).
        llm_width: LLM hidden size D (7B: 3584).
        kv_initial_frames / kv_window_frames: VGGT memory bounds in frames (released 8 / 48).
    """

    vggt_preset: str = 'vggt-1b'
    input_width: int = 644
    vggt_layer: int = -2
    lam: float = 0.2
    merger_hidden_dim: int = 4096
    llm_width: int = 3584
    kv_initial_frames: int = 8
    kv_window_frames: int = 48

    @classmethod
    def from_config(cls, cfg: dict) -> JanusSettings:
        block = cfg.get('vln_stack') or {}
        text = cfg.get('text_config') or {}
        llm_width = int(text.get('hidden_size', cfg.get('hidden_size', cls.llm_width)))
        return cls(
            vggt_preset=str(block.get('vggt_preset', cls.vggt_preset)),
            input_width=int(block.get('input_width', cls.input_width)),
            vggt_layer=int(block.get('vggt_layer', cls.vggt_layer)),
            lam=float(cfg.get('lam', cls.lam)),
            merger_hidden_dim=int(cfg.get('vggt_merger_hidden_dim', cls.merger_hidden_dim)),
            llm_width=llm_width,
            kv_initial_frames=int(block.get('kv_initial_frames', cls.kv_initial_frames)),
            kv_window_frames=int(block.get('kv_window_frames', cls.kv_window_frames)),
        )


def check_folder(path: str | Path) -> Path:
    """``path`` as a Path if it is a folder with config.json; else FileNotFoundError naming it."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f'checkpoint folder not found: {folder}')
    if not (folder / 'config.json').is_file():
        raise FileNotFoundError(f'checkpoint folder has no config.json: {folder / "config.json"}')
    return folder


def read_config(folder: str | Path) -> dict:
    """The folder's config.json as a dict."""
    folder = check_folder(folder)
    return json.loads((folder / 'config.json').read_text())


def _weight_files(folder: Path) -> dict[str, list[str] | None]:
    """Map file name -> keys to read from it (None: all keys, filtered later)."""
    index = folder / 'model.safetensors.index.json'
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text())['weight_map']
        files: dict[str, list[str] | None] = {}
        for key, fname in weight_map.items():
            files.setdefault(fname, []).append(key)
        return files
    single = folder / 'model.safetensors'
    if single.is_file():
        return {single.name: None}
    raise FileNotFoundError(f'no model.safetensors or model.safetensors.index.json in {folder}')


def read_tensors(folder: str | Path, prefixes: Iterable[str]) -> dict[str, torch.Tensor]:
    """Read only the tensors whose key starts with one of ``prefixes`` (keys kept as they are)."""
    from safetensors import safe_open

    folder = check_folder(folder)
    prefixes = tuple(prefixes)
    out: dict[str, torch.Tensor] = {}
    for fname, keys in _weight_files(folder).items():
        if keys is not None and not any(k.startswith(prefixes) for k in keys):
            continue
        path = folder / fname
        if not path.is_file():
            raise FileNotFoundError(f'weight shard listed in the index is missing: {path}')
        with safe_open(str(path), framework='pt', device='cpu') as f:
            for key in f.keys():
                if key.startswith(prefixes):
                    out[key] = f.get_tensor(key)
    return out


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys starting with ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def visual_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Qwen vision-tower weights from ``model.visual.*`` or ``visual.*`` keys (prefix removed)."""
    for prefix in VISUAL_PREFIXES:
        sub = strip_prefix(state, prefix)
        if sub:
            return sub
    return {}


def load_exact(
    module: nn.Module, state: dict[str, torch.Tensor], *, what: str, source: Path | str
) -> None:
    """``load_state_dict`` that first checks keys and shapes, raising one readable ValueError.

    Values are copied into the module's existing parameters (keeping its dtype and device).
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f'{k}: checkpoint {list(state[k].shape)} vs model {list(expected[k].shape)}'
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = [f'{what} weights in {source} do not match the model']
        if missing:
            parts.append(f'{len(missing)} missing key(s), e.g. {missing[:5]}')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected key(s), e.g. {unexpected[:5]}')
        if wrong:
            parts.append(f'{len(wrong)} shape mismatch(es), e.g. {wrong[:3]}')
        raise ValueError('; '.join(parts))
    module.load_state_dict(state, strict=True)
