"""Procedural captioned video clips, generated on the fly from a seed.

Every clip is one bright shape (square, circle, triangle) in a saturated colour, moving left /
right / up / down, bouncing, growing or shrinking, over a dark textured background (stripes,
checks, a gradient or plain, in another colour), sometimes with a camera pan that scrolls the
background. Its caption comes from a small grammar:

    a big red square moving left over a striped blue background as the camera pans right

Clip seeds: training clips use seed = data_seed * 1_000_003 + index (index < 10**9, wrapped);
held-out prompts use HELDOUT_BASE + i, which no training index reaches.

    python data.py vocab           # writes vocab.txt (one word a line)
    python data.py heldout         # writes heldout.txt (50 lines: seed<TAB>caption)
    python data.py show SEED       # prints a clip's caption and parameters
"""
import math
import random
import sys
from pathlib import Path

import torch

COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0),
}
SHAPES = ["square", "circle", "triangle"]
SIZES = ["small", "big"]
MOTIONS = ["left", "right", "up", "down", "bouncing", "growing", "shrinking"]
TEXTURES = ["striped", "checkered", "gradient", "plain"]
PANS = ["left", "right", "up", "down"]
BLANK = "<blank>"          # the caption of a dropped prompt (word id 0)
HELDOUT_BASE = 2_000_000_000
HELDOUT_COUNT = 50
BG_LOW, BG_HIGH = 0.12, 0.45   # background intensities (shapes are at 1.0)

HERE = Path(__file__).resolve().parent


def vocabulary():
    """The word list, id = position; id 0 is the blank caption."""
    words = [BLANK, "a", "over", "background", "as", "the", "camera", "pans", "moving"]
    for group in (SIZES, list(COLOURS), SHAPES, MOTIONS, TEXTURES, PANS):
        for w in group:
            if w not in words:
                words.append(w)
    return words


def tokenize(caption):
    """Caption -> list of words (lower case, punctuation dropped); '' -> [BLANK]."""
    words = caption.lower().replace(",", " ").replace(".", " ").split()
    return words if words else [BLANK]


def word_ids(caption, vocab=None):
    vocab = vocab or vocabulary()
    index = {w: i for i, w in enumerate(vocab)}
    ids = []
    for w in tokenize(caption):
        if w not in index:
            raise ValueError(f"unknown word {w!r} (vocabulary: {HERE / 'vocab.txt'})")
        ids.append(index[w])
    return ids


def sample_params(seed):
    """The random choices of clip `seed` (independent of resolution and frame count)."""
    r = random.Random(seed)
    p = {
        "seed": seed,
        "shape": r.choice(SHAPES),
        "colour": r.choice(list(COLOURS)),
        "size": r.choice(SIZES),
        "motion": r.choice(MOTIONS),
        "texture": r.choice(TEXTURES),
    }
    p["bg"] = r.choice([c for c in COLOURS if c != p["colour"]])
    p["pan"] = r.choice(PANS) if r.random() < 0.3 else None
    p["radius"] = r.uniform(0.055, 0.075) if p["size"] == "small" else r.uniform(0.10, 0.14)   # of the side
    p["period"] = r.uniform(0.06, 0.14)
    p["angle"] = r.choice([0.0, 0.5 * math.pi, 0.25 * math.pi, 0.75 * math.pi])
    p["travel"] = r.uniform(0.35, 0.5)
    p["u"] = r.random()   # free positions (0..1, mapped into the allowed ranges)
    p["v"] = r.random()
    p["pan_speed"] = r.uniform(0.1, 0.25)
    p["bounces"] = r.choice([1, 2])
    p["height"] = r.uniform(0.3, 0.45)
    return p


def caption(p):
    motion = p["motion"]
    phrase = f"moving {motion}" if motion in ("left", "right", "up", "down") else motion
    c = f"a {p['size']} {p['colour']} {p['shape']} {phrase} over a {p['texture']} {p['bg']} background"
    if p["pan"]:
        c += f" as the camera pans {p['pan']}"
    return c


def _track(p, frames):
    """Centre (x, y) and radius per frame, in units of the side (0..1)."""
    t = torch.linspace(0, 1, frames, dtype=torch.float64)
    r0 = p["radius"]
    m = p["motion"]
    r = torch.full_like(t, r0)
    if m == "growing":
        r = r0 * (0.5 + 0.9 * t)
    elif m == "shrinking":
        r = r0 * (1.4 - 0.9 * t)
    rmax = float(r.max())
    lo, hi = rmax + 0.02, 1 - rmax - 0.02
    free_u = lo + (hi - lo) * p["u"]
    free_v = lo + (hi - lo) * p["v"]
    x = torch.full_like(t, free_u)
    y = torch.full_like(t, free_v)
    d = min(p["travel"], hi - lo)
    if m in ("left", "right", "up", "down"):
        start = lo + (hi - lo - d) * p["u"]
        path = start + d * t if m in ("right", "down") else start + d - d * t
        if m in ("left", "right"):
            x = path
            y = torch.full_like(t, free_v)
        else:
            y = path
            x = torch.full_like(t, free_u)
    elif m == "bouncing":
        floor = hi
        y = floor - min(p["height"], hi - lo) * torch.abs(torch.sin(math.pi * p["bounces"] * t))
    elif m in ("growing", "shrinking"):
        pass
    return x, y, r


def render(p, size=256, frames=33, device="cpu"):
    """Clip of params p: float32 [3, frames, size, size] in [-1, 1]."""
    dev = torch.device(device)
    f = torch.arange(frames, device=dev, dtype=torch.float32).view(frames, 1, 1)
    coords = (torch.arange(size, device=dev, dtype=torch.float32) + 0.5) / size
    yy = coords.view(1, size, 1)
    xx = coords.view(1, 1, size)
    # background, scrolled by the camera pan (the camera pans right: content moves left)
    ox = torch.zeros_like(f)
    oy = torch.zeros_like(f)
    step = p["pan_speed"] / max(frames - 1, 1)
    if p["pan"] == "right":
        ox = f * step
    elif p["pan"] == "left":
        ox = -f * step
    elif p["pan"] == "down":
        oy = f * step
    elif p["pan"] == "up":
        oy = -f * step
    bx, by = xx + ox, yy + oy
    a = p["angle"]
    u = bx * math.cos(a) + by * math.sin(a)
    tex = p["texture"]
    if tex == "striped":
        level = (torch.sin(2 * math.pi * u / p["period"]) > 0).float()
    elif tex == "checkered":
        level = ((torch.floor(bx / p["period"]) + torch.floor(by / p["period"])) % 2).float()
    elif tex == "gradient":
        level = (u - u.amin()) / (u.amax() - u.amin() + 1e-6)
    else:
        level = torch.full_like(u, 0.5)
    level = BG_LOW + (BG_HIGH - BG_LOW) * level                       # [F, S, S]
    bg = torch.tensor(COLOURS[p["bg"]], device=dev).view(3, 1, 1, 1)
    fg = torch.tensor(COLOURS[p["colour"]], device=dev).view(3, 1, 1, 1)
    # white backgrounds are grey; a saturated background keeps a little grey so it is never black
    img = bg * level.unsqueeze(0) * 0.85 + 0.15 * level.unsqueeze(0)
    # the shape, with a one-pixel soft edge
    cx, cy, r = (v.to(torch.float32).to(dev).view(frames, 1, 1) for v in _track(p, frames))
    dx, dy = xx - cx, yy - cy
    if p["shape"] == "square":
        sd = torch.maximum(dx.abs(), dy.abs()) - r
    elif p["shape"] == "circle":
        sd = torch.sqrt(dx * dx + dy * dy) - r
    else:   # upward triangle: apex at cy - r, base at cy + r, base half-width r
        top = cy - r
        sd = torch.maximum(torch.maximum(top - yy, yy - (cy + r)), (dx.abs() - (yy - top) / 2) / math.sqrt(1.25))
    alpha = (0.5 - sd * size).clamp(0, 1).unsqueeze(0)
    img = img * (1 - alpha) + fg * alpha
    return img * 2 - 1


def train_seed(data_seed, index):
    return (data_seed * 1_000_003 + index) % HELDOUT_BASE


def heldout():
    """The held-out prompts: [(seed, caption)]."""
    return [(HELDOUT_BASE + i, caption(sample_params(HELDOUT_BASE + i))) for i in range(HELDOUT_COUNT)]


def batch(data_seed, start, n, size=256, frames=33, device="cpu", drop=0.0):
    """Clips start..start+n-1 of the training stream: (video [n, 3, F, S, S], captions)."""
    vids, caps = [], []
    r = random.Random(train_seed(data_seed, start) ^ 0x5EED)
    for i in range(n):
        p = sample_params(train_seed(data_seed, start + i))
        vids.append(render(p, size, frames, device))
        caps.append("" if r.random() < drop else caption(p))
    return torch.stack(vids), caps


def main(argv):
    if not argv or argv[0] not in ("vocab", "heldout", "show"):
        print(__doc__)
        return 2
    if argv[0] == "vocab":
        (HERE / "vocab.txt").write_text("\n".join(vocabulary()) + "\n")
        print(f"wrote {HERE / 'vocab.txt'} ({len(vocabulary())} words)")
    elif argv[0] == "heldout":
        lines = [f"{s}\t{c}" for s, c in heldout()]
        (HERE / "heldout.txt").write_text("\n".join(lines) + "\n")
        print(f"wrote {HERE / 'heldout.txt'} ({len(lines)} prompts)")
    else:
        p = sample_params(int(argv[1]))
        print(caption(p))
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
