"""Tiny JanusVLN checkpoint folders for graph tests: random weights, or an LLM that always answers
one action word (the bigram answer forcer of test_models_encoder_policy, written back to disk)."""
from __future__ import annotations

import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file


def forced_checkpoint(src: Path, dst: Path, answer: str) -> Path:
    """Copy the tiny checkpoint ``src`` to ``dst`` with LLM weights that answer ``answer``."""
    from test_models_encoder_policy import _force_answer

    from vln_stack.models.llm_policy import JanusPolicy

    shutil.copytree(src, dst)
    policy = JanusPolicy.from_folder(dst)
    _force_answer(policy, answer)
    path = dst / 'model.safetensors'
    tensors = load_file(str(path))
    changed = 0
    for key, value in policy.model.state_dict().items():
        legacy = key.replace('model.language_model.', 'model.', 1)
        name = legacy if legacy in tensors else key
        if name in tensors:
            tensors[name] = value.detach().clone().contiguous()
            changed += 1
    assert changed > 10, 'the tiny checkpoint layout changed: no LLM key was written back'
    save_file(tensors, str(path), metadata={'format': 'pt'})
    return dst
