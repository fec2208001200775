"""Trains the tiny video model and exports it as one safetensors file adaspa reads.

Stage 1: the autoencoder (L1 + MSE reconstruction, a small latent penalty, noise on the latents
so the decoder tolerates the DiT's errors). Then the per-channel latent statistics.
Stage 2: the DiT and the text encoder together, flow matching (x_s = (1 - s) x0 + s e, target
e - x0, timestep 1000 s, s from a shifted logit-normal), captions dropped 10% of the time.
--refit-encoder EXPORT (an export whose state is lost): stage 1 fits a fresh encoder to the export's
frozen decoder and latent statistics, then stage 2 goes on from the export's DiT (as --init-from).

    python train.py --smoke                           # every stage a few steps on the CPU (< 2 min)
    python train.py --device cuda --out tiny.safetensors   # the real run (see the README)
    python train.py --device cuda --refit-encoder EXPORT --ae-seconds 120 ...   # on from an export alone
    python train.py --device cuda --resume --init-from EXPORT --grow-double 2 --grow-single 2 ...   # a deeper DiT,
                                                      # new blocks the identity at first (their modulation zero)
"""
import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import data
import model as M

FULL = {
    "video": {"width": 256, "height": 256, "frames": 33},
    "text": {"dim": 128, "layers": 2, "heads": 2, "max_len": 24},
    "ae": {"enc_dim": 128, "dec_dim": 128, "dec_mix": 2, "dec_mlp": 2},
    "dit": {"hidden": 128, "heads": 2, "head_dim": 64, "mlp_ratio": 4,
            "layers": {"double": 2, "single": 2, "refiner": 1}, "in_channels": 16, "rope_axes": [16, 24, 24],
            "rope_theta": 256, "eps": 1e-6},
}
SMOKE = {
    "video": {"width": 64, "height": 64, "frames": 9},
    "text": {"dim": 32, "layers": 1, "heads": 2, "max_len": 24},
    "ae": {"enc_dim": 32, "dec_dim": 32, "dec_mix": 1, "dec_mlp": 1},
    "dit": {"hidden": 32, "heads": 2, "head_dim": 16, "mlp_ratio": 4,
            "layers": {"double": 1, "single": 1, "refiner": 1}, "in_channels": 16, "rope_axes": [4, 6, 6],
            "rope_theta": 256, "eps": 1e-6},
}


def make_config(base, video):
    cfg = json.loads(json.dumps(base))
    cfg["video"] = video
    d = cfg["dit"]
    d["text_dim"] = cfg["text"]["dim"]
    d["pooled_dim"] = cfg["text"]["dim"]
    d["text_len"] = cfg["text"]["max_len"]
    d["video"] = video
    return cfg


def encode_captions(caps, vocab, max_len, device):
    """Word ids padded to max_len [n, max_len] and lengths [n], built on the CPU and sent in one copy."""
    ids = [data.word_ids(c, vocab)[:max_len] for c in caps]
    rows = torch.tensor([i + [0] * (max_len - len(i)) + [len(i)] for i in ids], dtype=torch.long)
    dev = torch.device(device)
    rows = rows.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else rows.to(dev)
    return rows[:, :max_len], rows[:, max_len]


def object_mask(alpha, latent):
    """The latent pixels a clip's shape covers: alpha [n, 1, F, H, W] (the shape's coverage per
    pixel) -> [n, 1, F', H', W'] (latent = (F', H', W')) in {0, 1}: max over each latent pixel's
    frames and 8x8 pixels (the encoder's: frame 0 alone, then 4 a latent frame), dilated by one
    latent pixel in space so the shape's edge counts as the shape."""
    a = torch.cat([alpha[:, :, :1].expand(-1, -1, 3, -1, -1), alpha], 2)
    f, h, w = latent
    m = F.adaptive_max_pool3d(a, (f, h, w))
    m = F.max_pool3d(m, (1, 3, 3), 1, (0, 1, 1))
    return (m > 0.5).float()


def object_weights(m, weight, balance=False):
    """The flow loss's weights per latent pixel [n, 1, F', H', W'] from the object masks m (object_mask's,
    any dtype): 1 on the background and `weight` on the pixels the clip's shape covers. balance: each
    clip's shape gets the same extra weight in all, the batch's mean, (weight - 1) * mask * mean area /
    the clip's area, so a small shape (about a third of a big one's latent pixels; the caption check's
    misses) no longer carries a third of a big one's extra objective; the batch's total extra weight
    stays the same."""
    m = m.float()
    if balance:
        area = m.sum(dim=(1, 2, 3, 4), keepdim=True)
        m = m * torch.where(area > 0, area.mean() / area.clamp(min=1.0), torch.zeros_like(area))
    return 1 + (weight - 1) * m


def flow_objective(text, dit, ids, valid, xs, sig, target, w, amp):
    """Stage 2's forward: the text encoder and DiT on the noised latents xs [n, C, T, H, W] at noise
    levels sig [n], against target (e - x0). Returns (the plain flow MSE, what is minimized: the
    MSE weighed by w [n, 1, T, H, W] when w is given). One function for train.py's loop and
    bench.py, eager or under torch.compile (--compile)."""
    with torch.autocast(xs.device.type, dtype=torch.bfloat16, enabled=amp):
        states, pooled = text(ids, valid)
        v = dit(xs, 1000 * sig, states, valid, pooled, torch.full_like(sig, 6.0)).float()
    err = (v - target).pow(2)
    loss = err.mean()
    if w is None:
        return loss, loss
    return loss, (err * w).sum() / (w.sum() * err.shape[1])


def latent_sum(x, chunk):
    """x's sum in float64, chunk rows at a time (x.sum(dtype=float64) makes a float64 copy of all of x)"""
    return sum(x[i:i + chunk].sum(dtype=torch.float64).item() for i in range(0, x.shape[0], chunk))


def compact_opt(sd):
    """An optimizer's state dict with its moments (every floating tensor but the step) in bf16: half the
    bytes, so that a grown DiT's state (74 MiB with f32 moments) comes back from a device call; load_opt
    puts them back in the parameters' dtype"""
    def small(name, v):
        return v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() and name != "step" else v
    return {"state": {i: {n: small(n, v) for n, v in st.items()} for i, st in sd["state"].items()},
            "param_groups": sd["param_groups"]}


def load_opt(opt, sd):
    """opt.load_state_dict(sd), the moments cast back to their parameters' dtype (compact_opt's bf16)"""
    opt.load_state_dict(sd)
    for p, st in opt.state.items():
        for n, v in st.items():
            if n != "step" and torch.is_tensor(v) and v.is_floating_point() and v.dtype != p.dtype:
                st[n] = v.to(p.dtype)


class LatentCache:
    """--latent-cache: clips drawn and encoded once and kept on the training device (latents in f16,
    caption ids, object masks); take(n) gives the next n of a shuffled order, a new order each pass,
    with each caption replaced by the blank one with probability `drop` (the generator's drop)."""

    def __init__(self, x0, ids, valid, masks, blank, drop):
        self.x0, self.ids, self.valid, self.masks = x0, ids, valid, masks
        self.blank_ids, self.blank_valid = blank
        self.drop, self.order, self.at = drop, None, 0
        self.n = x0.shape[0]

    def take(self, n):
        """(x0 f32 [n, C, F', H', W'], ids [n, L], valid [n], masks [n, 1, F', H', W'] or None)."""
        dev = self.x0.device
        parts = []
        while n > 0:
            if self.order is None or self.at >= self.n:
                self.order, self.at = torch.randperm(self.n, device=dev), 0
            k = min(n, self.n - self.at)
            parts.append(self.order[self.at:self.at + k])
            self.at, n = self.at + k, n - k
        i = torch.cat(parts)
        drop = torch.rand(i.shape[0], device=dev) < self.drop
        ids = torch.where(drop[:, None], self.blank_ids, self.ids[i])
        valid = torch.where(drop, self.blank_valid, self.valid[i])
        return self.x0[i].float(), ids, valid, None if self.masks is None else self.masks[i]


class Step:
    """One step's forward and backward: flow_objective, then the objective's backward (the gradients
    land in params), compiled (torch.compile, inductor) when asked. The first call runs eager (it
    fills the model's RoPE tables, which the compiled code would otherwise be specialized on the
    absence of, and recompiled); the second compiles, its forward and then its backward. A compile
    that fails in either is logged, the gradients are cleared and the step and the run go on eager
    (the same losses: bench.py --compile both, spec/tiny_run_spec.lua)."""

    def __init__(self, compiled, params, say=print):
        self.say, self.params, self.fn, self.compiled, self.calls = say, params, flow_objective, compiled, 0

    def __call__(self, *args):
        """(the plain flow MSE, the objective), its backward done."""
        self.calls += 1
        if self.compiled and self.calls == 2:
            t = time.time()
            try:
                self.fn = torch.compile(flow_objective)
                loss, objective = self.fn(*args)
                objective.backward()
            except Exception as e:   # noqa: BLE001 - a one-shot device run keeps going
                self.say(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''});"
                         " eager from here")
                self.fn, self.compiled = flow_objective, False
                for p in self.params:
                    p.grad = None
            else:
                self.say(f"torch.compile: compiling the step (forward and backward) took {time.time() - t:.1f} s")
                return loss, objective
        loss, objective = self.fn(*args)
        objective.backward()
        return loss, objective


def flat_metadata(cfg, prefix="tiny."):
    """The config as flat string entries adaspa reads without a JSON parser: "tiny.dit.hidden" =
    "128", lists joined by commas ("tiny.dit.rope_axes" = "16,24,24"), the vocabulary by spaces."""
    out = {}
    for k, v in cfg.items():
        if k == "vocab":
            out[prefix + k] = " ".join(v)
        elif isinstance(v, dict):
            out.update(flat_metadata(v, prefix + k + "."))
        elif isinstance(v, list):
            out[prefix + k] = ",".join(str(x) for x in v)
        else:
            out[prefix + k] = repr(v) if isinstance(v, float) else str(v)
    return out


def export_meta(path):
    """A train.py export's metadata and configuration (ValueError when the file is not one)."""
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "adaspa-tiny-1":
        raise ValueError(f"format {meta.get('format')!r}")
    cfg = json.loads(meta["config"])
    dict(cfg["dit"]["layers"])   # every export names its DiT's block counts
    return meta, cfg


def read_export(path):
    """A train.py export's (metadata, tensors)."""
    return export_meta(path)[0], load_file(path)


def log(f, msg):
    print(msg, flush=True)
    f.write(msg + "\n")
    f.flush()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, a few steps each, CPU")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="stage 2 steps (default 20000; smoke 3)")
    ap.add_argument("--ae-steps", type=int, default=None, help="stage 1 steps (default 6000; smoke 3)")
    ap.add_argument("--batch", type=int, default=None, help="clips per step (default 16; smoke 2)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0, help="data and init seed")
    ap.add_argument("--dtype", choices=["f16", "f32"], default="f16", help="export dtype")
    ap.add_argument("--out", default=None, help="safetensors path (default tiny.safetensors; smoke tiny_smoke.safetensors)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log-every", type=int, default=None)
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds; past it, save the training state (OUT.state.pt) and exit 3: rerun with --resume")
    ap.add_argument("--resume", action="store_true", help="continue from OUT.state.pt")
    ap.add_argument("--ae-seconds", type=float, default=None,
                    help="stage 1 time budget (summed over resumes): the stage ends at --ae-steps or at this time,"
                         " whichever comes first, and its learning-rate schedule follows the larger fraction")
    ap.add_argument("--dit-seconds", type=float, default=None, help="stage 2 time budget, as --ae-seconds")
    ap.add_argument("--zero-init", choices=["auto", "on", "off"], default="auto",
                    help="DiT gates and output layer start at zero (auto: on, off for --smoke); off gives an untrained"
                         " export whose attention changes the output (timing and pipeline tests)")
    ap.add_argument("--amp", choices=["auto", "on", "off"], default="auto",
                    help="bf16 autocast for the forward passes (auto: on for cuda)")
    ap.add_argument("--data", choices=["auto", "batch", "clip"], default="auto",
                    help="clip generation: batch = the whole batch at once on --device (data.batch_fast: ~350 ops"
                         " and one copy a batch, no waits for the device), clip = one clip at a time (data.batch: ~64"
                         " ops and 5 blocking copies a clip); the same clips and captions either way; auto: batch on"
                         " cuda, clip on the CPU (where the batch's large tensors cost more than the ops)")
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                    help="stage 2: torch.compile the text encoder + DiT forward and loss (inductor: fused kernels;"
                         " the first step compiles, about a minute; a failed compile falls back to eager, logged);"
                         " auto: on for cuda (H100, batch 128: 2.1x the eager step), off on the CPU")
    ap.add_argument("--warmup", type=int, default=500, help="stage 2 learning-rate warm-up steps")
    ap.add_argument("--restart-schedule", action="store_true",
                    help="with --resume in stage 2: a new warm-up and cosine over this run's --steps / --dit-seconds"
                         " (the weights and the optimizer's moments kept)")
    ap.add_argument("--lean-state", action="store_true",
                    help="stage 2: the states this run saves leave out the optimizer's moments (two fifths of a state's"
                         " bytes: a 6 + 6 block DiT's state, 57 MB with them, is 33 MB without and fits what a device"
                         " call carries); --resume of such a state"
                         " needs --restart-schedule and starts the moments fresh under the new warm-up")
    ap.add_argument("--object-weight", type=float, default=1.0, metavar="W",
                    help="stage 2: the flow loss weighs the latent pixels the clip's shape covers (dilated by one)"
                         " W times the background's (1: plain MSE); the logged loss stays the plain MSE")
    ap.add_argument("--object-balance", action="store_true",
                    help="stage 2, with --object-weight: every clip's shape carries the same extra weight in all"
                         " (the batch's mean), so small shapes weigh as much as big ones")
    ap.add_argument("--t-mean", type=float, default=0.0, metavar="M",
                    help="stage 2: the mean of the logit-normal the noise level is drawn from before the shift of 3"
                         " (0: the standard one; 0.5 draws s around 0.83 most often, toward high noise)")
    ap.add_argument("--init-from", default=None, metavar="EXPORT",
                    help="with --resume: the text encoder and DiT from EXPORT (a train.py export whose decoder is the"
                         " state's), a fresh optimizer and a new schedule; the state gives the autoencoder")
    ap.add_argument("--refit-encoder", default=None, metavar="EXPORT",
                    help="train on from EXPORT alone (its state lost): stage 1 fits a fresh encoder to EXPORT's"
                         " decoder, frozen with its latent statistics, for --ae-steps / --ae-seconds (the"
                         " reconstruction loss, plus the normalized latents' per-channel mean and variance pulled to"
                         " 0 and 1: the latents the DiT was trained on), then stage 2 as --init-from EXPORT; the"
                         " export keeps EXPORT's decoder. With --resume: continues such a run's state")
    ap.add_argument("--grow-double", type=int, default=0, metavar="N",
                    help="with --init-from (or --refit-encoder): N double blocks appended after the export's, their modulation linears"
                         " zero (each new block is the identity: the grown DiT computes what the export's does),"
                         " the rest of them initialized as usual; the run's config, state and export carry the"
                         " new counts (--resume of its state rebuilds the grown DiT)")
    ap.add_argument("--grow-single", type=int, default=0, metavar="M",
                    help="with --init-from (or --refit-encoder): M single blocks appended after the export's, as --grow-double")
    ap.add_argument("--widen", action="store_true",
                    help="with --init-from (or --refit-encoder): the export's DiT twice as wide (hidden 2h, 2 x heads"
                         " of the same head_dim; model.widen: every activation repeated, the layers reading it split"
                         " in two halves with opposite noise), so it computes what the export's does; about 4 x"
                         " its parameters. With --grow-*: widened first, then the blocks appended")
    ap.add_argument("--ae-only-state", default=None, metavar="DEST",
                    help="with --resume: write the state's autoencoder and records alone to DEST (a stage-2 state"
                         " without its text encoder, DiT, moments and average: 9.4 MB for the committed export's) and exit. What --init-from"
                         " needs beside an export, where the whole state does not fit a device call's carry (a"
                         " --widen export is 32 MB); such a state trains only with --init-from")
    ap.add_argument("--weight-ema", type=float, default=0.0, metavar="D",
                    help="stage 2: export the exponential moving average of the text encoder's and DiT's weights"
                         " (f32, updated after every optimizer step with decay min(D, (1 + n) / (10 + n)) at its n-th"
                         " update; kept in the state across --resume) instead of the last weights; 0 (the default):"
                         " the last weights. For example 0.999")
    ap.add_argument("--latent-cache", type=int, default=0, metavar="N",
                    help="stage 2: draw and encode N clips once and train on them over and over (shuffled each"
                         " pass) instead of drawing and encoding new clips every step; on the device, about 0.3 MB a"
                         " clip at 256x256x33 (100,000 clips: 30 GB). --resume rebuilds the same clips when N is"
                         " the state's (another N, or --new-clips, draws new ones after them). 0 (the default): new"
                         " clips every step")
    ap.add_argument("--small-share", type=float, default=None, metavar="S",
                    help="about S of the training clips (both stages) are small shapes (S in (0.5, 1]; the stream's own"
                         " mix is half): data.train_params turns that share of big clips small, decided by each"
                         " clip's seed. Where every caption-check miss is (small shapes)")
    ap.add_argument("--new-clips", action="store_true",
                    help="with --resume and --latent-cache: a cache of new clips (after those the state drew) even"
                         " when N is the state's")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    smoke = a.smoke
    cfg = make_config(SMOKE if smoke else FULL, (SMOKE if smoke else FULL)["video"])
    steps = a.steps if a.steps is not None else (3 if smoke else 20000)
    ae_steps = a.ae_steps if a.ae_steps is not None else (3 if smoke else 6000)
    bs = a.batch or (2 if smoke else 16)
    every = a.log_every or (1 if smoke else 100)
    out = Path(a.out or ("tiny_smoke.safetensors" if smoke else "tiny.safetensors"))
    dtype = a.dtype
    dev = torch.device(a.device)
    V = cfg["video"]
    if a.init_from and not a.resume:
        ap.error("--init-from needs --resume (the autoencoder comes from the state)")
    for name, n in (("--grow-double", a.grow_double), ("--grow-single", a.grow_single)):
        if n < 0:
            ap.error(f"{name} {n}: must be >= 0")
        if n and not (a.init_from or a.refit_encoder):
            ap.error(f"{name} needs --init-from EXPORT or --refit-encoder EXPORT (the blocks are appended to that"
                     " export's DiT)")
    if not (a.object_weight >= 1.0 and math.isfinite(a.object_weight)):
        ap.error(f"--object-weight {a.object_weight}: must be a number >= 1")
    if a.object_balance and a.object_weight == 1.0:
        ap.error("--object-balance: give --object-weight W > 1 (it balances the shapes' extra weight)")
    if a.latent_cache < 0:
        ap.error(f"--latent-cache {a.latent_cache}: must be >= 0 (0: off)")
    if a.new_clips and a.latent_cache == 0:
        ap.error("--new-clips: needs --latent-cache N (it chooses the cache's clips)")
    if not (0.0 <= a.weight_ema < 1.0):
        ap.error(f"--weight-ema {a.weight_ema}: must be in [0, 1) (0: off)")
    if a.widen and not (a.init_from or a.refit_encoder):
        ap.error("--widen needs --init-from EXPORT or --refit-encoder EXPORT (the DiT it widens)")
    if a.small_share is not None and not (0.5 < a.small_share <= 1.0):
        ap.error(f"--small-share {a.small_share}: must be in (0.5, 1]")
    if not (abs(a.t_mean) <= 4.0):
        ap.error(f"--t-mean {a.t_mean}: must be within [-4, 4]")
    weigh = a.object_weight != 1.0

    def grown(layers):
        """An export's DiT block counts with --grow-double / --grow-single added."""
        return dict(layers, double=layers["double"] + a.grow_double, single=layers["single"] + a.grow_single)

    def width(dcfg, k=1):
        """cfg["dit"]'s hidden width and head count set to dcfg's, times k."""
        cfg["dit"].update(hidden=k * dcfg["hidden"], heads=k * dcfg["heads"])
    batched = a.data == "batch" or (a.data == "auto" and dev.type == "cuda")

    def gen(*args, **kw):
        """The clip generator --data chose; should the batched one fail (it is checked against the
        per-clip one on the CPU only), the run goes on one clip at a time instead of ending."""
        nonlocal batched
        kw["small"] = a.small_share
        if batched:
            try:
                return data.batch_fast(*args, **kw)
            except Exception as e:   # noqa: BLE001 - a one-shot device run keeps going
                batched = False
                log(logf, f"data.batch_fast failed ({type(e).__name__}: {e}); one clip at a time from here")
        return data.batch(*args, **kw)
    vocab = data.vocabulary()

    def checked_export(flag, path):
        """(metadata, configuration) of the export given to flag; a refusal naming flag otherwise."""
        if not Path(path).is_file():
            ap.error(f"{flag} {path}: no such file")
        try:
            return export_meta(path)
        except Exception as e:   # noqa: BLE001 - any unreadable file: one message
            ap.error(f"{flag} {path}: not a train.py export ({type(e).__name__}: {e})")
    refit = None   # --refit-encoder: the export's (metadata, tensors)
    if a.refit_encoder:
        if a.init_from:
            ap.error("--refit-encoder with --init-from: give one (--refit-encoder EXPORT goes on as --init-from EXPORT)")
        rmeta, rcfg = checked_export("--refit-encoder", a.refit_encoder)
        refit = rmeta, load_file(a.refit_encoder)
        rvocab = rcfg.pop("vocab", None)
        cfg["dit"]["layers"] = dict(rcfg["dit"]["layers"])   # the DiT's depth is the export's (a grown one's too)
        width(rcfg["dit"])                                    # and its width (a widened one's too)
        diff = sorted(k for k in set(cfg) | set(rcfg) if cfg.get(k) != rcfg.get(k))
        diff += ["vocab"] if rvocab != vocab else []
        if diff:
            ap.error(f"--refit-encoder {a.refit_encoder}: its configuration is not this run's (it differs in"
                     f" {', '.join(diff)}; this run is {'--smoke' if smoke else 'the full one, without --smoke'})")
        cfg["dit"]["layers"] = grown(rcfg["dit"]["layers"])   # stage 2 appends --grow-* blocks, as --init-from
        width(rcfg["dit"], 2 if a.widen else 1)
    # the DiT's block counts: the run's configuration's, or those of the DiT it starts from (a
    # --refit-encoder export's, set above; a stage-2 state's; an --init-from export's plus --grow-*)
    state_path = out.with_suffix(".state.pt")
    if a.resume and not state_path.is_file():
        ap.error(f"--resume: no training state at {state_path} (the state of the run that wrote --out)")
    st = M.load_state(state_path, "train.py --resume", map_location=dev) if a.resume else None
    if st:   # the autoencoder's sizes are the state's (decoder_fit.py --out-state: a larger decoder)
        cfg["ae"].update(M.ae_sizes(st["ae"]))
    if a.ae_only_state:
        if not (st and st["stage"] == 2):
            ap.error("--ae-only-state: needs --resume of a stage-2 state (the autoencoder trained)")
        torch.save(dict(st, text=None, dit=None, opt=None, wema=None, dit_layers=None), a.ae_only_state)
        print(f"wrote {a.ae_only_state}: the autoencoder of {state_path} (stage 2, step {st['step']}), without the DiT")
        return 0
    if st and st["stage"] == 2 and st["dit"] is None and not a.init_from:
        ap.error(f"--resume: {state_path} holds the autoencoder alone (--ae-only-state): give --init-from EXPORT")
    if st and st["stage"] == 2 and st["dit"] is not None:
        cfg["dit"]["layers"] = dict(st.get("dit_layers") or M.dit_layers(st["dit"]))
        hid = int(st["dit"]["img_in.proj.weight"].shape[0])   # a widened DiT's state: its width
        cfg["dit"].update(hidden=hid, heads=hid // cfg["dit"]["head_dim"])
        if st.get("opt") is None and not a.restart_schedule and not a.init_from:
            ap.error(f"--resume: {state_path} has no optimizer moments (saved with --lean-state): give"
                     " --restart-schedule (fresh moments under a new warm-up)")
    if a.init_from:
        icfg = checked_export("--init-from", a.init_from)[1]["dit"]
        cfg["dit"]["layers"] = grown(icfg["layers"])
        width(icfg, 2 if a.widen else 1)
    amp = a.amp == "on" or (a.amp == "auto" and dev.type == "cuda")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True   # the encoder's convolutions have one shape all run long

    def autocast():
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp)

    def progress(step, total, spent, budget):
        """Fraction of a stage done: by steps or by its time budget, whichever is further."""
        f = step / max(total, 1)
        return max(f, spent / budget) if budget else f
    logf = open(out.with_suffix(".log"), "a" if a.resume else "w")
    cmd = "python train.py " + " ".join(shlex.quote(x) for x in argv)
    log(logf, f"{cmd}\nconfig {json.dumps(cfg)}")
    t0 = time.time()

    # ---- stage 1: autoencoder
    ae = M.AutoEncoder(cfg["dit"]["in_channels"], cfg["ae"]["enc_dim"], cfg["ae"]["dec_dim"], cfg["ae"]["dec_mix"],
                       cfg["ae"]["dec_mlp"]).to(dev)
    if refit:   # the export's decoder, frozen: its latent statistics are folded into lin_in (lat_mean 0, lat_std 1)
        ae.decoder.load_state_dict(M.load_exported(refit[1], json.loads(refit[0]["config"]), len(vocab))[1].state_dict())
        ae.decoder.requires_grad_(False)
    opt = torch.optim.AdamW((ae.encoder if refit else ae).parameters(), lr=a.lr, weight_decay=0.0)
    if a.resume:
        log(logf, f"resuming from {state_path}: stage {st['stage']}, step {st['step']}")
        if refit and not st.get("refit"):
            ap.error(f"--refit-encoder with --resume: {state_path} is not a --refit-encoder run's state")
        if refit and any(not torch.equal(v, st["ae"]["decoder." + k]) for k, v in ae.decoder.state_dict().items()):
            ap.error(f"--refit-encoder {a.refit_encoder}: {state_path} fitted its encoder to another decoder")
        if st.get("refit") and st["stage"] == 1 and not refit:
            ap.error(f"--resume: {state_path} stopped fitting an encoder: resume it with --refit-encoder EXPORT")
    refit_info = st.get("refit") if st else None   # what the encoder's refit did, for the metadata
    if refit and not st:
        prior = json.loads(refit[0].get("final_losses", "{}"))   # the export's own autoencoder
        refit_info = {"from": a.refit_encoder}
        refit_info.update(("export_" + k, prior.get(k)) for k in ("ae_steps", "ae_seconds", "ae_psnr_db"))
        log(logf, f"ae   refit: a fresh encoder against the frozen decoder of {a.refit_encoder}")
    clip = st["clip"] if st else 0
    ae_loss = st["ae_loss"] if st else float("nan")
    start = 0
    if st:
        ae.load_state_dict(st["ae"])
        if st["stage"] == 1:
            load_opt(opt, st["opt"])
            start = st["step"]
        else:
            start = ae_steps

    def out_of_time():
        return a.time_limit is not None and time.time() - t0 > a.time_limit

    def save_state(stage, step, **extra):
        torch.save({"stage": stage, "step": step, "clip": clip, "ae": ae.state_dict(), "ae_loss": ae_loss, **extra},
                   state_path)
        log(logf, f"time limit: saved {state_path} (stage {stage}, step {step}); rerun with --resume")
        return 3

    ae_spent = st.get("ae_spent", 0.0) if st else 0.0   # stage-1 seconds before this run
    ae_done = st["step"] if st and st["stage"] == 1 else (st.get("ae_done", ae_steps) if st else 0)
    s, t_stage = start, time.time()
    while st is None or st["stage"] == 1:
        spent = ae_spent + time.time() - t_stage
        p = progress(s, ae_steps, spent, a.ae_seconds)
        if p >= 1:
            break
        if out_of_time():
            return save_state(1, s, opt=compact_opt(opt.state_dict()), ae_spent=spent, refit=refit_info)
        video, _ = gen(a.seed, clip, bs, V["width"], V["frames"], dev)
        clip += bs
        with autocast():
            z = ae.encode(video) if refit else ae.encoder(video)
            zn = z + 0.05 * z.detach().std() * torch.randn_like(z)
            rec = ae.decoder(zn).float()
        loss = F.l1_loss(rec, video) + F.mse_loss(rec, video)
        if refit:   # the normalized latents' per-channel mean 0 and variance 1, as the DiT's training saw them
            zc = z.float().transpose(0, 1).flatten(1)
            moments = zc.mean(1).pow(2).mean() + (zc.var(1) - 1).pow(2).mean()
            objective = loss + moments
        else:
            loss = objective = loss + 1e-4 * z.float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        objective.backward()
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, (s + 1) / 200) * (0.5 * (1 + math.cos(math.pi * p)))
        opt.step()
        if s % every == 0:
            ae_loss = loss.item()   # a wait for the device: only when logging
            log(logf, f"ae   step {s:6d}/{ae_steps}  loss {ae_loss:.5f}  {time.time() - t0:7.1f} s  ({100 * p:.1f}%)"
                      + (f"  moments {moments.item():.5f}" if refit else ""))
        s += 1
    if st is None or st["stage"] == 1:
        if s > start:
            ae_loss = loss.item()
        ae_done, ae_spent = s, ae_spent + time.time() - t_stage
        log(logf, f"ae   done: {ae_done} steps, {ae_spent:.1f} s, loss {ae_loss:.5f}")
    ae.eval()
    for p in ae.parameters():
        p.requires_grad_(False)
    if st and st["stage"] == 2:
        ae_psnr = st["ae_psnr"]   # the statistics came with the decoder's state
    else:
        with torch.no_grad():   # per-channel latent statistics over a few batches
            zs = [ae.encode(gen(a.seed, clip + i * bs, bs, V["width"], V["frames"], dev)[0])   # the encoder's output:
                  for i in range(2 if smoke else 16)]   # lat_mean 0, lat_std 1 (not set yet, or the export's folded)
            z = torch.cat(zs).transpose(0, 1).flatten(1)
            if refit:   # the export's statistics stay: how near the fitted encoder's latents come to them
                log(logf, f"ae   refit latents per channel: |mean| <= {z.mean(1).abs().max():.3f}, std"
                          f" {z.std(1).min():.3f} to {z.std(1).max():.3f} (the DiT's training: 0 and 1)")
            else:
                ae.decoder.lat_mean.copy_(z.mean(1))
                ae.decoder.lat_std.copy_(z.std(1).clamp(min=1e-3))
            ref = gen(a.seed, clip, bs, V["width"], V["frames"], dev)[0]
            rec = ae.decoder(ae.encode(ref))
            ae_psnr = float(-10 * torch.log10(F.mse_loss(rec.clamp(-1, 1), ref) / 4))
        if refit:
            refit_info.update(fit_steps=ae_done, fit_seconds=round(ae_spent, 1), loss=ae_loss, psnr_db=ae_psnr)
    log(logf, f"ae   reconstruction PSNR {ae_psnr:.2f} dB")

    # ---- stage 2: DiT + text encoder
    tc = cfg["text"]
    text = M.TextEncoder(len(vocab), tc["dim"], tc["layers"], tc["heads"], tc["max_len"], cfg["dit"]["pooled_dim"]).to(dev)
    zero_init = a.zero_init == "on" or (a.zero_init == "auto" and not smoke)
    dit = M.DiT(cfg["dit"], zero_init=zero_init).to(dev)
    params = [p for p in list(text.parameters()) + list(dit.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    fm_loss = float("nan")
    ema = None
    start = 0
    dit_spent = 0.0      # seconds of the current schedule (before this run)
    sched_from = 0       # the step the current schedule started at
    dit_before = 0.0     # seconds of stage 2 under earlier schedules
    dit_clips = 0        # clips stage 2 has trained on, all runs together (batch sizes may differ)
    init = a.init_from or (a.refit_encoder if not (st and st["stage"] == 2) else None)
    if init:   # a refit run's state in stage 2 has the export's DiT trained on already: from the state (below)
        imeta, tensors = refit or read_export(init)
        mine = M.export_tensors(text, ae, dit)
        for k in [k for k in mine if k.startswith("decoder.")]:
            if k not in tensors or not torch.allclose(tensors[k].float(), mine[k].cpu(), rtol=1e-2, atol=1e-3):
                raise SystemExit(f"train: --init-from {init}: its {k} is not the state's decoder (another"
                                 " autoencoder); resume from the state that export was trained from")
        itext, _, idit = M.load_exported(tensors, json.loads(imeta["config"]), len(vocab))
        text.load_state_dict(itext.state_dict())
        wide = M.widen(idit, seed=a.seed) if a.widen else idit   # --widen: twice the width, the same function
        grown = M.load_grown(dit, wide)   # the same DiT, or with --grow-* blocks appended (identities)
        del wide
        if zero_init:   # the guidance embedder stays frozen at zero (it is zero in the export too)
            dit._zero_init_guidance()
        if any(grown) or a.widen:
            gap, scale = M.dit_gap(dit, idit.to(dev), cfg["dit"], dev)
            wid = (f", hidden {idit.cfg['hidden']} -> {cfg['dit']['hidden']} and heads {idit.cfg['heads']} ->"
                   f" {cfg['dit']['heads']} (widened)") if a.widen else ""
            log(logf, f"dit  grown from {init}: double blocks {len(idit.double_blocks)} -> {len(dit.double_blocks)},"
                      f" single blocks {len(idit.single_blocks)} -> {len(dit.single_blocks)} (appended, modulation zero){wid};"
                      f" max |grown - export| {gap:.3g} (output max {scale:.3g}; f32, one random input)")
            if not gap <= 1e-4 * max(1.0, scale):
                raise SystemExit(f"train: the grown DiT does not compute what {init}'s does (max difference {gap:.3g})")
            del idit
        done = json.loads(imeta.get("final_losses", "{}"))
        start = sched_from = int(done.get("steps", 0))
        dit_before = float(done.get("dit_seconds", 0.0))
        fm_loss, ema = done.get("flow", fm_loss), done.get("flow_avg")
        # exports before dit_clips were trained at one batch size; data_next: the first clip it
        # did not draw, so this run draws new clips, not again those the export saw after the state
        dit_clips = int(done.get("dit_clips", start * int(done.get("batch", bs))))
        clip = max(clip, int(done.get("data_next", 0)))
        log(logf, f"dit  from {init}: {start} steps, {dit_before:.1f} s trained; fresh optimizer, new schedule")
    elif st and st["stage"] == 2:
        text.load_state_dict(st["text"])
        dit.load_state_dict(st["dit"])
        if st.get("opt") is not None:
            load_opt(opt, st["opt"])
        else:
            log(logf, "dit  the state has no optimizer moments (--lean-state): fresh ones under the new warm-up")
        start, fm_loss, ema = st["step"], st["fm_loss"], st["ema"]
        sched_from, dit_spent = st.get("sched_from", 0), st.get("dit_spent", 0.0)
        dit_before = st.get("dit_before", 0.0)
        dit_clips = st.get("dit_clips", start * st.get("batch", bs))
        if a.restart_schedule:
            sched_from, dit_before, dit_spent = start, dit_before + dit_spent, 0.0
            log(logf, f"dit  new schedule from step {start}")
    ema_t = None if ema is None else torch.tensor(float(ema), device=dev)
    # --weight-ema: the weights' average (f32, on the device), from the weights stage 2 starts with
    live = [p.detach() for p in params]   # the parameters' storage: the optimizer steps them in place
    wema, wema_n = None, 0
    if a.weight_ema > 0:
        if st and st["stage"] == 2 and st.get("wema") is not None and not init:
            wema, wema_n = [t.to(dev, torch.float32) for t in st["wema"]], int(st.get("wema_n", 0))
            if [t.shape for t in wema] != [p.shape for p in live]:
                raise SystemExit(f"train: {state_path}: its weight average does not match the DiT's parameters")
            log(logf, f"dit  weight average: from the state, {wema_n} updates")
        else:
            wema = [p.float().clone() for p in live]
            log(logf, f"dit  weight average (--weight-ema {a.weight_ema}): from the weights stage 2 starts with")
    # --latent-cache: the clips from cache_from on, drawn and encoded once (a resumed run: the same clips)
    cache, cache_from = None, None
    if a.latent_cache > 0:
        was = st.get("latent_cache") if st and st["stage"] == 2 and not init and not a.new_clips else None
        same = was and was["n"] == a.latent_cache and was.get("small") == a.small_share   # the same clips again
        cache_from = was["from"] if same else clip
        reused = cache_from != clip
        if not reused:
            clip += a.latent_cache   # later draws (and runs) start after the cached clips
        tc0 = time.time()
        x0c, idl, vl, ms = None, [], [], []   # x0c: the latents, filled in place (a list and a cat would hold them twice)
        with torch.no_grad():
            for c in range(cache_from, cache_from + a.latent_cache, bs):
                k = min(bs, cache_from + a.latent_cache - c)
                got = gen(a.seed, c, k, V["width"], V["frames"], dev, drop=0.0, alpha_out=weigh)
                with autocast():
                    x = ae.encode(got[0]).float()
                if x0c is None:
                    x0c = torch.empty((a.latent_cache,) + tuple(x.shape[1:]), dtype=torch.float16, device=dev)
                x0c[c - cache_from:c - cache_from + k] = x
                i, v = encode_captions(got[1], vocab, tc["max_len"], dev)
                idl.append(i)
                vl.append(v)
                if weigh:
                    ms.append(object_mask(got[2], x.shape[2:]).to(torch.uint8))
        cache = LatentCache(x0c, torch.cat(idl), torch.cat(vl), torch.cat(ms) if weigh else None,
                            encode_captions([""], vocab, tc["max_len"], dev), 0.1)
        log(logf, f"dit  latent cache: {a.latent_cache} clips from clip {cache_from}, {x0c.numel() * 2 / 1e9:.2f} GB"
                  f" of latents, {time.time() - tc0:.1f} s (latent sum {latent_sum(x0c, bs):.6g})"
                  + ("; the state's run's clips again (--new-clips: new ones)" if reused else ""))
    step = Step(a.compile == "on" or (a.compile == "auto" and dev.type == "cuda"), params, lambda m: log(logf, "dit  " + m))
    s, t_stage, t_log, s_log = start, time.time(), time.time(), start

    def stage2_state(spent):
        return dict(opt=None if a.lean_state else compact_opt(opt.state_dict()), text=text.state_dict(), dit=dit.state_dict(), ae_psnr=ae_psnr,
                    fm_loss=fm_loss, ema=ema, dit_spent=spent, ae_done=ae_done, ae_spent=ae_spent,
                    sched_from=sched_from, dit_before=dit_before, batch=bs, dit_clips=dit_clips, refit=refit_info,
                    dit_layers=cfg["dit"]["layers"], wema=wema, wema_n=wema_n,
                    latent_cache={"from": cache_from, "n": a.latent_cache, "small": a.small_share} if cache is not None else None)
    while True:
        spent = dit_spent + time.time() - t_stage
        p = progress(s - sched_from, steps, spent, a.dit_seconds)
        if p >= 1:
            break
        if out_of_time():
            if s > start:
                fm_loss, ema = loss.item(), ema_t.item()
            return save_state(2, s, **stage2_state(spent))
        if cache is not None:
            x0, ids, valid, masks = cache.take(bs)
        else:
            got = gen(a.seed, clip, bs, V["width"], V["frames"], dev, drop=0.1, alpha_out=weigh)
            clip += bs
            with torch.no_grad(), autocast():
                x0 = ae.encode(got[0]).float()
            ids, valid = encode_captions(got[1], vocab, tc["max_len"], dev)
            masks = object_mask(got[2], x0.shape[2:]) if weigh else None
        dit_clips += bs
        sig = torch.sigmoid(torch.randn(bs, device=dev) + a.t_mean)
        sig = 3 * sig / (1 + 2 * sig)   # shift 3 toward noise
        e = torch.randn_like(x0)
        xs = (1 - sig.view(-1, 1, 1, 1, 1)) * x0 + sig.view(-1, 1, 1, 1, 1) * e
        w = object_weights(masks, a.object_weight, a.object_balance) if weigh else None
        opt.zero_grad(set_to_none=True)
        # loss: what is logged, the plain flow MSE, comparable across runs; the backward done
        loss, objective = step(text, dit, ids, valid, xs, sig, e - x0, w, amp)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, (s - sched_from + 1) / a.warmup) * (0.5 * (1 + math.cos(math.pi * p)))
        opt.step()
        if wema is not None:
            wema_n += 1
            torch._foreach_lerp_(wema, live, 1.0 - min(a.weight_ema, (1.0 + wema_n) / (10.0 + wema_n)))
        with torch.no_grad():   # the average stays on the device: no wait for it but when logging
            ema_t = loss.detach().float() if ema_t is None else 0.99 * ema_t + 0.01 * loss.detach().float()
        if s % every == 0:
            fm_loss, ema = loss.item(), ema_t.item()
            now = time.time()
            rate = (s - s_log) * bs / max(now - t_log, 1e-9)
            t_log, s_log = now, s
            log(logf, f"dit  step {s:6d}/{sched_from + steps}  loss {fm_loss:.5f} (avg {ema:.5f})  {now - t0:7.1f} s"
                      f"  ({100 * p:.1f}%)" + (f"  {rate:.0f} clips/s" if rate > 0 else ""))
        s += 1
    if s > start:
        fm_loss, ema = loss.item(), ema_t.item()
    dit_done, dit_spent = s, dit_spent + time.time() - t_stage
    log(logf, f"dit  done: {dit_done} steps, {dit_clips} clips, {dit_before + dit_spent:.1f} s, loss {fm_loss:.5f}"
              f" (avg {ema:.5f})")
    torch.save({"stage": 2, "step": s, "clip": clip, "ae": ae.state_dict(), "ae_loss": ae_loss, **stage2_state(dit_spent)},
               state_path)   # to train on from here: --resume --restart-schedule
    log(logf, f"saved {state_path} (stage 2, step {s}, done)")

    # ---- export (the state above keeps the last weights; the export, with --weight-ema, their average)
    if wema is not None:
        with torch.no_grad():
            torch._foreach_copy_(live, wema)
        log(logf, f"dit  exporting the weight average: {wema_n} updates, decay {a.weight_ema}")
    tensors = M.export_tensors(text, ae, dit)
    td = torch.float16 if dtype == "f16" else torch.float32
    tensors = {k: v.to("cpu", td).contiguous() for k, v in tensors.items()}
    cfg["vocab"] = vocab
    was = refit_info or {}   # a refit encoder's autoencoder time adds to the export's
    meta = {
        "format": "adaspa-tiny-1",
        "config": json.dumps(cfg),
        "command": cmd,
        "data_seed": str(a.seed),
        "final_losses": json.dumps({"ae": ae_loss, "ae_psnr_db": ae_psnr, "flow": fm_loss, "flow_avg": ema,
                                    "ae_steps": ae_done + (was.get("export_ae_steps") or 0), "steps": dit_done,
                                    "batch": bs, "dit_clips": dit_clips, "data_next": clip,
                                    "ae_seconds": round(ae_spent + (was.get("export_ae_seconds") or 0.0), 1),
                                    "dit_seconds": round(dit_before + dit_spent, 1), "amp_bf16": amp,
                                    "compiled": step.compiled,
                                    **({"weight_ema": a.weight_ema, "weight_ema_updates": wema_n}
                                       if wema is not None else {}),
                                    **({"encoder_refit": refit_info} if refit_info else {})}),
        "seconds": "%.1f" % (time.time() - t0),
        "note": "smoke run: untrained" if smoke else "trained by recipes/tools/tinyvideo/train.py",
    }
    meta.update(flat_metadata(cfg))
    save_file(tensors, str(out), metadata=meta)
    n = sum(v.numel() for v in tensors.values())
    log(logf, f"wrote {out} ({n} parameters, {out.stat().st_size / 1e6:.2f} MB, {dtype}) in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
