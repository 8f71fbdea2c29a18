"""Where and how the models run: dtype choice and readable model errors (ROS-free).

- `resolve_dtype`: ``auto`` is bfloat16 on CUDA (how JanusVLN runs: weights in bf16) and float32
  elsewhere; an explicit ``float32 | bfloat16 | float16 | float64`` is taken as is.
- `describe_model_error`: one log line for an exception raised inside a model worker, saying what
  happened and what to do. An out-of-memory error names the memory that was asked for and, on
  CUDA, what the device holds.
"""

from __future__ import annotations

import re

import torch

__all__ = ['DTYPES', 'describe_model_error', 'is_out_of_memory', 'resolve_dtype']

DTYPES = {
    'float32': torch.float32,
    'bfloat16': torch.bfloat16,
    'float16': torch.float16,
    'float64': torch.float64,
}


def resolve_dtype(name: str, device: str | torch.device = 'cpu') -> torch.dtype:
    """``name`` (``auto`` or a key of `DTYPES`) as a torch dtype for ``device``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name == 'auto':
        return torch.bfloat16 if torch.device(device).type == 'cuda' else torch.float32
    if name not in DTYPES:
        raise ValueError(f'dtype must be auto or one of {sorted(DTYPES)}, got {name!r}')
    return DTYPES[name]


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's CUDA out-of-memory error and the CPU allocator's equivalent."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return 'out of memory' in text.lower() or "can't allocate memory" in text


_TRIED = re.compile(r'(?:Tried to allocate|tried to allocate)\s+([0-9.]+\s*[KMGT]?i?B|[0-9]+ bytes)')


def _asked_for(text: str) -> str:
    match = _TRIED.search(text)
    if not match:
        return 'an unknown amount'
    amount = match.group(1)
    if amount.endswith(' bytes'):
        return f'{int(amount.split()[0]) / 2**30:.2f} GiB'
    return amount


def _device_memory(device: torch.device) -> str:
    if device.type != 'cuda' or not torch.cuda.is_available():
        return ''
    index = device.index if device.index is not None else torch.cuda.current_device()
    total = torch.cuda.get_device_properties(index).total_memory
    return (f'; {device} holds {torch.cuda.memory_allocated(index) / 2**30:.2f} GiB allocated, '
            f'{torch.cuda.memory_reserved(index) / 2**30:.2f} GiB reserved of '
            f'{total / 2**30:.2f} GiB')


def describe_model_error(exc: BaseException, *, what: str, device: str | torch.device = 'cpu',
                         todo: str = '') -> str:
    """A log line for ``exc`` raised while ``what`` ran: the error, then what to do."""
    dev = torch.device(device)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
    if is_out_of_memory(exc):
        return (f'{what} ran out of memory on {dev}: it asked for {_asked_for(str(exc))}'
                f'{_device_memory(dev)} ({type(exc).__name__}). To do: run '
                '`python -m vln_stack.tools.bench.memory_budget` for this checkpoint, then use '
                'dtype bfloat16, fewer memory frames, or a larger GPU'
                + (f'; {todo}' if todo else ''))
    return (f'{what} failed: {type(exc).__name__}: {first[:300]}. To do: '
            + (todo or 'check the log above, then reconfigure the node'))
