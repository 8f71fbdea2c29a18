"""Where the package's data folders are, for code at every layer (core imports nothing above)."""
from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
"""The source checkout's root (meaningful in a checkout or an editable install)."""


def config_dir() -> Path:
    """The config/ folder: the repository's, else the installed share/vln_stack/config."""
    candidates = [REPO_ROOT / 'config', Path(sys.prefix) / 'share' / 'vln_stack' / 'config']
    for cand in candidates:
        if (cand / 'params.yaml').is_file():
            return cand
    raise FileNotFoundError(f'config folder with params.yaml not found in {candidates}')
