"""The caption check: colour, shape and motion read back from a video's frames.

    colour  the caption colour whose mask (pixels within 0.3 of the colour, RGB in 0..1) is largest
    shape   from the mask's fill of its bounding box (square ~1, circle ~0.79, triangle ~0.5)
    motion  from the mask's centroid track and area: growing / shrinking (area x1.6 or /1.6),
            left / right / up / down (net shift > 10% of the side), bouncing (vertical range > 10%)
    background  the caption colour nearest the frames' median chroma (each pixel over its largest
            channel: the background covers most pixels, and its colour survives the texture's
            brightness); reported beside the three, not part of the caption's agreement

    python check.py selftest [--n 200] [--size 256] [--frames 33]   # agreement on real clips

A generated video is scored with score(caption, frames).
"""
import argparse
import sys

import torch

import data

THRESH = 0.3


def _frames01(frames):
    """[F, H, W, 3] in 0..1 from [3, F, H, W] in -1..1 (a clip) or [F, H, W, 3] in 0..1."""
    if frames.shape[0] == 3 and frames.shape[-1] != 3:
        frames = (frames.permute(1, 2, 3, 0) + 1) / 2
    return frames.float().clamp(0, 1)


def background(v):
    """The background's colour name from [F, H, W, 3] frames in 0..1 (data.render draws it as
    level * (0.85 colour + 0.15): the chroma of 0.85 colour + 0.15 whatever the level)."""
    px = v.reshape(-1, 3)
    med = (px / px.amax(1, keepdim=True).clamp(min=0.05)).median(0).values
    def dist(name):
        c = 0.85 * torch.tensor(data.COLOURS[name]) + 0.15
        return float((c / c.max() - med).norm())
    return min(data.COLOURS, key=dist)


def read(frames):
    """{colour=, shape=, motion=} read from the frames."""
    v = _frames01(frames)
    F, H, W, _ = v.shape
    planes = v.permute(3, 0, 1, 2).contiguous()               # [3, F, H, W]
    best, mask = None, None
    for name, rgb in data.COLOURS.items():
        m = sum((planes[c] - rgb[c]) ** 2 for c in range(3)) < THRESH * THRESH
        if best is None or m.sum() > mask.sum():
            best, mask = name, m
    out = {"colour": best, "shape": None, "motion": None, "background": background(v)}
    area = mask.flatten(1).sum(1).float()                      # [F]
    if area.max() < 0.001 * H * W:
        return out
    ys = torch.arange(H, dtype=torch.float32).view(1, H, 1)
    xs = torch.arange(W, dtype=torch.float32).view(1, 1, W)
    ok = area > 0.25 * area.max()
    mf = mask.float()
    cx = (mf * xs).flatten(1).sum(1) / area.clamp(min=1)
    cy = (mf * ys).flatten(1).sum(1) / area.clamp(min=1)
    def extent(counts):   # [F, N] mask pixels per row (or column) -> extent in rows, ignoring strays
        on = counts >= 2
        n = counts.shape[1]
        ar = torch.arange(n).view(1, n)
        first = torch.where(on, ar, n).amin(1)
        last = torch.where(on, ar, -1).amax(1)
        return (last - first + 1).clamp(min=1).float()
    box = extent(mask.sum(2)) * extent(mask.sum(1))
    fills = (area / box)[ok].tolist()
    fill = sorted(fills)[len(fills) // 2]
    out["fill"] = fill
    out["shape"] = "square" if fill > 0.88 else ("circle" if fill > 0.64 else "triangle")
    idx = torch.nonzero(ok).flatten()
    k = max(1, min(3, len(idx) // 4))
    first, last = idx[:k], idx[-k:]
    ratio = float(area[last].mean() / area[first].mean())
    dx = float(cx[last].mean() - cx[first].mean()) / W
    dy = float(cy[last].mean() - cy[first].mean()) / H
    yrange = float(cy[idx].max() - cy[idx].min()) / H
    if ratio > 1.6:
        motion = "growing"
    elif ratio < 1 / 1.6:
        motion = "shrinking"
    elif max(abs(dx), abs(dy)) > 0.1:
        motion = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
    elif yrange > 0.1:
        motion = "bouncing"
    else:
        motion = None
    out["motion"] = motion
    return out


def parse(caption):
    """The caption's {colour=, shape=, motion=}."""
    words = data.tokenize(caption)
    out = {"colour": None, "shape": None, "motion": None, "background": None}
    for i, w in enumerate(words):
        if w in ("over",):
            # the background's words: over a [texture] colour background
            out["background"] = next((x for x in words[i + 1:] if x in data.COLOURS), None)
            break
        if w in data.COLOURS and out["colour"] is None:
            out["colour"] = w
        elif w in data.SHAPES:
            out["shape"] = w
        elif w in ("bouncing", "growing", "shrinking"):
            out["motion"] = w
        elif w == "moving" and i + 1 < len(words):
            out["motion"] = words[i + 1]
    return out


def score(caption, frames):
    """{colour=bool, shape=bool, motion=bool, all=bool, background=bool, read=..., want=...}; all is
    the object's three (the issue's check), background is apart."""
    want, got = parse(caption), read(frames)
    r = {k: want[k] == got[k] for k in ("colour", "shape", "motion")}
    r["all"] = all(r.values())
    r["background"] = want["background"] == got["background"]
    r["read"], r["want"] = got, want
    return r


def selftest(n=200, size=256, frames=33, base=0):
    agree = {"colour": 0, "shape": 0, "motion": 0, "all": 0, "background": 0}
    misses = []
    for i in range(n):
        p = data.sample_params(base + i)
        cap = data.caption(p)
        video = data.render(p, size, frames)
        r = score(cap, video)
        for k in agree:
            agree[k] += int(r[k])
        # the background read must also tell another colour apart: the caption with a wrong one
        other = next(c for c in data.COLOURS if c not in (p["bg"], p["colour"]))
        wrong = cap.replace(" %s background" % p["bg"], " %s background" % other)
        agree["background"] -= int(wrong == cap or score(wrong, video)["background"])
        if not r["all"] and len(misses) < 10:
            misses.append((base + i, cap, r["read"]))
    return {k: v / n for k, v in agree.items()}, misses


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["selftest"])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--base", type=int, default=0, help="first clip seed")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    rates, misses = selftest(a.n, a.size, a.frames, a.base)
    print("agreement on %d real clips (%dx%d, %d frames): colour %.3f shape %.3f motion %.3f all %.3f"
          " (background %.3f)" % (a.n, a.size, a.size, a.frames, rates["colour"], rates["shape"], rates["motion"],
                                  rates["all"], rates["background"]))
    for m in misses:
        print("  miss: seed %d %r read %s" % m)
    return 0 if rates["all"] >= 0.95 and rates["background"] >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
