"""Preprocessing equals the released JanusVLN loader, level for level, on real Go2 camera frames.

The reference is written here from its definition (CHECKPOINTS.md §1.5: the vendored VGGT loader
with target_size 644 in "crop" mode): open the file with Pillow, convert to RGB, resize with
BICUBIC to 644 x round(h * 644 / w / 14) * 14, ToTensor (uint8 / 255), centre-crop a taller image
to 644. Ours gets the frame as the camera node does (OpenCV decode, BGR -> RGB array).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vln_stack.models.semantic import crop_for_qwen, preprocess_rgb


def _released_loader(path, target: int = 644) -> torch.Tensor:
    img = Image.open(path).convert('RGB')
    w, h = img.size
    new_h = round(h * (target / w) / 14) * 14
    img = img.resize((target, new_h), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous().float().div(255)
    if new_h > target:
        start = (new_h - target) // 2
        x = x[:, start : start + target, :]
    return x


def _camera_frame(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope='module')
def go2_frames(shared_data):
    frames = sorted((shared_data / 'internnav_go2_office_vln' / 'frames').glob('*.jpg'))
    assert len(frames) >= 100, 'the Go2 office frames are missing from the shared data'
    return frames


def test_preprocessing_equals_released_loader_on_real_frames(go2_frames):
    torch_resize_differs = 0
    for path in go2_frames:
        ref = _released_loader(path)
        rgb = _camera_frame(path)
        ours = preprocess_rgb(rgb, 644)
        assert ours.shape == ref.shape == (3, 490, 644), path.name
        assert ours.dtype == torch.float32
        # 0 levels: the same float32 values, bit for bit
        assert torch.equal(ours, ref), f'{path.name}: max diff {(ours - ref).abs().max() * 255}'
        assert torch.equal(crop_for_qwen(ours), ref[:, :476, :])
        # the resize this replaced (torch bicubic + antialias) is NOT the released one
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
        old = F.interpolate(x, size=(490, 644), mode='bicubic', antialias=True)
        old = old.round().clamp(0, 255)[0] / 255.0
        torch_resize_differs += int(not torch.equal(old, ref))
    assert torch_resize_differs > len(go2_frames) // 2


def test_tall_and_small_frames_follow_the_released_rules(go2_frames, tmp_path):
    rgb = _camera_frame(go2_frames[0])
    tall = np.ascontiguousarray(rgb.transpose(1, 0, 2))   # 480 wide x 640 high
    path = tmp_path / 'tall.png'
    Image.fromarray(tall).save(path)
    ours = preprocess_rgb(tall, 644)
    assert ours.shape == (3, 644, 644)                     # taller than 644: centre-cropped
    assert torch.equal(ours, _released_loader(path))
    small = cv2.resize(rgb, (224, 168), interpolation=cv2.INTER_AREA)
    Image.fromarray(small).save(tmp_path / 'small.png')
    assert torch.equal(preprocess_rgb(small, 518, patch_size=14),
                       _released_loader(tmp_path / 'small.png', 518))


def test_bad_frames_are_refused_with_a_reason():
    with pytest.raises(ValueError, match='uint8'):
        preprocess_rgb(np.zeros((48, 64, 3), np.float32), 644)
    with pytest.raises(ValueError, match='HxWx3'):
        preprocess_rgb(np.zeros((48, 64), np.uint8), 644)
    with pytest.raises(ValueError, match='row left'):
        preprocess_rgb(np.zeros((2, 640, 3), np.uint8), 644)
