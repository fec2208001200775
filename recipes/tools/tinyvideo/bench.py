"""Where a training step's time goes: clip generation (one clip at a time, data.batch, or the whole
batch at once, data.batch_fast), the autoencoder's encoding, a batch taken from train.py's
--latent-cache instead of those two, and the DiT + text encoder forward,
backward and optimizer step, timed apart at train.py's full sizes, with the number of tensor ops
each one dispatches (on a GPU each is a kernel launch: at these sizes the launches, not the
arithmetic, can bound a step).

    python bench.py [--device cpu] [--batch 16,64] [--repeat 2] [--threads 2] [--model-batch 16]
                    [--compile eager | compiled | both] [--amp auto | on | off]
"""
import argparse
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import data
import model as M
import train


class OpCount(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def timed(fn, dev, repeat, count=True, warm=1):
    """Median seconds of fn() over `repeat` runs (after `warm` warm-up runs), and its op count (None
    when not counted: under a dispatch mode a compiled function's count is not its kernels')."""
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(repeat):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    if not count:
        return sorted(ts)[len(ts) // 2], None
    with OpCount() as c:
        fn()
    return sorted(ts)[len(ts) // 2], c.n


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", default="16,64", help="batch sizes for clip generation")
    ap.add_argument("--model-batch", default="16", help="batch sizes for the model step (empty: none)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", choices=["eager", "compiled", "both"], default="eager",
                    help="the model step as train.py runs it eager, under torch.compile (train.py --compile on), or both")
    ap.add_argument("--amp", choices=["auto", "on", "off"], default="auto", help="bf16 autocast, as train.py (auto: cuda)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cfg = train.make_config(train.FULL, train.FULL["video"])
    V = cfg["video"]
    S, Fr = V["width"], V["frames"]
    print(f"device {dev}, {a.threads} threads, clips {S}x{S}x{Fr}; median of {a.repeat} after a warm-up")
    for bs in [int(x) for x in a.batch.split(",") if x]:
        for name, gen in (("data.batch (per clip)", data.batch), ("data.batch_fast (batch)", data.batch_fast)):
            sec, ops = timed(lambda: gen(0, 1000, bs, S, Fr, dev, drop=0.1), dev, a.repeat)
            print(f"batch {bs:4d}  {name:26s} {1000 * sec:9.1f} ms  {bs / sec:8.1f} clips/s  {ops:6d} ops")
    vocab = data.vocabulary()
    tc = cfg["text"]
    ae = M.AutoEncoder(cfg["dit"]["in_channels"], cfg["ae"]["enc_dim"], cfg["ae"]["dec_dim"], cfg["ae"]["dec_mix"],
                       cfg["ae"]["dec_mlp"]).to(dev).eval()
    text = M.TextEncoder(len(vocab), tc["dim"], tc["layers"], tc["heads"], tc["max_len"], cfg["dit"]["pooled_dim"]).to(dev)
    dit = M.DiT(cfg["dit"], zero_init=False).to(dev)
    params = [p for p in list(text.parameters()) + list(dit.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    for bs in [int(x) for x in a.model_batch.split(",") if x]:
        video, caps = data.batch_fast(0, 0, bs, S, Fr, dev, drop=0.1)

        def encode():
            with torch.no_grad():
                return ae.encode(video)
        sec, ops = timed(encode, dev, a.repeat)
        print(f"batch {bs:4d}  {'ae.encode (no grad)':26s} {1000 * sec:9.1f} ms  {bs / sec:8.1f} clips/s  {ops:6d} ops")
        x0 = encode().float()
        ids, valid = train.encode_captions(caps, vocab, tc["max_len"], dev)
        # train.py --latent-cache: a step's clips taken from latents encoded once (here 4 batches' worth)
        cache = train.LatentCache(x0.repeat(4, 1, 1, 1, 1).half(), ids.repeat(4, 1), valid.repeat(4), None,
                                  train.encode_captions([""], vocab, tc["max_len"], dev), 0.1)
        sec, ops = timed(lambda: cache.take(bs), dev, a.repeat)
        print(f"batch {bs:4d}  {'latent cache take':26s} {1000 * sec:9.1f} ms  {bs / sec:8.1f} clips/s  {ops:6d} ops")
        amp = dev.type == "cuda" if a.amp == "auto" else a.amp == "on"
        kinds = {"eager": [False], "compiled": [True], "both": [False, True]}[a.compile]
        for compiled in kinds:
            fwd = train.Step(compiled, params, lambda m: print(f"batch {bs:4d}  {m}"))

            def step():
                sig = torch.sigmoid(torch.randn(bs, device=dev))
                e = torch.randn_like(x0)
                xs = (1 - sig.view(-1, 1, 1, 1, 1)) * x0 + sig.view(-1, 1, 1, 1, 1) * e
                opt.zero_grad(set_to_none=True)
                fwd(text, dit, ids, valid, xs, sig, e - x0, None, amp)   # forward and backward
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
            # compiled: the first call runs eager, the second compiles (train.Step): both warm-ups
            sec, ops = timed(step, dev, a.repeat, count=not compiled, warm=2 if compiled else 1)
            name = f"text + DiT + AdamW, {'compiled' if fwd.compiled else 'eager'}{', bf16' if amp else ''}"
            print(f"batch {bs:4d}  {name:26s} {1000 * sec:9.1f} ms  {bs / sec:8.1f} clips/s  {'-' if ops is None else ops:>6} ops")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
