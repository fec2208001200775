#!/usr/bin/env python3
"""tiny_models.py DIR: tiny, randomly initialised stand-ins of the real HunyuanVideo and Wan2.1
text encoders, tokenizers and VAEs (the real diffusers and transformers classes, small
configurations), saved with save_pretrained in the diffusers folder layout the tools read:

    DIR/hunyuan/{tokenizer, text_encoder (LlamaModel), tokenizer_2, text_encoder_2 (CLIPTextModel),
                 vae (AutoencoderKLHunyuanVideo)}
    DIR/wan/{tokenizer, text_encoder (UMT5EncoderModel), vae (AutoencoderKLWan),
             image_encoder (CLIPVisionModel: 5 tokens of 32), image_processor (CLIPImageProcessor, 28 px)}

Used by test_tools.sh to run encode_text.py and decode_latents.py end to end without real
weights. The tokenizers are word-level (the `tokenizers` library) with the special tokens the
real ones use; nothing is downloaded. Sizes: text_dim, pooled_dim as printed.
"""

import os
import sys

import torch

WORDS = (
    "a red fox running through fresh snow at dawn the of and in on with video describe by detailing "
    "following aspects main content theme color shape size texture quantity text spatial relationships "
    "objects actions events behaviors temporal physical movement changes background environment light "
    "style atmosphere camera angles movements transitions used system user 1 2 3 4 5 . , : blurry "
    "low quality static cat dog sits walks \u00b6 cam era"
).split()

HY_TEXT_DIM, HY_POOLED_DIM, WAN_TEXT_DIM = 64, 32, 48
WAN_IMAGE_DIM = 32      # CLIP vision width; 28 px images in 14 px patches: 4 + 1 tokens


def word_tokenizer(specials, bos=None, eos=None, pad="<pad>", unk="<unk>", padding_side="right", llama=False):
    """A PreTrainedTokenizerFast over a word-level vocabulary (specials first). llama: a blank line
    is a token and "camera" two, so HunyuanVideo's template has 95 tokens before the prompt, as
    with llava-llama-3's tokenizer (the pipeline crops 95)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {}
    for t in [pad, unk] + [s for s in specials if s not in (pad, unk)] + WORDS:
        vocab.setdefault(t, len(vocab))
    tk = Tokenizer(WordLevel(vocab, unk_token=unk))
    norm = [normalizers.Lowercase()]
    if llama:
        norm += [normalizers.Replace("\n\n", " \u00b6 "), normalizers.Replace("camera", "cam era")]
    tk.normalizer = normalizers.Sequence(norm)
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    single = " ".join(([bos] if bos else []) + ["$A"] + ([eos] if eos else []))
    tk.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(t, vocab[t]) for t in (bos, eos) if t])
    kw = dict(tokenizer_object=tk, pad_token=pad, unk_token=unk, padding_side=padding_side,
              additional_special_tokens=[s for s in specials if s not in (pad, unk, bos, eos)])
    if bos:
        kw["bos_token"] = bos
    if eos:
        kw["eos_token"] = eos
    tok = PreTrainedTokenizerFast(**kw)
    return tok, vocab


def hunyuan(root):
    from diffusers import AutoencoderKLHunyuanVideo
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    torch.manual_seed(1)
    tok, vocab = word_tokenizer(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
                                bos="<|begin_of_text|>", llama=True)
    tok.save_pretrained(os.path.join(root, "tokenizer"))
    llama = LlamaModel(LlamaConfig(vocab_size=len(vocab), hidden_size=HY_TEXT_DIM, intermediate_size=96,
                                   num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=512, pad_token_id=vocab["<pad>"]))
    llama.save_pretrained(os.path.join(root, "text_encoder"))
    tok2, vocab2 = word_tokenizer(["<|startoftext|>", "<|endoftext|>"], bos="<|startoftext|>", eos="<|endoftext|>",
                                  pad="<|endoftext|>")
    tok2.save_pretrained(os.path.join(root, "tokenizer_2"))
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab2), hidden_size=HY_POOLED_DIM, intermediate_size=48,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                                        projection_dim=HY_POOLED_DIM, bos_token_id=vocab2["<|startoftext|>"],
                                        eos_token_id=vocab2["<|endoftext|>"], pad_token_id=vocab2["<|endoftext|>"]))
    clip.save_pretrained(os.path.join(root, "text_encoder_2"))
    vae = AutoencoderKLHunyuanVideo(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4,
                                    latent_channels=16)
    vae.save_pretrained(os.path.join(root, "vae"))


def wan(root):
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(2)
    tok, vocab = word_tokenizer(["</s>"], eos="</s>")
    tok.save_pretrained(os.path.join(root, "tokenizer"))
    t5 = UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), d_model=WAN_TEXT_DIM, d_kv=12, d_ff=64, num_layers=2,
                                     num_heads=4, relative_attention_num_buckets=8, pad_token_id=vocab["<pad>"],
                                     eos_token_id=vocab["</s>"]))
    t5.save_pretrained(os.path.join(root, "text_encoder"))
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, num_res_blocks=1)
    vae.save_pretrained(os.path.join(root, "vae"))
    # the image-to-video pipeline's CLIP vision encoder (after the VAE: the parts above keep their
    # random values)
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=WAN_IMAGE_DIM, intermediate_size=48, num_hidden_layers=3,
                                            num_attention_heads=4, image_size=28, patch_size=14,
                                            projection_dim=WAN_IMAGE_DIM))
    clip.save_pretrained(os.path.join(root, "image_encoder"))
    CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(
        os.path.join(root, "image_processor"))


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    hunyuan(os.path.join(argv[1], "hunyuan"))
    wan(os.path.join(argv[1], "wan"))
    print(f"tiny_models: wrote {argv[1]}/hunyuan (text_dim {HY_TEXT_DIM}, pooled_dim {HY_POOLED_DIM}) and "
          f"{argv[1]}/wan (text_dim {WAN_TEXT_DIM}, image_dim {WAN_IMAGE_DIM})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
