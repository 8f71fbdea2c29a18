"""camera_ingest integration: real node processes on an isolated ROS domain, fed real recordings.

(a) the Go2 VLN rosbag2 through bag_play -> camera_ingest (CompressedImage in, 320x240 out at 1 Hz)
(b) the D435 .bag through the realsense source (pyrealsense2 playback)
(c) malformed Image / CompressedImage frames are dropped, the next good frame goes through
(d) the opencv source on a video file written here
(e) bag_play itself on sqlite3 storage (real Go2 frames copied byte for byte) with /clock
"""
from __future__ import annotations

import hashlib

import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from vln_stack.camera.ingest import FramePreprocessor, scale_camera_intrinsics
from vln_stack.camera.sources import SourceUnavailableError, import_pyrealsense2, make_source
from vln_stack.tools.runner.procs import NodeSpec

GO2 = 'internnav_go2_office_vln'
GO2_T0 = 1760659200
K_GO2 = np.array([[386.5, 0.0, 328.9], [0.0, 386.5, 244.0], [0.0, 0.0, 1.0]])
NODE = 'vln_stack.nodes.camera_node'


# --- helpers -------------------------------------------------------------------------------------
def collect(node, msg_type, topic: str, *, best_effort: bool = False) -> list:
    """Subscribe ``topic`` on the test's node; returns the list the messages are appended to."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    qos = QoSProfile(depth=50, reliability=(ReliabilityPolicy.BEST_EFFORT if best_effort
                                            else ReliabilityPolicy.RELIABLE))
    out: list = []
    node.create_subscription(msg_type, topic, out.append, qos)
    return out


def spin_until(node, pred, timeout_s: float, procs=None) -> bool:
    """Spin the test node until ``pred()`` or the timeout; fail fast if a node process died."""
    import rclpy

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
        if pred():
            return True
        if procs is not None:
            dead = {n: rc for n, rc in procs.dead().items() if not n.startswith('bag_play')}
            assert not dead, f'node process exited: {dead}; logs: {_logs(procs)}'
    return pred()


def _logs(procs) -> str:
    if procs.log_dir is None:
        return ''
    return '\n'.join(f'--- {p.name}\n{p.read_text()[-3000:]}' for p in procs.log_dir.glob('*.log'))


def start_cli(procs, name: str, argv: list[str]) -> subprocess.Popen:
    """Start a plain CLI (not a NodeSpec node) in the ProcessGroup so it is stopped with it."""
    procs.log_dir.mkdir(parents=True, exist_ok=True)
    log = open(procs.log_dir / f'{name}.log', 'w')  # noqa: SIM115 - closed by ProcessGroup
    procs._logs.append(log)
    proc = subprocess.Popen([sys.executable, *argv], env=procs.env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    procs.procs[name] = proc
    return proc


def diag_values(arrays: list, node_name: str) -> dict[str, str]:
    """Key/values of the newest DiagnosticStatus of ``node_name``."""
    for arr in reversed(arrays):
        for st in arr.status:
            if st.name.startswith(node_name):
                return {kv.key: kv.value for kv in st.values} | {'_level': st.level,
                                                               '_message': st.message}
    return {}


def stamp_s(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def as_rgb(msg) -> np.ndarray:
    assert msg.encoding == 'rgb8' and msg.step == msg.width * 3
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)


def require_pyrealsense2() -> None:
    try:
        import_pyrealsense2()
    except SourceUnavailableError as exc:
        pytest.fail(f'RealSense test cannot run: {exc}')


# --- (a) real Go2 bag through bag_play -----------------------------------------------------------
def test_go2_bag_through_bag_play(procs, rclpy_node, shared_data, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    images = collect(rclpy_node, Image, '/vln/image')
    infos = collect(rclpy_node, CameraInfo, '/vln/camera_info')
    jpegs = collect(rclpy_node, CompressedImage, '/vln/image/compressed')
    diags = collect(rclpy_node, DiagnosticArray, '/diagnostics')
    procs.start(NodeSpec(NODE, 'camera_ingest', params={
        'source': 'topic', 'input_compressed': True, 'width': 320, 'height': 240,
        'max_rate_hz': 1.0, 'publish_compressed': True, 'jpeg_quality': 85, 'qos_depth': 10},
        remaps={'camera/camera_info': '/camera/color/camera_info'}))
    # our subscriptions must be matched before the first frame, bag_play waits for the node's
    assert spin_until(rclpy_node, lambda: rclpy_node.count_publishers('/vln/image') > 0
                      and rclpy_node.count_publishers('/vln/camera_info') > 0, 20.0, procs)
    bag = shared_data / GO2 / 'rosbag2_mcap'
    player = start_cli(procs, 'bag_play', [
        '-m', 'vln_stack.tools.bags.play', str(bag), '--rate', '10',
        '--topics', '/camera/color/image_raw/compressed', '/camera/color/camera_info',
        '--remap', '/camera/color/image_raw/compressed:=/camera/image_raw/compressed',
        '--wait-subscribers', '15', '--duration', '30'])
    assert spin_until(rclpy_node, lambda: player.poll() is not None, 30.0, procs), _logs(procs)
    assert player.returncode == 0, _logs(procs)
    spin_until(rclpy_node, lambda: False, 1.5, procs)  # last frames + one diagnostics message
    play_log = (procs.log_dir / 'bag_play.log').read_text()
    assert 'done (end): 270 msgs' in play_log, play_log

    # resized frames, right size and encoding, original header stamps on the 0.5 s bag grid
    assert 60 <= len(images) <= 68, \
        f'{len(images)} frames; {diag_values(diags, "camera_ingest")}; {_logs(procs)}'
    idx = []
    for msg in images:
        assert (msg.width, msg.height, msg.encoding) == (320, 240, 'rgb8')
        assert msg.step == 960 and len(msg.data) == 320 * 240 * 3
        assert msg.header.frame_id == 'camera_color_optical_frame'
        k = (stamp_s(msg) - GO2_T0) / 0.5
        assert abs(k - round(k)) < 1e-6 and 0 <= round(k) < 135
        idx.append(round(k))
    # max 1 Hz on bag stamps (2 Hz input): every other frame, never closer than 1 s
    gaps = np.diff(idx) * 0.5
    assert gaps.min() >= 1.0 - 1e-9 and np.median(gaps) == 1.0
    # pixel content: the recorded JPEG, resized
    pre = FramePreprocessor(320, 240)
    for msg, i in list(zip(images, idx))[::10]:
        bgr = cv2.imread(str(shared_data / GO2 / 'frames' / f'debug_raw_{i:04d}.jpg'))
        ref = pre(bgr[:, :, ::-1].copy()).astype(int)
        assert np.abs(as_rgb(msg).astype(int) - ref).mean() < 1.0
    # JPEG copies for a tethered link decode to the same size
    assert len(jpegs) >= len(images) - 2
    assert cv2.imdecode(np.frombuffer(bytes(jpegs[-1].data), np.uint8), 1).shape == (240, 320, 3)

    # scaled intrinsics, one per output frame with the frame's header
    assert len(infos) >= len(images) - 2
    img_stamps = {stamp_s(m) for m in images}
    k_ref = scale_camera_intrinsics(K_GO2, (640, 480), (320, 240))
    for info in infos:
        assert (info.width, info.height) == (320, 240) and stamp_s(info) in img_stamps
        assert np.allclose(np.reshape(info.k, (3, 3)), k_ref)
        assert np.allclose(np.reshape(info.p, (3, 4))[:, :3], k_ref)
    assert np.reshape(infos[0].k, (3, 3))[0, 0] == pytest.approx(193.25)

    d = diag_values(diags, 'camera_ingest')
    assert d, 'no diagnostics'
    assert int(d['frames_in']) >= 130 and int(d['frames_out']) == len(images)
    assert int(d['dropped_rate_limit']) == int(d['frames_in']) - len(images)
    assert int(d['dropped_malformed']) == 0
    print(f"\n[go2 bag] in={d['frames_in']} out={d['frames_out']} "
          f"dropped_rate={d['dropped_rate_limit']} proc_ms mean={d['proc_ms_mean']} "
          f"max={d['proc_ms_max']}")


# --- (b) real D435 recording through the realsense source ----------------------------------------
def test_realsense_bag_source(procs, rclpy_node, shared_data):
    require_pyrealsense2()
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image

    bag = shared_data / 'realsense_d435_lerobot' / 'test_rs.bag'
    images = collect(rclpy_node, Image, '/vln/image')
    infos = collect(rclpy_node, CameraInfo, '/vln/camera_info')
    diags = collect(rclpy_node, DiagnosticArray, '/diagnostics')
    procs.start(NodeSpec(NODE, 'camera_ingest', params={
        'source': 'realsense', 'realsense_file': str(bag), 'loop_file': True,
        'width': 320, 'height': 240}))
    # the five recorded colour frames, resized here for comparison
    pre = FramePreprocessor(320, 240)
    with make_source('realsense', file=str(bag), loop=False, real_time=False) as src:
        refs = [pre(item[0]).astype(int) for item in (src.read(2.0) for _ in range(5)) if item]
    assert len(refs) == 5
    t_start = time.time()
    assert spin_until(rclpy_node, lambda: len(images) >= 12 and len(diags) >= 2, 20.0, procs), \
        _logs(procs)
    for msg in images:
        assert (msg.width, msg.height, msg.encoding) == (320, 240, 'rgb8')
        assert msg.header.frame_id == 'camera_color_optical_frame'
        assert t_start - 20.0 < stamp_s(msg) < time.time() + 1.0  # node clock, not 2025 bag time
        diff = min(np.abs(as_rgb(msg).astype(int) - ref).mean() for ref in refs)
        assert diff < 1.0
    assert all(b > a for a, b in zip(map(stamp_s, images), map(stamp_s, images[1:])))
    assert infos, 'no camera_info from the device intrinsics'
    k = np.reshape(infos[-1].k, (3, 3))
    assert np.allclose(k, scale_camera_intrinsics(
        np.array([[604.213, 0, 322.689], [0, 603.474, 252.728], [0, 0, 1]]), (640, 480),
        (320, 240)), atol=0.01)
    d = diag_values(diags, 'camera_ingest')
    assert float(d['output_rate_hz']) > 5.0  # recorded at 30 fps, played back in real time
    print(f"\n[realsense bag] in={d['frames_in']} out={d['frames_out']} "
          f"rate={d['output_rate_hz']} Hz proc_ms mean={d['proc_ms_mean']}")


# --- (c) malformed frames are dropped, the node keeps going --------------------------------------
def test_malformed_frames_dropped(procs, rclpy_node, shared_data):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CompressedImage, Image

    procs.start(NodeSpec(NODE, 'camera_raw', namespace='/raw', params={'width': 32, 'height': 24}))
    procs.start(NodeSpec(NODE, 'camera_jpg', namespace='/jpg',
                         params={'input_compressed': True, 'width': 64, 'height': 48}))
    raw_out = collect(rclpy_node, Image, '/raw/vln/image')
    jpg_out = collect(rclpy_node, Image, '/jpg/vln/image')
    raw_diag = collect(rclpy_node, DiagnosticArray, '/raw/diagnostics')
    jpg_diag = collect(rclpy_node, DiagnosticArray, '/jpg/diagnostics')
    pub_raw = rclpy_node.create_publisher(Image, '/raw/camera/image_raw', QoSProfile(depth=20))
    pub_jpg = rclpy_node.create_publisher(CompressedImage, '/jpg/camera/image_raw/compressed',
                                          QoSProfile(depth=20))
    assert spin_until(rclpy_node, lambda: pub_raw.get_subscription_count() > 0
                      and pub_jpg.get_subscription_count() > 0, 20.0, procs), _logs(procs)

    def image(sec: int, *, encoding='rgb8', step=192, size=None, width=64) -> Image:
        msg = Image(encoding=encoding, width=width, height=48, step=step)
        msg.header.stamp.sec, msg.header.frame_id = sec, 'cam'
        msg.data = bytes(np.full(size if size is not None else step * 48, 77, np.uint8))
        return msg

    jpeg = (shared_data / GO2 / 'frames' / 'debug_raw_0042.jpg').read_bytes()

    def compressed(sec: int, data: bytes) -> CompressedImage:
        msg = CompressedImage(format='jpeg', data=data)
        msg.header.stamp.sec = sec
        return msg

    # 1) warm up until good frames make the round trip: both directions are matched
    for sec in range(1, 40):
        pub_raw.publish(image(sec))
        pub_jpg.publish(compressed(sec, jpeg))
        if spin_until(rclpy_node, lambda: raw_out and jpg_out, 0.25, procs):
            break
    assert raw_out and jpg_out, _logs(procs)
    n_raw, n_jpg = len(raw_out), len(jpg_out)
    # 2) malformed frames, then 3) one good frame each
    for bad in (image(100, step=100), image(101, size=1000), image(102, encoding='yuv422_yuy2'),
                image(103, width=0, step=0, size=0)):
        pub_raw.publish(bad)
    pub_jpg.publish(compressed(100, b'\xff\xd8 this is not a jpeg'))
    pub_jpg.publish(compressed(101, jpeg[: len(jpeg) // 50]))
    pub_raw.publish(image(110))
    pub_jpg.publish(compressed(110, jpeg))
    assert spin_until(rclpy_node, lambda: any(m.header.stamp.sec == 110 for m in raw_out)
                      and any(m.header.stamp.sec == 110 for m in jpg_out), 5.0, procs), \
        _logs(procs)
    # only the good frames came out, with their own stamps
    assert all(m.header.stamp.sec < 100 or m.header.stamp.sec == 110
               for m in raw_out[n_raw:] + jpg_out[n_jpg:])
    assert (raw_out[-1].width, raw_out[-1].height) == (32, 24)
    assert np.all(as_rgb(raw_out[-1]) == 77)
    assert (jpg_out[-1].width, jpg_out[-1].height) == (64, 48)

    def reported() -> bool:
        d_r, d_j = diag_values(raw_diag, 'camera_raw'), diag_values(jpg_diag, 'camera_jpg')
        return (int(d_r.get('dropped_malformed', 0)) >= 4 and int(d_j.get('dropped_malformed', 0))
                >= 2 and int(d_r['frames_out']) > n_raw and int(d_j['frames_out']) > n_jpg)

    assert spin_until(rclpy_node, reported, 5.0, procs), (raw_diag[-1:], jpg_diag[-1:])
    d_raw, d_jpg = diag_values(raw_diag, 'camera_raw'), diag_values(jpg_diag, 'camera_jpg')
    assert int(d_raw['dropped_malformed']) == 4 and int(d_raw['frames_out']) >= n_raw + 1
    assert int(d_jpg['dropped_malformed']) == 2 and int(d_jpg['frames_out']) >= n_jpg + 1
    levels = [st.level for arr in raw_diag for st in arr.status]
    assert DiagnosticStatus.WARN in levels  # WARN while malformed frames come in
    assert 'empty image' in d_raw['last_drop_reason']
    assert not procs.dead()
    logs = _logs(procs)
    assert 'dropped malformed frame' in logs
    assert 'step 100 < width*channels 192' in logs  # the warning says what was wrong
    assert 'could not decode compressed image' in logs


# --- (d) opencv source on a video file -----------------------------------------------------------
def test_opencv_video_file_source(procs, rclpy_node, tmp_path):
    from sensor_msgs.msg import CameraInfo, Image

    path = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 20.0, (160, 120))
    levels = [10 + 8 * i for i in range(30)]
    for lv in levels:
        frame = np.zeros((120, 160, 3), np.uint8)
        frame[:, :, 2] = lv    # red (BGR)
        frame[:, :, 1] = 200   # green
        writer.write(frame)
    writer.release()
    images = collect(rclpy_node, Image, '/vln/image')
    infos = collect(rclpy_node, CameraInfo, '/vln/camera_info')
    procs.start(NodeSpec(NODE, 'camera_ingest', params={
        'source': 'opencv', 'opencv_uri': str(path), 'loop_file': True, 'width': 80,
        'height': 60, 'max_rate_hz': 10.0, 'frame_id': 'test_cam'}))
    assert spin_until(rclpy_node, lambda: len(images) >= 25, 15.0, procs), _logs(procs)
    stamps = np.array([stamp_s(m) for m in images])
    for msg in images:
        assert (msg.width, msg.height, msg.encoding) == (80, 60, 'rgb8')
        assert msg.header.frame_id == 'test_cam'
        rgb = as_rgb(msg).astype(float)
        assert abs(rgb[:, :, 1].mean() - 200) < 4
        assert min(abs(rgb[:, :, 0].mean() - lv) for lv in levels) < 4
    assert abs(stamps[-1] - time.time()) < 5.0  # stamped with the node clock
    gaps = np.diff(stamps)
    # 20 fps file paced in real time, capped at 10 Hz: every other frame
    assert 0.08 < np.median(gaps) < 0.12 and gaps.min() > 0.04
    assert (len(stamps) - 1) / (stamps[-1] - stamps[0]) < 10.5
    assert not infos  # a plain video file has no intrinsics


# --- bag_play on sqlite3 storage, with /clock ----------------------------------------------------
def test_bag_play_sqlite3_and_clock(procs, rclpy_node, shared_data, tmp_path):
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CompressedImage

    # the first 10 real Go2 frames, copied byte for byte into a sqlite3 rosbag2
    src_topic = '/camera/color/image_raw/compressed'
    raws: list[bytes] = []
    with Reader(shared_data / GO2 / 'rosbag2_mcap') as reader, \
            Writer(tmp_path / 'go2_sqlite', version=9,
                   storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn_in = next(c for c in reader.connections if c.topic == src_topic)
        conn_out = writer.add_connection(src_topic, conn_in.msgtype,
                                         msgdef=conn_in.msgdef.data, rihs01=conn_in.digest)
        for _, t_ns, raw in reader.messages(connections=[conn_in]):
            writer.write(conn_out, t_ns, raw)
            raws.append(bytes(raw))
            if len(raws) == 10:
                break
    got = collect(rclpy_node, CompressedImage, '/cam/jpeg')
    clocks = collect(rclpy_node, Clock, '/clock', best_effort=True)
    player = start_cli(procs, 'bag_play', [
        '-m', 'vln_stack.tools.bags.play', str(tmp_path / 'go2_sqlite'), '--rate', '5',
        '--remap', f'{src_topic}:=/cam/jpeg', '--clock', '50', '--wait-subscribers', '10'])
    assert spin_until(rclpy_node, lambda: player.poll() is not None, 20.0), _logs(procs)
    spin_until(rclpy_node, lambda: len(got) == 10, 1.0)
    assert player.returncode == 0 and 'done (end): 10 msgs' in _logs(procs), _logs(procs)
    sent = [deserialize_message(r, CompressedImage) for r in raws]
    digest = lambda msgs: [hashlib.sha1(bytes(m.data)).hexdigest()[:10] for m in msgs]  # noqa: E731
    assert digest(got) == digest(sent)  # JPEGs byte for byte (digests keep a failure readable)
    assert [stamp_s(m) for m in got] == pytest.approx([GO2_T0 + 0.5 * i for i in range(10)])
    assert len(clocks) >= 20  # 0.9 s of playback at 50 Hz
    t_clock = [c.clock.sec + c.clock.nanosec * 1e-9 for c in clocks]
    assert all(b >= a for a, b in zip(t_clock, t_clock[1:]))
    assert GO2_T0 - 0.01 <= t_clock[0] and t_clock[-1] <= GO2_T0 + 4.5 + 0.2


def test_unavailable_source_exits_with_reason(procs, tmp_path):
    proc = procs.start(NodeSpec(NODE, 'camera_ingest', params={
        'source': 'opencv', 'opencv_uri': str(tmp_path / 'missing.avi')}))
    assert proc.wait(timeout=20) == 1
    assert 'video file not found' in _logs(procs)
