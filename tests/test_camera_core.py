"""Unit tests of the ROS-free camera ingest core, frame sources, image conversion, bag timing."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from import_rules import discover_modules, imported_after
from vln_stack.camera.ingest import (FramePreprocessor, IngestStats, RateLimiter,
                                     scale_camera_intrinsics, seconds_to_stamp)
from vln_stack.camera.sources import (SOURCES, FrameSource, SourceUnavailableError,
                                      import_pyrealsense2, make_source, register_source)
from vln_stack.tools.bags.play import (PlaybackClock, parse_remaps, play, resolve_msg_type,
                                       select_topics)

GO2 = 'internnav_go2_office_vln'
K_GO2 = np.array([[386.5, 0.0, 328.9], [0.0, 386.5, 244.0], [0.0, 0.0, 1.0]])


def _go2_frame(shared_data: Path, i: int = 0) -> np.ndarray:
    bgr = cv2.imread(str(shared_data / GO2 / 'frames' / f'debug_raw_{i:04d}.jpg'))
    assert bgr is not None
    return bgr[:, :, ::-1].copy()


# --- FramePreprocessor ---------------------------------------------------------------------------
def test_resize_real_frame_exact_size(shared_data):
    rgb = _go2_frame(shared_data)
    assert rgb.shape == (480, 640, 3)
    out = FramePreprocessor(320, 240, 'resize')(rgb)
    assert out.shape == (240, 320, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    # INTER_AREA at exactly 1/2 is a 2x2 box average: the mean colour is kept
    assert np.abs(out.reshape(-1, 3).mean(0) - rgb.reshape(-1, 3).mean(0)).max() < 0.5
    squeezed = FramePreprocessor(224, 224, 'resize')(rgb)
    assert squeezed.shape == (224, 224, 3)


def test_fit_width_keeps_aspect():
    pre = FramePreprocessor(640, 480, 'fit_width')
    assert pre.output_size((1280, 720)) == (640, 360)
    assert pre.output_size((640, 480)) == (640, 480)
    assert pre.output_size((320, 240)) == (640, 480)
    assert pre(np.zeros((720, 1280, 3), np.uint8)).shape == (360, 640, 3)
    same = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    assert np.array_equal(pre(same), same)


def test_preprocessor_rejects_bad_input():
    with pytest.raises(ValueError, match='resize mode'):
        FramePreprocessor(640, 480, 'crop')
    with pytest.raises(ValueError, match='positive'):
        FramePreprocessor(0, 480)
    pre = FramePreprocessor(64, 48)
    with pytest.raises(ValueError, match='uint8'):
        pre(np.zeros((48, 64), np.uint8))
    with pytest.raises(ValueError, match='uint8'):
        pre(np.zeros((48, 64, 3), np.float32))
    with pytest.raises(ValueError, match='empty'):
        pre(np.zeros((0, 64, 3), np.uint8))


# --- RateLimiter ---------------------------------------------------------------------------------
def _passed(limiter: RateLimiter, stamps) -> list[float]:
    return [t for t in stamps if limiter.allow(t)]


def test_rate_limiter_divides_input_rate():
    stamps = [i / 30.0 for i in range(300)]  # 10 s at 30 Hz
    out = _passed(RateLimiter(10.0), stamps)
    assert len(out) == 100
    assert np.allclose(np.diff(out), 0.1)


def test_rate_limiter_keeps_non_dividing_rate_and_no_bursts():
    stamps = [i / 30.0 for i in range(300)]
    out = _passed(RateLimiter(14.0), stamps)
    assert 138 <= len(out) <= 141           # 14 Hz on average, not 10 Hz
    assert np.diff(out).min() >= 1 / 30.0 - 1e-9
    # the long-run rate never exceeds the cap in any 1 s window
    arr = np.array(out)
    for start in np.arange(0.0, 9.0, 0.1):
        assert ((arr >= start) & (arr < start + 1.0)).sum() <= 15


def test_rate_limiter_tolerates_jitter():
    rng = np.random.default_rng(1)
    stamps = np.arange(100) * 0.1 + rng.uniform(-0.004, 0.004, 100)  # 10 Hz with 4 ms jitter
    assert len(_passed(RateLimiter(10.0), stamps)) == 100
    assert len(_passed(RateLimiter(5.0), stamps)) == 50


def test_rate_limiter_gap_reset_and_unlimited():
    lim = RateLimiter(2.0)
    assert lim.allow(0.0) and not lim.allow(0.2) and lim.allow(0.5)
    # after a long gap one frame passes, the next waits a period: no burst of catch-up frames
    assert lim.allow(10.0) and not lim.allow(10.1) and lim.allow(10.5)
    # time going backwards (bag loop, sim reset) restarts the schedule
    assert lim.allow(1.0) and not lim.allow(1.1)
    assert all(RateLimiter(0.0).allow(t) for t in [0.0, 0.0, 0.001, -5.0])


def test_rate_limiter_check_does_not_take_slot():
    lim = RateLimiter(1.0)
    assert lim.check(0.0)
    assert lim.check(0.1)                  # nothing committed yet: a bad frame left no trace
    lim.commit(0.1)
    assert not lim.check(0.5) and lim.check(1.1)


# --- intrinsics ----------------------------------------------------------------------------------
def test_scale_intrinsics_half_size():
    k2 = scale_camera_intrinsics(K_GO2, (640, 480), (320, 240))
    assert k2.shape == (3, 3)
    assert k2[0, 0] == pytest.approx(193.25) and k2[1, 1] == pytest.approx(193.25)
    assert k2[0, 2] == pytest.approx((328.9 + 0.5) * 0.5 - 0.5)
    assert k2[1, 2] == pytest.approx((244.0 + 0.5) * 0.5 - 0.5)
    assert np.allclose(scale_camera_intrinsics(K_GO2, (640, 480), (640, 480)), K_GO2)
    flat = scale_camera_intrinsics(list(K_GO2.ravel()), (640, 480), (320, 240))
    assert flat.shape == (9,) and np.allclose(flat.reshape(3, 3), k2)


def test_scale_intrinsics_matches_projection_and_cv2_resize():
    # a 3D point projects where the resized image has it: u' = (u + 0.5) * s - 0.5
    sx, sy = 224 / 640, 224 / 480
    k2 = scale_camera_intrinsics(K_GO2, (640, 480), (224, 224))
    pts = np.array([[0.3, -0.2, 2.0], [-1.0, 0.5, 4.0], [0.0, 0.0, 1.0]])
    uv = (K_GO2 @ pts.T).T
    uv = uv[:, :2] / uv[:, 2:]
    uv2 = (k2 @ pts.T).T
    uv2 = uv2[:, :2] / uv2[:, 2:]
    assert np.allclose(uv2, (uv + 0.5) * [sx, sy] - 0.5)
    # and cv2.resize really samples that way: a 4x4 block's centroid moves by the same rule
    img = np.zeros((480, 640, 3), np.uint8)
    img[200:204, 100:104] = 255
    small = FramePreprocessor(320, 240)(img)[:, :, 0].astype(float)
    ys, xs = np.nonzero(small)
    cx = (xs * small[ys, xs]).sum() / small[ys, xs].sum()
    cy = (ys * small[ys, xs]).sum() / small[ys, xs].sum()
    assert (cx, cy) == pytest.approx(((101.5 + 0.5) * 0.5 - 0.5, (201.5 + 0.5) * 0.5 - 0.5))


def test_scale_projection_matrix_and_errors():
    p = np.hstack([K_GO2, [[-386.5 * 0.05], [0.0], [0.0]]])  # right camera of a 5 cm stereo pair
    p2 = scale_camera_intrinsics(p, (640, 480), (320, 240))
    assert p2.shape == (3, 4)
    assert p2[0, 3] == pytest.approx(-193.25 * 0.05) and p2[2, 3] == 0.0
    with pytest.raises(ValueError):
        scale_camera_intrinsics(np.eye(2), (640, 480), (320, 240))
    with pytest.raises(ValueError):
        scale_camera_intrinsics(K_GO2, (0, 480), (320, 240))


def test_stamp_conversion_round_trip():
    from builtin_interfaces.msg import Time

    from vln_stack.ros.convert import s_from_time, time_from_s
    assert s_from_time(Time(sec=1760659200, nanosec=500_000_000)) == pytest.approx(1760659200.5)
    assert s_from_time(time_from_s(1760659200.25)) == pytest.approx(1760659200.25)
    assert seconds_to_stamp(1.5) == (1, 500_000_000)
    assert seconds_to_stamp(2.9999999999) == (3, 0)


def test_ingest_stats_window():
    st = IngestStats()
    assert st.window(0.0)['output_rate_hz'] == 0.0
    for _ in range(10):
        st.record_in()
    for _ in range(4):
        st.record_out(2.0)
    st.record_drop('rate_limit')
    st.record_drop('malformed', 'bad step')
    win = st.window(2.0)
    assert win['input_rate_hz'] == pytest.approx(5.0)
    assert win['output_rate_hz'] == pytest.approx(2.0)
    assert win['malformed_in_window'] == 1
    assert st.dropped == {'rate_limit': 1, 'malformed': 1, 'other': 0}
    assert st.last_drop_reason == 'bad step' and st.proc_ms_mean == pytest.approx(2.0)
    assert st.window(3.0)['output_rate_hz'] == 0.0
    with pytest.raises(ValueError):
        st.record_drop('cosmic_ray')


# --- ros/images.py conversion errors -------------------------------------------------------------
def _image(enc='rgb8', w=4, h=3, step=None, data=None):
    from sensor_msgs.msg import Image

    ch = {'rgb8': 3, 'bgr8': 3, 'mono8': 1, 'mono16': 2}[enc]
    msg = Image(encoding=enc, width=w, height=h, step=step if step is not None else w * ch)
    msg.data = data if data is not None else bytes(range(msg.step * h))
    return msg


def test_image_conversion_errors_name_the_problem():
    from vln_stack.ros.images import image_msg_to_rgb

    with pytest.raises(ValueError, match="unsupported image encoding 'mono16'"):
        image_msg_to_rgb(_image('mono16'))
    with pytest.raises(ValueError, match='step 6 < width\\*channels 12'):
        image_msg_to_rgb(_image(step=6, data=bytes(36)))
    with pytest.raises(ValueError, match='has 20 bytes, expected 36'):
        image_msg_to_rgb(_image(data=bytes(20)))
    with pytest.raises(ValueError, match='empty image'):
        image_msg_to_rgb(_image(w=0, h=0, data=b''))


def test_image_conversion_good_paths():
    from vln_stack.ros.images import image_msg_to_rgb

    rgb = np.arange(36, dtype=np.uint8).reshape(3, 4, 3)
    bgr_padded = np.zeros((3, 16), np.uint8)  # step 16 > 12: row padding is skipped
    bgr_padded[:, :12] = rgb[:, :, ::-1].reshape(3, 12)
    out = image_msg_to_rgb(_image('bgr8', step=16, data=bgr_padded.tobytes()))
    assert np.array_equal(out, rgb)
    mono = image_msg_to_rgb(_image('mono8', data=bytes(range(12))))
    assert mono.shape == (3, 4, 3) and np.array_equal(mono[:, :, 0], mono[:, :, 2])


def test_compressed_conversion(shared_data):
    from sensor_msgs.msg import CompressedImage

    from vln_stack.ros.images import compressed_msg_to_rgb, rgb_to_compressed_msg

    jpeg = (shared_data / GO2 / 'frames' / 'debug_raw_0005.jpg').read_bytes()
    rgb = compressed_msg_to_rgb(CompressedImage(format='jpeg', data=jpeg))
    assert rgb.shape == (480, 640, 3)
    assert np.array_equal(rgb, _go2_frame(shared_data, 5))
    with pytest.raises(ValueError, match='could not decode'):
        compressed_msg_to_rgb(CompressedImage(format='jpeg', data=jpeg[:200]))
    with pytest.raises(ValueError, match='no data'):
        compressed_msg_to_rgb(CompressedImage(format='jpeg', data=b''))
    back = rgb_to_compressed_msg(rgb, CompressedImage().header.stamp, 'cam', quality=90)
    again = compressed_msg_to_rgb(back)
    assert np.abs(again.astype(int) - rgb).mean() < 3.0


# --- frame sources -------------------------------------------------------------------------------
def _write_video(path: Path, n: int = 6, wh=(96, 64), fps: float = 50.0) -> list[int]:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), fps, wh)
    assert writer.isOpened()
    levels = [20 + 35 * i for i in range(n)]
    for lv in levels:
        frame = np.zeros((wh[1], wh[0], 3), np.uint8)
        frame[:, :, 2] = lv  # red channel in BGR
        writer.write(frame)
    writer.release()
    return levels


def test_registry_has_device_sources():
    assert {'realsense', 'opencv'} <= set(SOURCES)
    with pytest.raises(ValueError, match='unknown frame source'):
        make_source('kinect')

    @register_source('test_fake')
    class FakeSource(FrameSource):
        def open(self) -> None: ...
        def read(self, timeout_s): return np.zeros((2, 2, 3), np.uint8), 0.0
        def close(self) -> None: ...

    try:
        with make_source('test_fake') as src:
            rgb, stamp = src.read(0.1)
            assert rgb.shape == (2, 2, 3) and stamp == 0.0 and src.name == 'test_fake'
    finally:
        SOURCES.pop('test_fake')


def test_opencv_source_file_order_loop_and_end(tmp_path):
    levels = _write_video(tmp_path / 'clip.avi')
    with make_source('opencv', uri=str(tmp_path / 'clip.avi'), loop=False, real_time=False) as src:
        got = []
        while not src.finished and len(got) < 20:
            item = src.read(0.5)
            if item is not None:
                rgb, stamp = item
                assert rgb.shape == (64, 96, 3)
                got.append((int(round(rgb[:, :, 0].mean())), stamp))
        assert [lv for lv, _ in got] == pytest.approx(levels, abs=3)
        assert [s for _, s in got] == pytest.approx([i / 50.0 for i in range(len(levels))])
        assert src.read(0.01) is None
    with make_source('opencv', uri=str(tmp_path / 'clip.avi'), loop=True, real_time=False) as src:
        reds = [int(round(src.read(0.5)[0][:, :, 0].mean())) for _ in range(2 * len(levels))]
        assert reds[len(levels):] == pytest.approx(reds[:len(levels)], abs=1)
    with pytest.raises(SourceUnavailableError, match='not found'):
        make_source('opencv', uri=str(tmp_path / 'missing.avi')).open()


def require_pyrealsense2() -> None:
    try:
        import_pyrealsense2()
    except SourceUnavailableError as exc:
        pytest.fail(f'RealSense playback cannot run here: {exc}')


def test_realsense_bag_playback_colour(shared_data):
    require_pyrealsense2()
    bag = shared_data / 'realsense_d435_lerobot' / 'test_rs.bag'
    with make_source('realsense', file=str(bag), loop=True, real_time=False) as src:
        intr = src.intrinsics()
        assert (intr.width, intr.height) == (640, 480)
        assert intr.k[0, 0] == pytest.approx(604.21, abs=0.01)
        assert intr.k[1, 2] == pytest.approx(252.73, abs=0.01)
        frames = [src.read(2.0) for _ in range(7)]
    frames = [f for f in frames if f is not None]
    assert len(frames) >= 5
    for rgb, stamp in frames:
        assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
        assert 1747141385.0 < stamp < 1747141386.0  # recorded 2025-05-13 13:03:05 UTC
        assert rgb.std() > 5.0  # a real (dim) office scene, not a blank frame


def test_realsense_missing_file_is_clear(tmp_path):
    assert make_source('realsense', serial='_233522074606').serial == '233522074606'
    require_pyrealsense2()
    with pytest.raises(SourceUnavailableError, match='not found'):
        make_source('realsense', file=str(tmp_path / 'none.bag')).open()


# --- bag_play timing core (no ROS) ---------------------------------------------------------------
class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += max(dt, 1e-6)


def test_playback_clock_maps_both_ways():
    clk = PlaybackClock(rate=2.0, bag_start_ns=10_000_000_000, wall_start_s=5.0)
    assert clk.due_s(10_000_000_000) == 5.0
    assert clk.due_s(12_000_000_000) == pytest.approx(6.0)
    assert clk.bag_now_ns(6.0) == 12_000_000_000
    with pytest.raises(ValueError):
        PlaybackClock(rate=0.0, bag_start_ns=0, wall_start_s=0.0)


def test_play_keeps_order_and_scaled_timing():
    ft = FakeTime()
    msgs = [('/a', 1_000_000_000 + i * 500_000_000, bytes([i])) for i in range(5)]
    sent = []
    stats = play(lambda: iter(msgs), start_ns=1_000_000_000, rate=2.0,
                 publish=lambda topic, raw: sent.append((ft.now(), topic, raw)),
                 now=ft.now, sleep=ft.sleep)
    assert stats.published == 5 and stats.stopped_by == 'end'
    assert [r for _, _, r in sent] == [bytes([i]) for i in range(5)]
    assert [t - 100.0 for t, _, _ in sent] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0], abs=1e-3)


def test_play_loop_clock_and_duration_bound():
    ft = FakeTime()
    msgs = [('/a', i * 100_000_000, b'x') for i in range(10)]  # 1 s of bag
    clocks: list[int] = []
    stats = play(lambda: iter(msgs), start_ns=0, rate=1.0, publish=lambda t, r: None,
                 now=ft.now, sleep=ft.sleep, loop=True, max_duration_s=3.5,
                 publish_clock=clocks.append, clock_period_s=0.1)
    # a pass lasts 0.9 s (first to last message), the next starts right after the last one
    assert stats.stopped_by == 'duration' and stats.passes == 4
    assert 37 <= stats.published <= 39
    assert ft.now() - 100.0 == pytest.approx(3.5, abs=0.06)
    assert 30 <= len(clocks) <= 40 and max(clocks) <= 1_000_000_000
    # /clock goes forward within a pass and back to the start when looping
    assert sum(1 for a, b in zip(clocks, clocks[1:]) if b < a) == stats.passes - 1


def test_play_stops_on_shutdown():
    ft = FakeTime()
    msgs = [('/a', i * 1_000_000_000, b'x') for i in range(100)]
    stats = play(lambda: iter(msgs), start_ns=0, rate=1.0, publish=lambda t, r: None,
                 now=ft.now, sleep=ft.sleep, ok=lambda: ft.now() < 102.5)
    assert stats.stopped_by == 'shutdown' and stats.published == 3


def test_play_real_go2_bag_schedule(shared_data):
    from rosbags.rosbag2 import Reader

    ft = FakeTime()
    sent: list[tuple[float, str]] = []
    with Reader(shared_data / GO2 / 'rosbag2_mcap') as reader:
        conns = [c for c in reader.connections if c.topic.endswith('compressed')]

        def passes():
            for conn, t_ns, raw in reader.messages(connections=conns,
                                                   start=reader.start_time + 10_000_000_000):
                yield conn.topic, t_ns, raw

        stats = play(passes, start_ns=reader.start_time + 10_000_000_000, rate=4.0,
                     publish=lambda t, r: sent.append((ft.now(), t)), now=ft.now, sleep=ft.sleep)
    assert stats.published == 135 - 20  # 10 s offset skips frames 0..19
    assert np.allclose(np.diff([t for t, _ in sent]), 0.5 / 4.0, atol=1e-3)


def test_cli_helpers():
    assert parse_remaps(['/a:=/b', 'c:=d']) == {'/a': '/b', '/c': '/d'}
    with pytest.raises(ValueError):
        parse_remaps(['/a=/b'])
    assert select_topics(['/a', '/b'], None) == ['/a', '/b']
    assert select_topics(['/a', '/b'], ['b']) == ['/b']
    with pytest.raises(ValueError, match='not in bag'):
        select_topics(['/a'], ['/zzz'])
    from sensor_msgs.msg import CompressedImage

    assert resolve_msg_type('sensor_msgs/msg/CompressedImage') is CompressedImage
    assert resolve_msg_type('sensor_msgs/CompressedImage') is CompressedImage
    with pytest.raises(ImportError):
        resolve_msg_type('realsense_msgs/msg/StreamInfo')
    with pytest.raises(ImportError):
        resolve_msg_type('sensor_msgs/msg/NoSuchThing')


def test_camera_modules_do_not_import_rclpy():
    # the camera package and the bag player load neither ROS nor the RealSense SDK on import
    modules = discover_modules('vln_stack.camera') + ['vln_stack.tools.bags.play']
    assert imported_after(modules, unwanted=('pyrealsense2',)) == []
