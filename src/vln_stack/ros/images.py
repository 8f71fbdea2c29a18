"""sensor_msgs Image / CompressedImage <-> numpy RGB arrays (no cv_bridge on PyPI)."""
from __future__ import annotations

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

_CHANNELS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1, '8UC3': 3, '8UC1': 1}


def rgb_to_image_msg(rgb: np.ndarray, stamp: Time, frame_id: str) -> Image:
    """HxWx3 uint8 RGB -> sensor_msgs/Image (rgb8)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'expected HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}')
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = 'rgb8'
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) -> HxWx3 uint8 RGB.

    Raises ValueError with the reason for malformed images (unknown encoding, short buffer,
    zero size), so the caller can drop the frame and log it.
    """
    enc = msg.encoding
    if enc not in _CHANNELS:
        raise ValueError(f'unsupported image encoding {enc!r} (supported: {sorted(_CHANNELS)})')
    ch = _CHANNELS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ValueError(f'empty image {w}x{h}')
    if step < w * ch:
        raise ValueError(f'step {step} < width*channels {w * ch}')
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if buf.size < step * h:
        raise ValueError(f'image data has {buf.size} bytes, expected {step * h} ({w}x{h} {enc})')
    arr = buf[: step * h].reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    if enc in ('rgb8', '8UC3'):
        return arr.copy()
    if enc == 'bgr8':
        return arr[:, :, ::-1].copy()
    if enc == 'rgba8':
        return arr[:, :, :3].copy()
    if enc == 'bgra8':
        return arr[:, :, 2::-1].copy()
    return np.repeat(arr, 3, axis=2)


def compressed_msg_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> HxWx3 uint8 RGB; ValueError if undecodable."""
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if buf.size == 0:
        raise ValueError('compressed image has no data')
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f'could not decode compressed image (format {msg.format!r}, {buf.size} bytes)')
    return bgr[:, :, ::-1].copy()


def rgb_to_compressed_msg(rgb: np.ndarray, stamp: Time, frame_id: str, *,
                          quality: int = 80) -> CompressedImage:
    """HxWx3 uint8 RGB -> JPEG sensor_msgs/CompressedImage."""
    ok, enc = cv2.imencode('.jpg', rgb[:, :, ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError('JPEG encoding failed')
    msg = CompressedImage()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = 'jpeg'
    msg.data = enc.tobytes()
    return msg


def tokens_to_image_msg(tokens: np.ndarray, header) -> Image:
    """[N, D] float array (fused tokens) -> sensor_msgs/Image 32FC1, rows = tokens."""
    arr = np.ascontiguousarray(np.asarray(tokens, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f'expected [N, D] tokens, got shape {arr.shape}')
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = '32FC1'
    msg.is_bigendian = 0
    msg.step = msg.width * 4
    msg.data = arr.tobytes()
    return msg


def check_tokens_msg(msg: Image) -> None:
    """Raise ValueError unless ``msg`` is a well-formed 32FC1 token image (cheap, no copy)."""
    if msg.encoding != '32FC1' or msg.height * msg.width * 4 != len(msg.data) or not msg.height:
        raise ValueError(f'malformed fused tokens ({msg.encoding}, {msg.height}x{msg.width}, '
                         f'{len(msg.data)} bytes)')


def image_msg_to_tokens(msg: Image) -> np.ndarray:
    """sensor_msgs/Image 32FC1 -> writable [N, D] float32 array."""
    check_tokens_msg(msg)
    return np.frombuffer(bytes(msg.data), dtype=np.float32).reshape(msg.height, msg.width).copy()


def depth_to_image_msg(depth_m: np.ndarray, stamp: Time, frame_id: str) -> Image:
    """HxW float depth in metres -> sensor_msgs/Image 32FC1 (REP-118: no return = inf/NaN)."""
    arr = np.ascontiguousarray(np.asarray(depth_m, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f'expected an HxW depth image, got shape {arr.shape}')
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = '32FC1'
    msg.is_bigendian = 0
    msg.step = msg.width * 4
    msg.data = arr.tobytes()
    return msg


def depth_msg_to_metres(msg: Image) -> np.ndarray:
    """sensor_msgs/Image depth (32FC1 metres or 16UC1 millimetres) -> HxW float32 metres.

    16UC1 zeros (no return) become NaN. Raises ValueError for other encodings or short buffers.
    """
    enc = msg.encoding.upper()
    dtypes = {'32FC1': np.dtype('<f4'), '16UC1': np.dtype('<u2'), 'MONO16': np.dtype('<u2')}
    if enc not in dtypes:
        raise ValueError(f'unsupported depth encoding {msg.encoding!r} (32FC1 or 16UC1)')
    dt = dtypes[enc].newbyteorder('>') if msg.is_bigendian else dtypes[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0 or step < w * dt.itemsize:
        raise ValueError(f'bad depth image geometry {w}x{h}, step {step}')
    buf = bytes(msg.data)
    if len(buf) < step * h:
        raise ValueError(f'depth image has {len(buf)} bytes, expected {step * h}')
    rows = np.frombuffer(buf, dtype=np.uint8, count=step * h).reshape(h, step)[:, :w * dt.itemsize]
    arr = np.ascontiguousarray(rows).view(dt).reshape(h, w)
    if dt.kind == 'u':
        out = arr.astype(np.float32) * 0.001
        out[arr == 0] = np.nan
        return out
    return arr.astype(np.float32)
