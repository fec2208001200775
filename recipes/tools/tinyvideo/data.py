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
    python data.py selftest        # batch_fast (train.py's batched generator) against batch
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


def train_params(seed, small=None):
    """sample_params(seed) of a training clip; small (a share in (0.5, 1]): a big clip turns small
    with probability (small - 0.5) / 0.5 (its radius drawn again among the small ones), so about that
    share of the stream is small shapes (half of it otherwise). Decided by the seed alone: the same
    clips every time. The held-out prompts never pass through here."""
    p = sample_params(seed)
    if small is not None and p["size"] == "big":
        r = random.Random(seed ^ 0x5A11)
        if r.random() < (small - 0.5) / 0.5:
            p["size"], p["radius"] = "small", r.uniform(0.055, 0.075)
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


def render(p, size=256, frames=33, device="cpu", alpha_out=False):
    """Clip of params p: float32 [3, frames, size, size] in [-1, 1]; alpha_out: and the shape's
    coverage float32 [1, frames, size, size] in [0, 1]."""
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
    return (img * 2 - 1, alpha) if alpha_out else img * 2 - 1


def train_seed(data_seed, index):
    return (data_seed * 1_000_003 + index) % HELDOUT_BASE


def heldout():
    """The held-out prompts: [(seed, caption)]."""
    return [(HELDOUT_BASE + i, caption(sample_params(HELDOUT_BASE + i))) for i in range(HELDOUT_COUNT)]


def batch(data_seed, start, n, size=256, frames=33, device="cpu", drop=0.0, alpha_out=False, small=None):
    """Clips start..start+n-1 of the training stream: (video [n, 3, F, S, S], captions), and with
    alpha_out the shapes' coverage [n, 1, F, S, S] third; small: train_params' share of small shapes."""
    vids, alphas, caps = [], [], []
    r = random.Random(train_seed(data_seed, start) ^ 0x5EED)
    for i in range(n):
        p = train_params(train_seed(data_seed, start + i), small)
        v = render(p, size, frames, device, alpha_out)
        vids.append(v[0] if alpha_out else v)
        if alpha_out:
            alphas.append(v[1])
        caps.append("" if r.random() < drop else caption(p))
    return (torch.stack(vids), caps, torch.stack(alphas)) if alpha_out else (torch.stack(vids), caps)


# ---- the same clips, a whole batch at once on the training device ------------------------------------

_MOTION_ID = {m: i for i, m in enumerate(MOTIONS)}
_TEXTURE_ID = {t: i for i, t in enumerate(TEXTURES)}
_PAN_XY = {None: (0.0, 0.0), "right": (1.0, 0.0), "left": (-1.0, 0.0), "down": (0.0, 1.0), "up": (0.0, -1.0)}
_FIELDS = ["shape", "motion", "texture", "fg_r", "fg_g", "fg_b", "bg_r", "bg_g", "bg_b", "pan_x", "pan_y", "pan_speed",
           "cos", "sin", "period", "radius", "u", "v", "travel", "height", "bounces"]


def pack_params(ps):
    """Clip params -> float64 [n, len(_FIELDS)] (the numbers render_batch needs), on the CPU."""
    rows = []
    for p in ps:
        fg, bg, pan = COLOURS[p["colour"]], COLOURS[p["bg"]], _PAN_XY[p["pan"]]
        rows.append([SHAPES.index(p["shape"]), _MOTION_ID[p["motion"]], _TEXTURE_ID[p["texture"]], *fg, *bg, *pan,
                     p["pan_speed"], math.cos(p["angle"]), math.sin(p["angle"]), p["period"], p["radius"], p["u"], p["v"],
                     p["travel"], p["height"], p["bounces"]])
    return torch.tensor(rows, dtype=torch.float64)


def _track_batch(q, frames):
    """_track for every row of packed params q [n, K] (float64, any device): x, y, r [n, frames]."""
    col = {k: q[:, i:i + 1] for i, k in enumerate(_FIELDS)}
    t = torch.linspace(0, 1, frames, dtype=torch.float64, device=q.device).view(1, frames)
    m, r0 = col["motion"], col["radius"]
    grow, shrink = m == _MOTION_ID["growing"], m == _MOTION_ID["shrinking"]
    r = torch.where(grow, r0 * (0.5 + 0.9 * t), torch.where(shrink, r0 * (1.4 - 0.9 * t), r0.expand(-1, frames)))
    rmax = r.amax(1, keepdim=True)
    lo, hi = rmax + 0.02, 1 - rmax - 0.02
    free_u = (lo + (hi - lo) * col["u"]).expand(-1, frames)
    free_v = (lo + (hi - lo) * col["v"]).expand(-1, frames)
    d = torch.minimum(col["travel"], hi - lo)
    start = lo + (hi - lo - d) * col["u"]
    forward = (m == _MOTION_ID["right"]) | (m == _MOTION_ID["down"])
    path = torch.where(forward, start + d * t, start + d - d * t)
    horizontal = (m == _MOTION_ID["left"]) | (m == _MOTION_ID["right"])
    vertical = (m == _MOTION_ID["up"]) | (m == _MOTION_ID["down"])
    bounce = hi - torch.minimum(col["height"], hi - lo) * torch.abs(torch.sin(math.pi * col["bounces"] * t))
    x = torch.where(horizontal, path, free_u)
    y = torch.where(vertical, path, torch.where(m == _MOTION_ID["bouncing"], bounce, free_v))
    return x, y, r


def _runs(keys):
    """[(key, start, stop)] of the runs of equal consecutive keys."""
    out = []
    for i, k in enumerate(keys):
        if out and out[-1][0] == k:
            out[-1][2] = i + 1
        else:
            out.append([k, i, i + 1])
    return out


def render_batch(ps, size=256, frames=33, device="cpu", alpha_out=False):
    """render() of every clip of params ps (a list), together on `device`: float32 [n, 3, frames,
    size, size] in [-1, 1], the same pixels as render(). The numbers go over in one copy; each
    run of consecutive clips with one texture (and within it one shape) is drawn by one set of
    batched ops, so clips ordered by (texture, shape) take a fixed ~200 ops whatever n, and no op
    waits for the device. alpha_out: and the shapes' coverage [n, 1, frames, size, size]."""
    dev = torch.device(device)
    q = pack_params(ps)
    q = q.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else q.to(dev)
    n = q.shape[0]
    x_c, y_c, r = (v.to(torch.float32).view(n, frames, 1, 1) for v in _track_batch(q, frames))
    q32 = q.to(torch.float32)
    col = {k: q32[:, i].view(n, 1, 1, 1) for i, k in enumerate(_FIELDS)}
    f = torch.arange(frames, device=dev, dtype=torch.float32).view(1, frames, 1, 1)
    coords = (torch.arange(size, device=dev, dtype=torch.float32) + 0.5) / size
    yy, xx = coords.view(1, 1, size, 1), coords.view(1, 1, 1, size)
    step = col["pan_speed"] / max(frames - 1, 1)
    bx = xx + f * step * col["pan_x"]                                  # [n, F, 1, S]
    by = yy + f * step * col["pan_y"]                                  # [n, F, S, 1]
    level = torch.empty(n, frames, size, size, device=dev)
    for tex, i, j in _runs([p["texture"] for p in ps]):
        bxs, bys, period = bx[i:j], by[i:j], col["period"][i:j]
        if tex == "striped":
            u = bxs * col["cos"][i:j] + bys * col["sin"][i:j]
            lv = (torch.sin(2 * math.pi * u / period) > 0).float()
        elif tex == "checkered":
            lv = ((torch.floor(bxs / period) + torch.floor(bys / period)) % 2).float()
        elif tex == "gradient":
            u = bxs * col["cos"][i:j] + bys * col["sin"][i:j]
            lo_u, hi_u = u.amin((1, 2, 3), keepdim=True), u.amax((1, 2, 3), keepdim=True)
            lv = (u - lo_u) / (hi_u - lo_u + 1e-6)
        else:
            lv = 0.5
        level[i:j] = lv
    level = (BG_LOW + (BG_HIGH - BG_LOW) * level).unsqueeze(1)          # [n, 1, F, S, S]
    bg = q32[:, 6:9].view(n, 3, 1, 1, 1)
    fg = q32[:, 3:6].view(n, 3, 1, 1, 1)
    img = bg * level * 0.85 + 0.15 * level
    sd = torch.empty(n, frames, size, size, device=dev)
    for shape, i, j in _runs([p["shape"] for p in ps]):
        dx, dy, rr = xx - x_c[i:j], yy - y_c[i:j], r[i:j]                 # dx [m, F, 1, S], dy [m, F, S, 1]
        if shape == "square":
            sd[i:j] = torch.maximum(dx.abs(), dy.abs()) - rr
        elif shape == "circle":
            sd[i:j] = torch.sqrt(dx * dx + dy * dy) - rr
        else:
            top = y_c[i:j] - rr
            sd[i:j] = torch.maximum(torch.maximum(top - yy, yy - (y_c[i:j] + rr)),
                                    (dx.abs() - (yy - top) / 2) / math.sqrt(1.25))
    alpha = (0.5 - sd * size).clamp(0, 1).unsqueeze(1)                 # [n, 1, F, S, S]
    img = img * (1 - alpha) + fg * alpha
    return (img * 2 - 1, alpha) if alpha_out else img * 2 - 1


def batch_params(data_seed, start, n, drop=0.0, small=None):
    """The params and captions of clips start..start+n-1 of the training stream (batch()'s)."""
    ps, caps = [], []
    r = random.Random(train_seed(data_seed, start) ^ 0x5EED)
    for i in range(n):
        p = train_params(train_seed(data_seed, start + i), small)
        ps.append(p)
        caps.append("" if r.random() < drop else caption(p))
    return ps, caps


def batch_fast(data_seed, start, n, size=256, frames=33, device="cpu", drop=0.0, alpha_out=False, small=None):
    """batch()'s clips and captions, drawn together on `device` by render_batch: the same pairs
    (video, caption), ordered by texture then shape (the order inside a batch means nothing to
    training; it lets render_batch draw each kind of clip with one set of ops)."""
    ps, caps = batch_params(data_seed, start, n, drop, small)
    order = sorted(range(n), key=lambda i: (TEXTURES.index(ps[i]["texture"]), SHAPES.index(ps[i]["shape"])))
    out = render_batch([ps[i] for i in order], size, frames, device, alpha_out)
    caps = [caps[i] for i in order]
    return (out[0], caps, out[1]) if alpha_out else (out, caps)


def selftest(n=64, size=64, frames=9, data_seed=3):
    """batch_fast against batch on n clips: the same (video, caption) pairs, pixel for pixel; and
    render_batch in any clip order. Returns the failures (an empty list when all agree)."""
    bad = []
    v1, c1 = batch(data_seed, 5, n, size, frames, drop=0.1)
    v2, c2 = batch_fast(data_seed, 5, n, size, frames, drop=0.1)
    ps, caps = batch_params(data_seed, 5, n, drop=0.1)
    if caps != c1:
        bad.append("batch_params' captions are not batch()'s")
    order = sorted(range(n), key=lambda i: (TEXTURES.index(ps[i]["texture"]), SHAPES.index(ps[i]["shape"])))
    if [c1[i] for i in order] != c2:
        bad.append("batch_fast's captions are not batch()'s in (texture, shape) order")
    d = float((v1[order] - v2).abs().max())
    if d > 1e-5:
        bad.append(f"batch_fast's pixels differ from batch()'s by up to {d:.3g}")
    mixed = list(range(n - 1, -1, -1))   # reversed: many runs of one texture or shape
    d = float((render_batch([ps[i] for i in mixed], size, frames) - v1[mixed]).abs().max())
    if d > 1e-5:
        bad.append(f"render_batch in another order differs by up to {d:.3g}")
    _, _, a1 = batch(data_seed, 5, n, size, frames, drop=0.1, alpha_out=True)
    v3, _, a2 = batch_fast(data_seed, 5, n, size, frames, drop=0.1, alpha_out=True)
    d = max(float((a1[order] - a2).abs().max()), float((v3 - v2).abs().max()))
    if d > 1e-5:
        bad.append(f"the shapes' coverage (alpha_out) differs between batch() and batch_fast by up to {d:.3g}")
    if not all(float(a.amax()) > 0.99 and float(a.mean()) < 0.2 for a in a1):
        bad.append("a clip's shape coverage is not a small object (max <= 0.99 or mean >= 0.2)")
    # --small-share: the same clips from both generators, about the share asked, the rest unchanged
    v4, c4 = batch(data_seed, 5, n, size, frames, drop=0.1, small=0.8)
    v5, c5 = batch_fast(data_seed, 5, n, size, frames, drop=0.1, small=0.8)
    ps4, _ = batch_params(data_seed, 5, n, drop=0.1, small=0.8)
    o4 = sorted(range(n), key=lambda i: (TEXTURES.index(ps4[i]["texture"]), SHAPES.index(ps4[i]["shape"])))
    if [c4[i] for i in o4] != c5 or float((v4[o4] - v5).abs().max()) > 1e-5:
        bad.append("with small=0.8 batch_fast's clips are not batch()'s")
    plain = [sample_params(train_seed(data_seed, i)) for i in range(4000)]
    many = [train_params(train_seed(data_seed, i), 0.8) for i in range(4000)]
    share = sum(p["size"] == "small" for p in many) / len(many)
    if not 0.77 < share < 0.83:
        bad.append(f"small=0.8 gives {share:.3f} small clips")
    if any(p["size"] == "small" and not 0.055 <= p["radius"] <= 0.075 for p in many):
        bad.append("small=0.8 turned a clip small without a small radius")
    if any(q != p for p, q in zip(plain, many) if q["size"] == p["size"]):
        bad.append("small=0.8 changed a clip it did not turn small")
    if [train_params(train_seed(data_seed, i)) for i in range(200)] != plain[:200]:
        bad.append("train_params without a share is not sample_params")
    kinds = {(p["texture"], p["shape"], p["motion"]) for p in ps}
    return bad, len(kinds)


def main(argv):
    if argv and argv[0] == "selftest":
        bad, kinds = selftest()
        print("\n".join(bad) if bad else f"batch_fast: 64 clips ({kinds} texture/shape/motion kinds) identical to batch()")
        return 1 if bad else 0
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
