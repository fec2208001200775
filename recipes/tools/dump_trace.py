#!/usr/bin/env python3
"""dump_trace.py: record the attention of a diffusers video transformer as an adaspa trace.

Run it inside your PyTorch pipeline. It hooks the self-attention modules of a
HunyuanVideoTransformer3DModel (double blocks = layers 1..20, single blocks = 21..60) or a
WanTransformer3DModel (blocks[i].attn1 = layer i+1), captures q, k, v exactly as they enter the
attention kernel (after the q/k norm and RoPE; the processor is not re-implemented: the attention
call inside it is intercepted), keeps one sample of the batch, stores bf16 and writes one
safetensors file in the adaspa trace format (lua/adaspa/trace.lua documents it), to study with

    adaspa recipe recipes/replay.lua trace=fox.safetensors

Usage (HunyuanVideo; Wan is the same with WanPipeline):

    import sys, torch
    from diffusers import HunyuanVideoPipeline
    sys.path.insert(0, "/path/to/adaspa/recipes/tools")
    from dump_trace import TraceRecorder

    pipe = HunyuanVideoPipeline.from_pretrained("hunyuanvideo-community/HunyuanVideo",
                                                torch_dtype=torch.bfloat16).to("cuda")
    rec = TraceRecorder(pipe.transformer, "fox.safetensors",
                        steps=[0, 1, 9, 10, 11, 20, 30, 31, 49],   # denoising steps, from 0
                        layers=[1, 2, 10, 20, 21, 40, 60],        # attention layers, from 1
                        num_steps=50, source="fox in snow, 1280x720x129")
    with rec:                                                       # the file is written on exit
        pipe(prompt="a red fox running through fresh snow at dawn", num_inference_steps=50,
             callback_on_step_end=rec.callback_on_step_end)      # optional: checks the step count

Steps are counted from the transformer's forward calls: step = calls // forwards_per_step. A
pipeline that runs the transformer twice per step for classifier-free guidance (Wan's, and
HunyuanVideo's with true_cfg_scale > 1) needs forwards_per_step=2; branch=0 records the first
call of each step (the conditional one in diffusers' pipelines). Passing
callback_on_step_end=rec.callback_on_step_end to the pipeline makes a wrong forwards_per_step an
error instead of a silently mislabelled trace. batch_index picks the sample of a batched call.

Size: one record is 3 * S * H * D * 2 bytes; HunyuanVideo 720p x 129 frames (S = 119,056 with
256 text tokens, H = 24, D = 128) is 2.2 GB per (step, layer), so choose steps and layers.
Tensors go to a temporary file beside the output as they are captured (host memory stays at one
record); the output is assembled when the recorder closes.

Without torch: `python3 dump_trace.py --selftest OUT.safetensors` writes a small synthetic trace
(pure Python) through the same writer; the adaspa specs read it back.
`python3 dump_trace.py --info FILE` prints a trace's metadata and tensors. With torch and
diffusers installed, `--selftest-model DIR` runs tiny randomly initialised HunyuanVideo and Wan
transformers under the recorder and checks that the recorded q, k, v reproduce each layer's
attention output.

The writer is self-contained (no safetensors package needed); when the safetensors package is
installed the self-tests also read the file back with it.
"""

import json
import math
import os
import struct
import sys

FORMAT = "adaspa.trace"
VERSION = "1"
DTYPE_NAMES = {"bf16": "BF16", "f32": "F32"}
DTYPE_SIZES = {"BF16": 2, "F32": 4}


def _name(step, layer, field):
    return "step%d.layer%d.%s" % (step, layer, field)


# ---- bf16 conversion without torch ------------------------------------------------------------

def _bf16_bits(x):
    """Round-to-nearest-even bf16 bits of a Python float (through f32)."""
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    if (u & 0x7F800000) == 0x7F800000 and (u & 0x007FFFFF):
        return 0x7FC0  # NaN
    u += 0x7FFF + ((u >> 16) & 1)
    return (u >> 16) & 0xFFFF


def floats_to_bytes(values, dtype):
    """Little-endian bytes of a flat sequence of floats as bf16 or f32."""
    if dtype == "BF16":
        return struct.pack("<%dH" % len(values), *[_bf16_bits(v) for v in values])
    return struct.pack("<%df" % len(values), *values)


# ---- the writer ---------------------------------------------------------------------------------

class TraceWriter:
    """Streams records of an adaspa trace to disk; close() writes the safetensors file.

    meta: model (str), grid (T, Hh, Ww), text_len, kv_valid; optional num_steps, source.
    add(step, layer, tensors, kv_valid=None, timestep=None, kind=None) with tensors a dict
    q/k/v -> (dtype "BF16"|"F32", shape [S, H, D], bytes).
    """

    def __init__(self, path, model, grid=None, text_len=None, kv_valid=None, num_steps=None, source=None):
        self.path = path
        self.model = model
        self.grid = list(grid) if grid is not None else None
        self.text_len = text_len
        self.kv_valid = kv_valid
        self.num_steps = num_steps
        self.source = source
        self.entries = {}        # name -> (dtype, shape, begin, end)
        self.record_kv = {}      # (step, layer) -> kv_valid
        self.timesteps = {}      # step -> timestep
        self.kinds = {}          # layer -> kind
        self.records = set()
        self.offset = 0
        self.tmp_data = path + ".data.tmp"
        self.data = open(self.tmp_data, "wb")
        self.closed = False

    def _fail(self, msg):
        raise ValueError("dump_trace: %s: %s" % (self.path, msg))

    def add(self, step, layer, tensors, kv_valid=None, timestep=None, kind=None):
        if (step, layer) in self.records:
            self._fail("step %d layer %d recorded twice" % (step, layer))
        if not (isinstance(step, int) and step >= 0 and isinstance(layer, int) and layer >= 1):
            self._fail("step must be an integer >= 0 and layer >= 1, got %r, %r" % (step, layer))
        shape = None
        for f in ("q", "k", "v"):
            if f not in tensors:
                self._fail("step %d layer %d: no %s" % (step, layer, f))
            dt, sh, data = tensors[f]
            if dt not in DTYPE_SIZES:
                self._fail("step %d layer %d: %s has dtype %s (BF16 or F32)" % (step, layer, f, dt))
            if len(sh) != 3:
                self._fail("step %d layer %d: %s has shape %s, not [S, H, D]" % (step, layer, f, list(sh)))
            if shape is None:
                shape = list(sh)
            elif list(sh) != shape:
                self._fail("step %d layer %d: %s has shape %s but q has %s" % (step, layer, f, list(sh), shape))
            n = sh[0] * sh[1] * sh[2] * DTYPE_SIZES[dt]
            if len(data) != n:
                self._fail("step %d layer %d: %s holds %d bytes, its shape needs %d" % (step, layer, f, len(data), n))
        if self.grid is not None and self.text_len is not None:
            want = self.grid[0] * self.grid[1] * self.grid[2] + self.text_len
            if shape[0] != want:
                self._fail("step %d layer %d: S = %d but grid %s + text_len %d = %d" % (
                    step, layer, shape[0], self.grid, self.text_len, want))
        for f in ("q", "k", "v"):
            dt, sh, data = tensors[f]
            self.data.write(data)
            self.entries[_name(step, layer, f)] = (dt, list(sh), self.offset, self.offset + len(data))
            self.offset += len(data)
        self.records.add((step, layer))
        if kv_valid is not None:
            if self.kv_valid is None:
                self.kv_valid = kv_valid
            if kv_valid != self.kv_valid:
                self.record_kv[(step, layer)] = kv_valid
        if timestep is not None:
            self.timesteps.setdefault(step, float(timestep))
        if kind is not None:
            self.kinds[layer] = kind

    def metadata(self):
        steps = sorted({s for s, _ in self.records})
        layers = sorted({l for _, l in self.records})
        missing = [(s, l) for s in steps for l in layers if (s, l) not in self.records]
        if missing:
            self._fail("records do not form a full grid of steps x layers: missing %s" % ", ".join(
                "step %d layer %d" % m for m in missing[:8]))
        for key in ("grid", "text_len", "kv_valid"):
            if getattr(self, key) is None:
                self._fail("no %s known (pass it, or record at least one layer)" % key)
        md = {
            "format": FORMAT, "version": VERSION, "model": str(self.model),
            "grid": ",".join(str(int(x)) for x in self.grid), "text_len": str(int(self.text_len)),
            "kv_valid": str(int(self.kv_valid)),
            "steps": ",".join(str(s) for s in steps), "layers": ",".join(str(l) for l in layers),
        }
        if self.num_steps is not None:
            md["num_steps"] = str(int(self.num_steps))
        if self.timesteps and all(s in self.timesteps for s in steps):
            md["timesteps"] = ",".join("%.9g" % self.timesteps[s] for s in steps)
        if self.kinds and all(l in self.kinds for l in layers):
            md["layer_kinds"] = ",".join(self.kinds[l] for l in layers)
        for (s, l), kv in self.record_kv.items():
            md["step%d.layer%d.kv_valid" % (s, l)] = str(int(kv))
        if self.source is not None:
            md["source"] = str(self.source)
        return md

    def close(self):
        """Writes PATH (through PATH.tmp, renamed when complete) and removes the data file."""
        if self.closed:
            return self.path
        self.closed = True
        self.data.close()
        try:
            if not self.records:
                self._fail("nothing was recorded (check steps, layers and forwards_per_step)")
            header = {"__metadata__": self.metadata()}
            for name in sorted(self.entries):
                dt, sh, b, e = self.entries[name]
                header[name] = {"dtype": dt, "shape": sh, "data_offsets": [b, e]}
            text = json.dumps(header, separators=(",", ":")).encode("utf-8")
            text += b" " * ((8 - len(text) % 8) % 8)
            tmp = self.path + ".tmp"
            with open(tmp, "wb") as out, open(self.tmp_data, "rb") as data:
                out.write(struct.pack("<Q", len(text)))
                out.write(text)
                while True:
                    chunk = data.read(1 << 24)
                    if not chunk:
                        break
                    out.write(chunk)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(self.tmp_data):
                os.remove(self.tmp_data)
        return self.path

    def abort(self):
        self.closed = True
        self.data.close()
        if os.path.exists(self.tmp_data):
            os.remove(self.tmp_data)


def read_header(path):
    """(metadata, {name: {dtype, shape, data_offsets}}, data_start) of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("%s: too short for a safetensors file" % path)
        n = struct.unpack("<Q", raw)[0]
        size = os.path.getsize(path)
        if n > size - 8:
            raise ValueError("%s: header length %d exceeds the file" % (path, n))
        header = json.loads(f.read(n).decode("utf-8"))
    meta = header.pop("__metadata__", {})
    return meta, header, 8 + n


# ---- capture inside a diffusers model ---------------------------------------------------------

def _attention_layers(transformer):
    """[(layer number from 1, kind, attention module)] of a supported diffusers transformer."""
    layers = []
    if hasattr(transformer, "single_transformer_blocks") and hasattr(transformer, "transformer_blocks"):
        for block in transformer.transformer_blocks:
            layers.append((len(layers) + 1, "double", block.attn))
        for block in transformer.single_transformer_blocks:
            layers.append((len(layers) + 1, "single", block.attn))
        return "hunyuan-video", layers
    blocks = getattr(transformer, "blocks", None)
    if blocks is not None and len(blocks) > 0 and hasattr(blocks[0], "attn1"):
        for block in blocks:
            layers.append((len(layers) + 1, "self", block.attn1))
        return "wan", layers
    raise TypeError("dump_trace: %s is not a supported transformer (HunyuanVideoTransformer3DModel or "
                    "WanTransformer3DModel from diffusers: transformer_blocks + single_transformer_blocks, "
                    "or blocks[i].attn1)" % type(transformer).__name__)


def _patch_sizes(config):
    p = config.get("patch_size", 1) if hasattr(config, "get") else getattr(config, "patch_size", 1)
    if isinstance(p, (list, tuple)):
        if len(p) != 3:
            raise ValueError("dump_trace: patch_size %r is not (t, h, w)" % (p,))
        return tuple(int(x) for x in p)
    pt = config.get("patch_size_t", 1) if hasattr(config, "get") else getattr(config, "patch_size_t", 1)
    return (int(pt or 1), int(p), int(p))


def kv_valid_of(mask, b, n_keys, order=None):
    """Valid keys of sample b from an attention mask (None, bool or additive float; [B, N],
    [B, 1, 1, N], [B, 1, N, N], ...), which must keep a prefix of the keys (after `order`, a list
    of key indices giving the trace's token order)."""
    import torch
    if mask is None:
        return n_keys
    m = mask[b if mask.shape[0] > 1 else 0] if mask.dim() >= 2 else mask
    row = m.reshape(-1, m.shape[-1])[0]
    if row.shape[0] != n_keys:
        raise ValueError("dump_trace: attention mask has %d keys, the sequence %d" % (row.shape[0], n_keys))
    if row.dtype == torch.bool:
        valid = row
    else:
        valid = row > torch.finfo(row.dtype).min / 2
    if order is not None:
        valid = valid[order]
    n = int(valid.sum().item())
    if not bool(valid[:n].all().item()):
        raise ValueError("dump_trace: the attention mask keeps keys that are not a prefix of the sequence; "
                         "a trace needs valid keys first (kv_valid)")
    return n


class TraceRecorder:
    """Hooks a diffusers HunyuanVideo or Wan transformer and records q, k, v into an adaspa trace.

    transformer: the pipeline's transformer; path: the output file.
    steps: denoising steps to record (from 0; None: all); layers: attention layers (from 1; None: all).
    num_steps: the pipeline's step count (stored; lets the replay check schedules).
    forwards_per_step: transformer calls per denoising step (2 with classifier-free guidance done
      as two calls); branch: which of them to record (0: the first).
    batch_index: the sample of a batched call to record.
    dtype: "bf16" (the format's default) or "f32".
    text_first: set for a model that puts text tokens before the latent ones (reordered).
    """

    def __init__(self, transformer, path, steps=None, layers=None, num_steps=None, model=None,
                 forwards_per_step=1, branch=0, batch_index=0, dtype="bf16", source=None, text_first=False,
                 quiet=False):
        import torch
        self.torch = torch
        family, self.layers = _attention_layers(transformer)
        self.transformer = transformer
        self.model = model or family
        known = {l for l, _, _ in self.layers}
        if layers is not None:
            bad = [l for l in layers if l not in known]
            if bad:
                raise ValueError("dump_trace: layers %s do not exist (the model has layers 1..%d)" % (bad, len(known)))
        if dtype not in DTYPE_NAMES:
            raise ValueError("dump_trace: dtype must be bf16 or f32, got %r" % (dtype,))
        if forwards_per_step < 1 or not (0 <= branch < forwards_per_step):
            raise ValueError("dump_trace: need forwards_per_step >= 1 and 0 <= branch < forwards_per_step")
        if num_steps is not None and steps is not None and max(steps) >= num_steps:
            raise ValueError("dump_trace: step %d is beyond num_steps = %d (steps count from 0)" % (max(steps), num_steps))
        self.want_steps = None if steps is None else set(int(s) for s in steps)
        self.want_layers = None if layers is None else set(int(l) for l in layers)
        self.forwards_per_step = forwards_per_step
        self.branch = branch
        self.batch_index = batch_index
        self.dtype = DTYPE_NAMES[dtype]
        self.text_first = text_first
        self.quiet = quiet
        self.patch = _patch_sizes(transformer.config)
        self.writer = TraceWriter(path, self.model, num_steps=num_steps, source=source)
        self.forwards = 0          # transformer calls seen
        self.step = None           # the current call's step and branch
        self.call_branch = None
        self.grid = None
        self.timestep = None
        self.active = None         # (layer, kind) while a recorded attention module runs
        self.captured = 0          # attention calls captured inside the active module
        self.in_capture = False
        self.handles = []
        self.patched = []
        self.bytes = 0
        self._install()

    # -- hooks --
    def _install(self):
        torch = self.torch
        self.handles.append(self.transformer.register_forward_pre_hook(self._pre_forward, with_kwargs=True))
        self.handles.append(self.transformer.register_forward_hook(self._post_forward))
        modules = set()
        for layer, kind, attn in self.layers:
            self.handles.append(attn.register_forward_pre_hook(self._enter(layer, kind)))
            self.handles.append(attn.register_forward_hook(self._leave(layer)))
            proc = getattr(attn, "processor", None)
            if proc is not None:
                modules.add(type(proc).__module__)
            modules.add(type(attn).__module__)
        F = torch.nn.functional
        self._patch(F, "scaled_dot_product_attention", "bhsd")
        for name in sorted(modules):
            mod = sys.modules.get(name)
            if mod is not None and hasattr(mod, "dispatch_attention_fn"):
                self._patch(mod, "dispatch_attention_fn", "bshd")

    def _patch(self, owner, attr, layout):
        orig = getattr(owner, attr)
        rec = self

        def patched(*args, **kwargs):
            if rec.active is None or rec.in_capture:
                return orig(*args, **kwargs)
            rec.in_capture = True
            try:
                rec._capture(args, kwargs, layout)
                return orig(*args, **kwargs)
            finally:
                rec.in_capture = False
        patched.__wrapped__ = orig
        setattr(owner, attr, patched)
        self.patched.append((owner, attr, orig))

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []
        for owner, attr, orig in reversed(self.patched):
            setattr(owner, attr, orig)
        self.patched = []

    def _pre_forward(self, module, args, kwargs):
        x = args[0] if args else kwargs.get("hidden_states")
        if x is None or x.dim() != 5:
            raise ValueError("dump_trace: the transformer's hidden_states must be [B, C, F, H, W]")
        pt, ph, pw = self.patch
        self.grid = (x.shape[2] // pt, x.shape[3] // ph, x.shape[4] // pw)
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        self.timestep = None if t is None else float(self.torch.as_tensor(t).flatten()[0].item())
        self.step = self.forwards // self.forwards_per_step
        self.call_branch = self.forwards % self.forwards_per_step
        self.forwards += 1
        return None

    def _post_forward(self, module, args, output):
        self.step = None
        return None

    def _recording(self, layer):
        return (self.step is not None and self.call_branch == self.branch
                and (self.want_steps is None or self.step in self.want_steps)
                and (self.want_layers is None or layer in self.want_layers))

    def _enter(self, layer, kind):
        def hook(module, args):
            if self._recording(layer):
                self.active = (layer, kind)
                self.captured = 0
            return None
        return hook

    def _leave(self, layer):
        def hook(module, args, output):
            if self.active is not None and self.active[0] == layer:
                if self.captured == 0:
                    raise RuntimeError("dump_trace: layer %d ran without an intercepted attention call "
                                       "(an attention backend this script does not know?)" % layer)
                self.active = None
            return None
        return hook

    def callback_on_step_end(self, pipe, i, t, callback_kwargs):
        """For the pipeline's callback_on_step_end: checks that the forward count matches step i."""
        want = (i + 1) * self.forwards_per_step
        if self.forwards != want:
            raise RuntimeError("dump_trace: after step %d the transformer ran %d times, expected %d with "
                               "forwards_per_step=%d: set forwards_per_step to the transformer calls per step "
                               "(2 with classifier-free guidance run as two calls)" % (
                                   i, self.forwards, want, self.forwards_per_step))
        return callback_kwargs

    # -- capture --
    def _capture(self, args, kwargs, layout):
        torch = self.torch
        layer, kind = self.active
        self.captured += 1
        if self.captured > 1:
            raise RuntimeError("dump_trace: layer %d made more than one attention call; only self-attention "
                               "modules with one call are supported" % layer)
        names = ("query", "key", "value")
        qkv = [args[i] if len(args) > i else kwargs.get(names[i]) for i in range(3)]
        mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
        if kwargs.get("parallel_config") is not None or kwargs.get("_parallel_config") is not None:
            raise RuntimeError("dump_trace: context-parallel attention is not supported (run on one device)")
        if kwargs.get("is_causal"):
            raise RuntimeError("dump_trace: causal attention is not supported")
        scale = kwargs.get("scale")
        b = self.batch_index
        out = []
        for x in qkv:
            if x.dim() != 4:
                raise RuntimeError("dump_trace: layer %d: attention input of shape %s, expected 4 dims" % (layer, tuple(x.shape)))
            if b >= x.shape[0]:
                raise RuntimeError("dump_trace: batch_index %d but the batch has %d samples" % (b, x.shape[0]))
            y = x[b] if layout == "bshd" else x[b].transpose(0, 1)     # [S, H, D]
            out.append(y)
        q, k, v = out
        S, H, D = q.shape
        if k.shape != q.shape or v.shape != q.shape:
            raise RuntimeError("dump_trace: layer %d: q %s, k %s, v %s differ (self-attention expected)" % (
                layer, tuple(q.shape), tuple(k.shape), tuple(v.shape)))
        if scale is not None and abs(scale * math.sqrt(D) - 1) > 1e-6:
            q = q * (scale * math.sqrt(D))  # the trace's attention uses 1/sqrt(D)
        T, Hh, Ww = self.grid
        n_img = T * Hh * Ww
        if S < n_img:
            raise RuntimeError("dump_trace: layer %d: %d tokens, fewer than the latent grid %s = %d" % (layer, S, self.grid, n_img))
        n_txt = S - n_img
        order = None
        if self.text_first and n_txt > 0:
            order = torch.cat([torch.arange(n_txt, S), torch.arange(0, n_txt)]).to(q.device)
            q, k, v = q[order], k[order], v[order]
        kv = kv_valid_of(mask, b, S, order)
        if kv < n_img:
            raise RuntimeError("dump_trace: layer %d: kv_valid %d masks latent tokens (%d)" % (layer, kv, n_img))
        w = self.writer
        if w.grid is None:
            w.grid, w.text_len = list(self.grid), n_txt
        elif list(self.grid) != w.grid or n_txt != w.text_len:
            raise RuntimeError("dump_trace: step %d layer %d: grid %s + %d text tokens differ from the trace's %s + %d "
                               "(one trace holds one video size and prompt length)" % (
                                   self.step, layer, list(self.grid), n_txt, w.grid, w.text_len))
        tensors = {}
        tdtype = torch.bfloat16 if self.dtype == "BF16" else torch.float32
        for f, x in zip(("q", "k", "v"), (q, k, v)):
            y = x.detach().to(dtype=tdtype).contiguous().cpu()
            # the tensor's own bytes (no second host copy): a byte view of its numpy alias
            raw = memoryview((y.view(torch.int16) if tdtype == torch.bfloat16 else y).numpy()).cast("B")
            tensors[f] = (self.dtype, [S, H, D], raw)
        w.add(self.step, layer, tensors, kv_valid=kv, timestep=self.timestep, kind=kind)
        self.bytes += 3 * len(tensors["q"][2])
        if not self.quiet:
            print("dump_trace: step %d layer %d (%s): [%d, %d, %d] kv_valid %d, %.1f MiB so far" % (
                self.step, layer, kind, S, H, D, kv, self.bytes / 2 ** 20), file=sys.stderr)

    def close(self):
        """Removes the hooks and writes the file; returns its path."""
        self.remove()
        return self.writer.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.remove()
            self.writer.abort()
            return False
        self.close()
        return False


# ---- self-tests ---------------------------------------------------------------------------------

SELFTEST = {"grid": (2, 5, 7), "text_len": 9, "kv_valid": 76, "heads": 2, "head_dim": 16,
            "steps": (0, 3), "layers": (1, 2), "num_steps": 5, "timesteps": {0: 1000.0, 3: 812.5}}


def selftest_value(step, layer, field, s, h, d):
    """The value the self-test stores at [s, h, d] (0-based) of step/layer/field; the adaspa spec
    computes the same formula."""
    fi = {"q": 0, "k": 1, "v": 2}[field]
    return math.sin(0.37 * (s + 1) + 1.3 * (d + 1) * (h + 1) + 0.71 * layer + 0.05 * step + fi) * (1 + 0.1 * fi)


def selftest(path):
    c = SELFTEST
    T, Hh, Ww = c["grid"]
    S = T * Hh * Ww + c["text_len"]
    H, D = c["heads"], c["head_dim"]
    w = TraceWriter(path, "selftest", grid=c["grid"], text_len=c["text_len"], kv_valid=c["kv_valid"],
                    num_steps=c["num_steps"], source="dump_trace.py --selftest")
    try:
        for step in c["steps"]:
            for layer in c["layers"]:
                tensors = {}
                for f in ("q", "k", "v"):
                    vals = [selftest_value(step, layer, f, s, h, d) for s in range(S) for h in range(H) for d in range(D)]
                    tensors[f] = ("BF16", [S, H, D], floats_to_bytes(vals, "BF16"))
                kv = c["kv_valid"] - 1 if (step, layer) == (3, 2) else None   # one record with its own kv_valid
                w.add(step, layer, tensors, kv_valid=kv, timestep=c["timesteps"][step],
                      kind="double" if layer == 1 else "single")
    except BaseException:
        w.abort()
        raise
    w.close()
    check_file(path)
    print("dump_trace: selftest wrote %s (%d records, %d bytes)" % (path, len(c["steps"]) * len(c["layers"]),
                                                                  os.path.getsize(path)))


def check_file(path):
    """Structural checks of a written trace (and a read-back with the safetensors package if present)."""
    meta, entries, start = read_header(path)
    size = os.path.getsize(path)
    for key in ("format", "version", "model", "grid", "text_len", "kv_valid", "steps", "layers"):
        if key not in meta:
            raise AssertionError("%s: metadata lacks %s" % (path, key))
    end = 0
    for name, e in sorted(entries.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, e_ = e["data_offsets"]
        if b != end:
            raise AssertionError("%s: %s starts at %d, expected %d" % (path, name, b, end))
        n = DTYPE_SIZES[e["dtype"]]
        for x in e["shape"]:
            n *= x
        if e_ - b != n:
            raise AssertionError("%s: %s holds %d bytes, its shape needs %d" % (path, name, e_ - b, n))
        end = e_
    if start + end != size:
        raise AssertionError("%s: data ends at %d but the file has %d bytes" % (path, start + end, size))
    try:
        from safetensors import safe_open
    except ImportError:
        return
    fw = "pt"
    try:
        import torch  # noqa: F401
    except ImportError:
        fw = "numpy"
    if fw == "numpy":
        return  # numpy has no bf16: safetensors cannot hand those tensors to numpy
    with safe_open(path, framework=fw) as f:
        if set(f.keys()) != set(entries):
            raise AssertionError("%s: safetensors reads other tensor names" % path)
        if f.metadata() != meta:
            raise AssertionError("%s: safetensors reads other metadata" % path)


def selftest_model(outdir):
    """Tiny HunyuanVideo and Wan transformers under the recorder: the recorded q, k, v must give
    the attention output each layer computed."""
    import torch
    import torch.nn.functional as F
    from diffusers import HunyuanVideoTransformer3DModel, WanTransformer3DModel
    os.makedirs(outdir, exist_ok=True)
    torch.manual_seed(0)
    results = []

    def run(name, model, make_inputs, steps, forwards_per_step, record_steps, layers, expect_text, kv_expect, dtype, tol):
        outputs = {}
        path = os.path.join(outdir, name + ".safetensors")
        rec = TraceRecorder(model, path, steps=record_steps, layers=layers, num_steps=steps,
                            forwards_per_step=forwards_per_step, dtype=dtype, quiet=True)
        # capture each recorded layer's attention output too (the outermost intercepted call)
        state = {"busy": False}

        def grab(owner, attr):
            inner = getattr(owner, attr)

            def g(*a, **k):
                if state["busy"]:
                    return inner(*a, **k)
                state["busy"] = True
                try:
                    o = inner(*a, **k)
                finally:
                    state["busy"] = False
                if rec.active is not None:
                    outputs[(rec.step, rec.active[0], attr)] = o.detach()
                return o
            setattr(owner, attr, g)
            rec.patched.append((owner, attr, inner))
        for owner, attr, _ in list(rec.patched):
            grab(owner, attr)
        with rec:
            for step in range(steps):
                for br in range(forwards_per_step):
                    with torch.no_grad():
                        model(**make_inputs(step, br))
        meta, entries, _ = read_header(path)
        assert meta["steps"] == ",".join(str(s) for s in record_steps), meta["steps"]
        assert meta["layers"] == ",".join(str(l) for l in layers), meta["layers"]
        assert int(meta["text_len"]) == expect_text, meta
        assert int(meta["kv_valid"]) == kv_expect, meta
        from safetensors.torch import load_file
        data = load_file(path)
        worst = 0.0
        for s in record_steps:
            for l in layers:
                q, k, v = (data[_name(s, l, f)].float() for f in ("q", "k", "v"))
                kv = int(meta.get("step%d.layer%d.kv_valid" % (s, l), meta["kv_valid"]))
                mine = F.scaled_dot_product_attention(q[None, :, :, :].transpose(1, 2), k[None, :kv].transpose(1, 2),
                                                      v[None, :kv].transpose(1, 2))[0].transpose(0, 1)  # [S, H, D]
                ref = [o for key, o in outputs.items() if key[0] == s and key[1] == l]
                assert len(ref) == 1, (s, l, list(outputs))
                o = ref[0]
                key = [key for key in outputs if key[0] == s and key[1] == l][0]
                o = o[0] if key[2] == "dispatch_attention_fn" else o[0].transpose(0, 1)
                err = ((mine - o.float()).norm() / o.float().norm()).item()
                if os.environ.get("DUMP_TRACE_DEBUG"):
                    rows = ((mine - o.float()).norm(dim=(1, 2)) / o.float().norm(dim=(1, 2))).tolist()
                    print(name, s, l, err, key, [round(r, 3) for r in rows], file=sys.stderr)
                worst = max(worst, err)
        results.append((name + " (" + dtype + ")", worst))
        assert worst < tol, (name, dtype, worst)
        check_file(path)

    hy = HunyuanVideoTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16,
                                        num_layers=2, num_single_layers=2, num_refiner_layers=1, mlp_ratio=2.0,
                                        patch_size=2, patch_size_t=1, text_embed_dim=24, pooled_projection_dim=8,
                                        rope_axes_dim=(4, 6, 6)).eval()

    def hy_inputs(step, br):
        g = torch.Generator().manual_seed(step)
        mask = torch.zeros(1, 7, dtype=torch.int64)
        mask[:, :5] = 1
        return dict(hidden_states=torch.randn(1, 4, 3, 8, 10, generator=g), timestep=torch.tensor([1000.0 - 100 * step]),
                    encoder_hidden_states=torch.randn(1, 7, 24, generator=g), encoder_attention_mask=mask,
                    pooled_projections=torch.randn(1, 8, generator=g), guidance=torch.tensor([6000.0]))
    run("hunyuan", hy, hy_inputs, 4, 1, [1, 3], [1, 2, 4], 7, 3 * 4 * 5 + 5, "f32", 1e-5)
    run("hunyuan_bf16", hy, hy_inputs, 4, 1, [0, 2], [3], 7, 3 * 4 * 5 + 5, "bf16", 2e-2)

    wan = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
                                out_channels=4, text_dim=24, freq_dim=16, ffn_dim=32, num_layers=3,
                                rope_max_seq_len=32).eval()

    def wan_inputs(step, br):
        g = torch.Generator().manual_seed(10 * step + br)
        return dict(hidden_states=torch.randn(1, 4, 3, 6, 8, generator=g), timestep=torch.tensor([1000 - 100 * step]),
                    encoder_hidden_states=torch.randn(1, 11, 24, generator=g))
    run("wan", wan, wan_inputs, 3, 2, [0, 2], [1, 3], 0, 3 * 3 * 4, "f32", 1e-5)
    for name, worst in results:
        print("dump_trace: selftest-model %s: recorded q, k, v reproduce the attention outputs (max rel. error %.2e)" % (name, worst))


def info(path):
    meta, entries, _ = read_header(path)
    print("file      %s (%d bytes)" % (path, os.path.getsize(path)))
    for k in sorted(meta):
        v = meta[k]
        print("meta      %-12s %s" % (k, v if len(v) < 200 else v[:200] + "..."))
    shapes = {}
    for name, e in entries.items():
        shapes.setdefault((e["dtype"], tuple(e["shape"])), []).append(name)
    for (dt, sh), names in sorted(shapes.items()):
        print("tensors   %d x %s %s" % (len(names), dt, list(sh)))


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description="Record adaspa attention traces (see the module docstring for use in a pipeline).")
    ap.add_argument("--selftest", metavar="OUT", help="write a small synthetic trace (no torch needed)")
    ap.add_argument("--selftest-model", metavar="DIR", help="tiny diffusers HunyuanVideo and Wan under the recorder (needs torch, diffusers)")
    ap.add_argument("--info", metavar="FILE", help="print a trace's metadata and tensors")
    a = ap.parse_args(argv)
    if not (a.selftest or a.selftest_model or a.info):
        ap.print_help()
        return 2
    if a.selftest:
        selftest(a.selftest)
    if a.selftest_model:
        selftest_model(a.selftest_model)
    if a.info:
        info(a.info)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
