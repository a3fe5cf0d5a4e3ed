"""Cut a short GIF out of an evaluation video, for the top of the README.

    python dqn_atari.py --eval-only models/dqn_atari_SpaceInvadersNoFrameskip-v4.pt --capture-video --eval-episodes 1
    python benchmarks/make_gif.py videos/<that run>/ benchmarks/spaceinvaders_dqn.gif --start 20 --seconds 12

The input is an .mp4 file or a folder of them (the first one, by name, is used). The GIF shows the
game's pixels --scale times larger, each one a sharp square, at --fps; every frame is a real frame of
the video.
"""

import argparse
import sys
from pathlib import Path

from moviepy import VideoFileClip
from PIL import Image


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", help="an .mp4 file, or a folder that holds one (videos/<run_name>/)")
    parser.add_argument("out", help="the .gif to write")
    parser.add_argument("--start", type=float, default=0.0, help="seconds into the video where the GIF starts")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the GIF")
    parser.add_argument("--fps", type=int, default=15, help="frames per second of the GIF")
    parser.add_argument("--scale", type=int, default=2, help="each pixel of the game becomes scale x scale pixels")
    args = parser.parse_args(argv)

    video = Path(args.video)
    if video.is_dir():
        videos = sorted(video.glob("*.mp4"))
        if not videos:
            sys.exit(f"error: no .mp4 file in '{video}': record one with --eval-only <model> --capture-video")
        video = videos[0]
    with VideoFileClip(str(video)) as clip:
        start = min(args.start, max(clip.duration - args.seconds, 0.0))
        part = clip.subclipped(start, min(start + args.seconds, clip.duration))
        frames = [Image.fromarray(frame) for frame in part.iter_frames(fps=args.fps, dtype="uint8")]
    size = (frames[0].width * args.scale, frames[0].height * args.scale)
    frames = [frame.resize(size, Image.NEAREST) for frame in frames]
    frames[0].save(args.out, save_all=True, append_images=frames[1:], duration=1000 // args.fps, loop=0, optimize=True)
    print(f"{args.out}: {Path(args.out).stat().st_size / 1e6:.1f} MB, {args.seconds:g} s of {video} from {start:g} s")


if __name__ == "__main__":
    main()
