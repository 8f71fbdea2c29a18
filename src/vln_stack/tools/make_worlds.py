"""Write the Gazebo worlds: gazebo/<world>_<flavor>.sdf for every world of vln_stack.sim.worlds.

    python -m vln_stack.tools.make_worlds                      # go2, all flavours, into gazebo/
    python -m vln_stack.tools.make_worlds --robot agri --flavor harmonic --out /tmp/worlds
    python -m vln_stack.tools.make_worlds --check              # exit 1 if gazebo/ is stale

The output is a pure function of the world descriptions and the robot profile (no dates, no
paths), so the committed files for the default robot (go2) can be compared byte for byte.
The robot is spawned at each world's default pose; launch/gazebo.launch.py writes its own copy
with the robot at the episode's start.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.paths import config_dir as default_config_dir
from ..core.profiles import PROFILE_NAMES, load_profile
from ..sim.sdf import FLAVORS, build_sdf
from ..sim.worlds import WORLDS, RobotBody

DEFAULT_ROBOT = 'go2'


def world_files(robot: str = DEFAULT_ROBOT, flavors=FLAVORS, config_dir: Path | None = None,
                worlds=None) -> dict[str, str]:
    """{file name: SDF text} for the given robot profile, flavours and worlds (default: all)."""
    if config_dir is None:
        config_dir = default_config_dir()
    body = RobotBody.from_profile(load_profile(robot, config_dir))
    out = {}
    for world in (worlds or WORLDS):
        for flavor in flavors:
            out[f'{world}_{flavor}.sdf'] = build_sdf(world, body, flavor=flavor, robot_name=robot)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', default='gazebo', help='output folder (default: gazebo)')
    ap.add_argument('--robot', default=DEFAULT_ROBOT, choices=PROFILE_NAMES)
    ap.add_argument('--flavor', choices=FLAVORS, action='append',
                    help='harmonic | fortress | classic (repeatable; default: all)')
    ap.add_argument('--world', choices=sorted(WORLDS), action='append',
                    help='world (repeatable; default: all)')
    ap.add_argument('--config-dir', type=Path, default=None, help='config folder with robots/')
    ap.add_argument('--check', action='store_true',
                    help='write nothing; exit 1 if a file in --out differs from a fresh build')
    args = ap.parse_args(argv)
    files = world_files(args.robot, tuple(args.flavor or FLAVORS), args.config_dir, args.world)
    out = Path(args.out)
    if args.check:
        stale = [n for n, text in files.items()
                 if not (out / n).is_file() or (out / n).read_bytes() != text.encode()]
        for name in stale:
            print(f'stale: {out / name}')
        if stale:
            print('regenerate with: python -m vln_stack.tools.make_worlds '
                  f'--out {args.out} --robot {args.robot}', file=sys.stderr)
        return 1 if stale else 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_bytes(text.encode())
        print(out / name)
    return 0


if __name__ == '__main__':
    sys.exit(main())
