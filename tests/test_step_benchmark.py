"""tools.bench.step: every row at tiny size on the CPU; the real-size stack builds right."""
from __future__ import annotations

import json

import torch

from vln_stack.tools.bench import step as sb

ROWS = ('qwen vision step', 'llm prefill (released 9 images)', 'llm decode (per token)')
PER_F = ('vggt step (1 frame vs F)', 'decision step (encode + released)',
         'streaming step (append + query + answer)')


def test_tiny_cpu_prints_every_row(capsys, tmp_path):
    out = tmp_path / 'steps.json'
    args = ['--preset', 'tiny', '--device', 'cpu', '--repeats', '2', '--frames', '2', '3',
            '--threads', '1', '--json', str(out)]
    assert sb.main(args) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    for metric in ROWS:
        assert sum(ln.strip().startswith(metric) for ln in lines) == 1, metric
    for metric in PER_F:
        frames = [ln.split()[-4] for ln in lines if ln.strip().startswith(metric)]
        assert frames == ['2', '3'], (metric, frames)
    assert 'not a GPU run' in text and 'peak RSS' in text
    result = json.loads(out.read_text())
    rows = result['rows']
    assert len(rows) == len(ROWS) + 2 * len(PER_F)
    assert all(r['samples'] >= 2 and 0 < r['p50_ms'] <= r['p95_ms'] for r in rows)
    # the released prompt: 9 image blocks of (6x8 merged tokens + 2) plus the text
    assert result['meta']['merged_grid'] == [6, 8]
    assert result['meta']['prompt_tokens'] > 9 * 50


def test_real_size_stack_builds_in_the_released_layout():
    """The random-weight real-size path, on the meta device (no memory): bf16, no LLM vision
    tower, the 7B image-token ids with the stand-in tokenizer, counts as the memory budget's."""
    from vln_stack.tools.bench.stack_shape import shape_from_preset

    enc, policy, note = sb.build_stack(sb.StepConfig(), torch.device('meta'), torch.bfloat16,
                                       'sdpa')
    shape = shape_from_preset('janusvln-7b')
    model = policy.model
    assert model.model.visual is None and 'tiny BPE' in note
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert sum(p.numel() for p in model.parameters()) == \
        shape.llm_text_params + shape.lm_head_params
    assert sum(p.numel() for p in enc.aggregator.parameters()) == shape.aggregator_params
    assert sum(p.numel() for p in enc.semantic.parameters()) == shape.vision_params
    assert {p.dtype for p in enc.aggregator.parameters()} == {torch.bfloat16}
    assert (policy.image_token_id, policy._vision) == (151655, [151652, 151653])
    ids = policy.prompt_ids('go to the kitchen', [391] * 9)
    assert int((ids == 151655).sum()) == 9 * 391 and int(ids.max()) < 152064
